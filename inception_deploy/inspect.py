"""`inspect`: what an ONNX artifact holds and costs (stage: inspection).

Inputs/outputs, op counts, parameters and multiply-adds (MACs) per compute layer and per
Inception block (GoogLeNet inception3a..5b, Inception v3 Mixed_5b..7c, found by the
node-name prefixes the exporter keeps), and for Q/DQ graphs which layers run in INT8 (the
classification build-engine uses). Shapes come from ONNX shape inference at batch 1.

MACs are counted here because no installed library counts them per block on an ONNX
graph (onnx-tool / thop are not dependencies): Conv = output elements x Cin/groups x kH x
kW, Gemm/MatMul = output elements x K. Pools, ReLU and Concat are not counted, as in the
GoogLeNet paper's Table 1.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from .errors import UserError

COMPUTE_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
_PASS_THROUGH = ("DequantizeLinear", "QuantizeLinear", "Cast", "Identity", "Transpose", "Reshape")

# GoogLeNet paper (Szegedy et al. 2014), Table 1, "ops" column, in millions of multiply-adds at 224x224.
PAPER_GOOGLENET_OPS = {"inception3a": 128, "inception3b": 304, "inception4a": 73, "inception4b": 88,
                       "inception4c": 100, "inception4d": 119, "inception4e": 170, "inception5a": 54,
                       "inception5b": 71}


@dataclass
class LayerCost:
    name: str
    module: str
    op_type: str
    block: str
    macs: int
    params: int
    precision: str  # INT8 / FP16 / FP32 (what the graph asks TensorRT for)
    weight_shape: list = field(default_factory=list)


@dataclass
class BlockCost:
    name: str
    layers: int
    params: int
    macs: int


@dataclass
class Inspection:
    path: str
    inputs: list[dict]
    outputs: list[dict]
    op_counts: dict[str, int]
    nodes: int
    params: int
    macs: int
    input_shape: list[int]
    precision: str
    layers: list[LayerCost]
    blocks: list[BlockCost]
    architecture: Optional[str]
    manifest: Optional[dict] = None

    @property
    def int8_layers(self) -> list[LayerCost]:
        return [layer for layer in self.layers if layer.precision == "INT8"]

    def paper_comparison(self) -> Optional[list[dict]]:
        """GoogLeNet at 224: per block MACs against the paper's Table 1.

        torchvision's GoogLeNet (and so ours) uses a 3x3 conv where the paper's "5x5"
        branch has a 5x5 (branch3.1), a known torchvision deviation its pretrained weights
        depend on. `paper_layout_macs` recomputes that one conv with a 5x5 kernel
        (x 25/9), so it measures the rest of the layout against the table.
        """
        if self.architecture != "googlenet" or self.input_shape[-2:] != [224, 224]:
            return None
        rows = []
        by_block = {b.name: b for b in self.blocks}
        for block, paper in PAPER_GOOGLENET_OPS.items():
            if block not in by_block:
                return None
            measured = by_block[block].macs
            five = sum(layer.macs for layer in self.layers if layer.block == block and layer.module == f"{block}.branch3.1")
            paper_layout = measured + five * (25 / 9 - 1)
            rows.append({"block": block, "paper_M": paper, "torchvision_M": measured / 1e6,
                         "torchvision_vs_paper_pct": 100 * (measured / 1e6 - paper) / paper,
                         "branch3_3x3_M": five / 1e6, "paper_layout_M": paper_layout / 1e6,
                         "paper_layout_vs_paper_pct": 100 * (paper_layout / 1e6 - paper) / paper})
        return rows

    def to_dict(self) -> dict:
        out = asdict(self)
        out["int8_layers"] = [layer.module for layer in self.int8_layers]
        out["paper_comparison"] = self.paper_comparison()
        return out


def _dims(value_info) -> list:
    shape = value_info.type.tensor_type.shape
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in shape.dim]


def _type_name(elem_type: int) -> str:
    import onnx

    return onnx.TensorProto.DataType.Name(elem_type).lower()


def _fixed_input_shape(model, input_shape: Optional[Sequence[int]], manifest: Optional[dict]) -> list[int]:
    from .onnx_reader import first_graph_input

    graph_input = first_graph_input(model)
    dims = _dims(graph_input)
    if input_shape is not None:
        if len(input_shape) != len(dims):
            raise UserError(f"--input-shape {list(input_shape)} has {len(input_shape)} dims; the model's input "
                            f"'{graph_input.name}' has {len(dims)} ({dims})")
        if min(input_shape, default=1) < 1:
            raise UserError(f"--input-shape {list(input_shape)}: every dimension must be at least 1")
        return [int(d) for d in input_shape]
    fixed = [d if isinstance(d, int) and d > 0 else None for d in dims]
    fixed[0] = 1 if fixed[0] is None else fixed[0]
    if None in fixed and manifest and manifest.get("preprocessing"):
        size = manifest["preprocessing"]["size"]
        fixed = fixed[:2] + [int(size[0]), int(size[1])] if len(fixed) == 4 else fixed
    if None in fixed:
        raise UserError(f"the input '{graph_input.name}' has unknown dims {dims}; give --input-shape 1,3,224,224")
    return fixed


def inspect_model(path: str | Path, input_shape: Optional[Sequence[int]] = None) -> Inspection:
    """Inspect an ONNX graph (file). input_shape fixes the input (default: batch 1, the graph's own size)."""
    import onnx

    from .artifact import load_onnx
    from .engine.graph_precision import classify_graph
    from .onnx_reader import first_graph_input

    path = Path(path)
    if not path.is_file():
        raise UserError(f"model not found: {path}")
    if path.suffix != ".onnx":
        raise UserError(f"{path}: inspect reads ONNX graphs (.onnx); for a TensorRT plan see its manifest {path.name}.json")
    artifact = load_onnx(path, missing="model not found: {path}")  # structure-checked (onnx_reader)
    model, manifest = artifact.model, artifact.manifest
    shape = _fixed_input_shape(model, input_shape, manifest)

    # Shape inference on a copy whose input has fixed dims (the graph's own dims stay untouched).
    sized = onnx.ModelProto.FromString(model.SerializeToString())
    dims = next(i for i in sized.graph.input if i.name == first_graph_input(model).name).type.tensor_type.shape.dim
    for d, value in zip(dims, shape):
        d.Clear()
        d.dim_value = value
    inferred = onnx.shape_inference.infer_shapes(sized, data_prop=True)
    shapes = {vi.name: _dims(vi) for vi in (*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output)}
    initializers = {init.name: init for init in model.graph.initializer}
    for init in model.graph.initializer:
        shapes[init.name] = list(init.dims)

    graph_precision = classify_graph(model)
    spec_blocks = _known_blocks()
    layers = _layer_costs(model, shapes, graph_precision.node_precisions, spec_blocks)
    blocks: dict[str, BlockCost] = {}
    for layer in layers:
        block = blocks.setdefault(layer.block, BlockCost(layer.block, 0, 0, 0))
        block.layers += 1
        block.params += layer.params
        block.macs += layer.macs
    architecture = next((arch for arch, names in spec_blocks.items() if any(b in blocks for b in names)), None)
    order = spec_blocks.get(architecture, ())
    ordered = [blocks.pop(b) for b in order if b in blocks]
    ordered.append(blocks.pop("other")) if "other" in blocks else None
    total_params = sum(int(np.prod(init.dims, dtype=np.int64)) for init in model.graph.initializer
                       if onnx.helper.tensor_dtype_to_np_dtype(init.data_type).kind in "fiu" and len(init.dims) > 0)
    return Inspection(
        path=str(path),
        inputs=[{"name": i.name, "dtype": _type_name(i.type.tensor_type.elem_type), "shape": _dims(i)} for i in model.graph.input
                if i.name not in initializers],
        outputs=[{"name": o.name, "dtype": _type_name(o.type.tensor_type.elem_type), "shape": _dims(o)} for o in model.graph.output],
        op_counts=dict(Counter(node.op_type for node in model.graph.node).most_common()),
        nodes=len(model.graph.node), params=sum(layer.params for layer in layers) or total_params,
        macs=sum(layer.macs for layer in layers), input_shape=shape, precision=graph_precision.kind,
        layers=layers, blocks=ordered, architecture=architecture, manifest=manifest,
    )


def _layer_costs(model, shapes: dict, precisions: dict, spec_blocks: dict) -> list[LayerCost]:
    """MACs, parameters (each initializer counted once) and precision of every compute layer."""
    from .graph_utils import attribute, module_path, source_initializer

    layers: list[LayerCost] = []
    counted: set[str] = set()
    for index, node in enumerate(model.graph.node):
        if node.op_type not in COMPUTE_OPS:
            continue
        out_shape = shapes.get(node.output[0], [])
        weight_shape = shapes.get(node.input[1], []) if len(node.input) > 1 else []
        macs = 0
        if all(isinstance(d, int) for d in out_shape + weight_shape) and out_shape and weight_shape:
            out_elems = int(np.prod(out_shape, dtype=np.int64))
            if node.op_type in ("Conv", "ConvTranspose"):
                macs = out_elems * int(np.prod(weight_shape[1:], dtype=np.int64))
            elif node.op_type == "Gemm":
                macs = out_elems * int(weight_shape[1] if attribute(node, "transB", 0) else weight_shape[0])
            else:  # MatMul: K is the second-last dim of B
                macs = out_elems * int(weight_shape[-2] if len(weight_shape) > 1 else weight_shape[0])
        params = 0
        for tensor in node.input[1:]:
            init = source_initializer(model, tensor, _PASS_THROUGH, max_steps=4) if tensor else None
            if init is not None and init.name not in counted:
                counted.add(init.name)
                params += int(np.prod(init.dims, dtype=np.int64))
        name = node.name or f"{node.op_type}#{index}"
        module = module_path(node.name) if node.name else name
        layers.append(LayerCost(name, module, node.op_type, _block_of(module, spec_blocks), macs, params,
                                precisions.get(name, "FP32"), weight_shape))
    return layers


def _known_blocks() -> dict[str, tuple[str, ...]]:
    from .models.registry import MODELS

    return {"googlenet": MODELS["googlenet"].blocks, "inception_v3": MODELS["inception_v3"].blocks}


def _block_of(module: str, spec_blocks: dict) -> str:
    head = module.split(".")[0]
    return head if any(head in names for names in spec_blocks.values()) else "other"
