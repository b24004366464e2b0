"""Artifacts from anywhere: a torchvision-layout Inception ONNX exported by other code (input
`images`, output `scores`, no manifest) quantizes without a recipe, from preprocessed arrays
or from images plus the preprocessing flags; what is missing is one line (exit 2)."""

from __future__ import annotations

import re

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from inception_deploy.cli import main

FAST = ["--calib-count", "32", "--calib-method", "max", "--no-bias-correction", "--no-equalize", "-q"]


@pytest.fixture(scope="module")
def foreign(digits_weights, tmp_path_factory):
    """The trained digits GoogLeNet exported by plain torch.onnx.export, with no manifest."""
    import torch

    from inception_deploy.models import build_model

    folder = tmp_path_factory.mktemp("foreign")
    model = build_model("googlenet", num_classes=10, aux_logits=True, transform_input=False)
    model.load_state_dict(torch.load(digits_weights, weights_only=True))
    path = folder / "theirs.onnx"
    torch.onnx.export(model.eval(), torch.randn(1, 3, 64, 64), str(path), dynamo=False, opset_version=17,
                      input_names=["images"], output_names=["scores"],
                      dynamic_axes={"images": {0: "n"}, "scores": {0: "n"}})
    graph = onnx.load(str(path))
    del graph.metadata_props[:]  # nothing says how it was made
    onnx.save(graph, str(path))
    return path


@pytest.fixture(scope="module")
def digit_images(tmp_path_factory):
    """40 digits as PNG files in one sub-folder per class (labels from the folder names)."""
    from PIL import Image

    from inception_deploy.data import digits_split

    (_, _), (images, labels) = digits_split()
    root = tmp_path_factory.mktemp("digit-images")
    for i, (image, label) in enumerate(zip(images[:40], labels[:40])):
        (root / str(label)).mkdir(exist_ok=True)
        Image.fromarray(image).save(root / str(label) / f"{i}.png")
    return root


def _invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _agreement(output: str) -> float:
    return float(re.search(r"top-1 agreement ([\d.]+)%", output).group(1))


def test_quantize_from_preprocessed_arrays_needs_no_recipe(foreign, digits_recipe, tmp_path):
    from inception_deploy.data import digits_split, preprocess

    (train, _), _ = digits_split()
    calib = tmp_path / "calib.npy"
    np.save(calib, preprocess(list(train[:32]), digits_recipe.preprocessing))  # float32 [32, 3, 64, 64]
    out = tmp_path / "theirs.int8.onnx"
    result = _invoke("quantize", foreign, "--int8", "--calib-data", calib, *FAST, "-o", out)
    assert result.exit_code == 0, result.output
    graph = onnx.load(str(out))
    assert [i.name for i in graph.graph.input] == ["images"] and graph.graph.output[0].name == "scores"
    assert sum(n.op_type == "QuantizeLinear" for n in graph.graph.node) > 50
    assert _agreement(result.output) >= 90.0
    # validate, too: the graph made elsewhere is the reference, its own I/O names and size, no recipe
    result = _invoke("validate", "--reference", foreign, "--target", out, "--data", calib, "-q")
    assert result.exit_code in (0, 1), result.output  # a verdict, not a usage error
    assert re.search(r"(PASSED|FAILED) \| theirs.int8.onnx \| top1_agreement \| ", result.output), result.output


def test_quantize_from_images_with_the_preprocessing_flags(foreign, digit_images, tmp_path):
    out = tmp_path / "theirs.int8.onnx"
    result = _invoke("quantize", foreign, "--calib-data", digit_images, "--input-size", "64", "--mean", "0.5,0.5,0.5",
                     "--std", "0.5,0.5,0.5", *FAST, "-o", out)
    assert result.exit_code == 0, result.output
    assert _agreement(result.output) >= 90.0
    from inception_deploy.manifest import read_onnx_manifest

    manifest = read_onnx_manifest(onnx.load(str(out), load_external_data=False))
    assert manifest["preprocessing"]["mean"] == [0.5, 0.5, 0.5] and manifest["preprocessing"]["size"] == [64, 64]


def test_images_without_preprocessing_is_one_line_naming_the_flags(foreign, digit_images, tmp_path):
    result = _invoke("quantize", foreign, "--calib-data", digit_images, "-o", tmp_path / "x.onnx")
    assert result.exit_code == 2 and not (tmp_path / "x.onnx").exists()
    assert result.output == (
        f"error: {foreign} carries no recipe and {digit_images} holds images, which need preprocessing: give --mean "
        "and --std (and --input-size, --resize, --channel-order as needed), --recipe NAME|FILE, or preprocessed "
        "float arrays (.npy/.npz)\n")
    result = _invoke("quantize", foreign, "--calib-data", digit_images, "--mean", "0.5,0.5,0.5", "-o", tmp_path / "x.onnx")
    assert result.exit_code == 2 and "give --std (and" in result.output


def test_a_recipe_whose_size_disagrees_with_the_graph_is_refused(foreign, digit_images, tmp_path):
    result = _invoke("quantize", foreign, "--recipe", "googlenet", "--calib-data", digit_images, "-o", tmp_path / "x.onnx")
    assert (result.exit_code, result.output) == (2, (
        f"error: {foreign}: input 'images' is 64x64 but recipe 'googlenet' preprocesses to 224x224; give the recipe "
        "made for this graph, or --input-size to match it\n"))
    result = _invoke("quantize", foreign, "--calib-data", digit_images, "--input-size", "96", "--mean", "0.5,0.5,0.5",
                     "--std", "0.5,0.5,0.5", "-o", tmp_path / "x.onnx")
    assert result.exit_code == 2 and "input 'images' is 64x64 but recipe 'theirs' preprocesses to 96x96" in result.output
