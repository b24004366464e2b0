"""A graph made elsewhere, without a recipe: what the graph itself says (stage: entry of any stage).

An ONNX file exported by other code (torchvision's layout, input `images`, no manifest) still
names its input and output, and its input shape gives the layout and the image size. That
is all a stage needs when the data are preprocessed arrays (.npy/.npz float inputs); image
files need the preprocessing too, which only the user can give (`--mean`, `--std`, ...).
`recipe_from_graph` builds the recipe from the graph and those flags, or says in one line
which flags are missing. `fit_recipe_to_graph` checks a recipe the user gave against the graph:
a size that disagrees is refused naming both, and the graph's I/O names are the ones used.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from .errors import UserError

PREPROCESSING_FLAGS = "--mean R,G,B --std R,G,B (and --input-size, --resize, --channel-order as needed)"


@dataclass
class GraphIO:
    input_name: str
    output_name: str
    layout: str  # NCHW | NHWC
    size: Optional[tuple[int, int]]  # (height, width); None when the graph leaves them symbolic
    classes: Optional[int]


def graph_io(model) -> GraphIO:
    from .onnx_reader import first_graph_input

    graph_input = first_graph_input(model)
    dims = [d.dim_value if d.HasField("dim_value") else None for d in graph_input.type.tensor_type.shape.dim]
    layout, size = "NCHW", None
    if len(dims) == 4:
        if dims[1] in (1, 3) or dims[3] not in (1, 3):
            layout, hw = "NCHW", dims[2:4]
        else:
            layout, hw = "NHWC", dims[1:3]
        size = tuple(hw) if all(isinstance(d, int) and d > 0 for d in hw) else None
    output = model.graph.output[0]
    out_dims = [d.dim_value if d.HasField("dim_value") else None for d in output.type.tensor_type.shape.dim]
    classes = out_dims[-1] if out_dims and out_dims[-1] else None
    return GraphIO(graph_input.name, output.name, layout, size, classes)


def _guess_arch(model) -> str:
    names = " ".join(node.name for node in model.graph.node[:400])
    return "inception_v3" if "Mixed_" in names or "Conv2d_1a" in names else "googlenet"


def preprocessed_arrays(source: Optional[str]) -> bool:
    """True when `source` is a .npy/.npz of float arrays: inputs already preprocessed."""
    if source is None or Path(str(source)).suffix not in (".npy", ".npz") or not Path(str(source)).is_file():
        return False
    import numpy as np

    try:
        loaded = np.load(str(source), allow_pickle=False, mmap_mode="r")
    except Exception:  # noqa: BLE001 - unreadable: the dataset reader reports it in its own words
        return False
    if isinstance(loaded, np.lib.npyio.NpzFile):
        key = next((k for k in ("images", "x", "inputs", "data") if k in loaded.files), None)
        return key is not None and loaded[key].dtype.kind == "f"
    return loaded.dtype.kind == "f"


def preprocessing_overrides(input_size: Optional[Sequence[int]] = None, mean=None, std=None, channel_order=None,
                            resize=None, interpolation=None) -> dict:
    """The preprocessing flags as recipe keys (None: not given)."""
    return {"preprocessing.size": list(input_size) if input_size else None,
            "preprocessing.mean": list(mean) if mean else None, "preprocessing.std": list(std) if std else None,
            "preprocessing.channel_order": channel_order, "preprocessing.resize": resize,
            "preprocessing.interpolation": interpolation}


PREPROCESSING_FLAG_NAMES = {"preprocessing.size": "--input-size", "preprocessing.mean": "--mean",
                            "preprocessing.std": "--std", "preprocessing.channel_order": "--channel-order",
                            "preprocessing.resize": "--resize", "preprocessing.interpolation": "--interpolation"}


def recipe_for_graph(recipe, model, manifest: Optional[dict], path: Path, data_sources: Sequence[Optional[str]],
                     preprocessing: Optional[dict] = None):
    """The recipe a stage uses for the graph at `path`: the user's (or the one its manifest
    names) with the preprocessing flags applied and checked against the graph, else one made
    from the graph and the flags."""
    from .recipes import resolve_recipe

    resolved = resolve_recipe(recipe, manifest, path)
    if resolved is None:
        return recipe_from_graph(model, path, data_sources, preprocessing or {})
    return fit_recipe_to_graph(resolved.with_overrides(preprocessing or {}, PREPROCESSING_FLAG_NAMES), model, path)


def recipe_from_graph(model, path: Path, data_sources: Sequence[Optional[str]], overrides: dict):
    """A recipe for a graph that has none: I/O and size from the graph, preprocessing from the
    flags (`overrides`, recipe keys), none needed when every data source is preprocessed arrays."""
    from .recipes import recipe_from_dict

    io = graph_io(model)
    given = {key: value for key, value in overrides.items() if value is not None}
    images = [s for s in data_sources if s is not None and not preprocessed_arrays(s)]
    if images and not {"preprocessing.mean", "preprocessing.std"} <= set(given):
        missing = [flag for key, flag in (("preprocessing.mean", "--mean"), ("preprocessing.std", "--std"))
                   if key not in given]
        raise UserError(f"{path} carries no recipe and {images[0]} holds images, which need preprocessing: give "
                        f"{' and '.join(missing)} (and --input-size, --resize, --channel-order as needed), "
                        "--recipe NAME|FILE, or preprocessed float arrays (.npy/.npz)")
    size = given.get("preprocessing.size") or (list(io.size) if io.size else None)
    if size is None:
        raise UserError(f"{path}: input '{io.input_name}' has no fixed height and width; give --input-size H[,W]")
    raw = {
        "name": path.name.removesuffix(".onnx").removesuffix(".opt"),
        "description": f"made from the graph {path.name} and command-line flags",
        "model": {"arch": _guess_arch(model), "num_classes": io.classes},
        "preprocessing": {"size": size, "layout": io.layout},
        "export": {"input_name": io.input_name, "output_name": io.output_name},
    }
    recipe = recipe_from_dict(raw, source=str(path))
    recipe = recipe.with_overrides({k: v for k, v in given.items() if k != "preprocessing.size"},
                                   PREPROCESSING_FLAG_NAMES)
    return fit_recipe_to_graph(recipe, model, path)


def fit_recipe_to_graph(recipe, model, path: Path):
    """Refuse a recipe whose input size disagrees with the graph's (both named); the graph's
    own input and output names replace the recipe's, which only name what `export` writes."""
    io = graph_io(model)
    if io.size is not None and tuple(recipe.input_hw) != tuple(io.size):
        raise UserError(f"{path}: input '{io.input_name}' is {io.size[0]}x{io.size[1]} but recipe '{recipe.name}' "
                        f"preprocesses to {recipe.input_hw[0]}x{recipe.input_hw[1]}; give the recipe made for this "
                        "graph, or --input-size to match it")
    if recipe.preprocessing.layout != io.layout and io.size is not None:
        raise UserError(f"{path}: input '{io.input_name}' is {io.layout} but recipe '{recipe.name}' says "
                        f"{recipe.preprocessing.layout}; use a recipe with preprocessing.layout: {io.layout}")
    names = {"export.input_name": io.input_name, "export.output_name": io.output_name}
    if (recipe.export.input_name, recipe.export.output_name) == (io.input_name, io.output_name):
        return recipe
    fitted = recipe.with_overrides(names)
    fitted.overrides = {k: v for k, v in fitted.overrides.items() if k not in names}  # not the user's flags
    return fitted
