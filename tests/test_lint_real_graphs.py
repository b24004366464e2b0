"""Lint on the graphs this project makes, for both models: FP32, optimized, FP16 and INT8
(Q/DQ) pass every TensorRT ONNX-parser rule for 10.x, 11.x and TensorRT-RTX with no errors;
and NVIDIA's real parser agrees: TensorRT-RTX builds every one of them, and the engine runs
each Conv in the precision its graph asks for (INT8 graphs: every quantized Conv reads Int8
data and Int8 weights, no requantization at any Concat; FP16 graphs: every Conv in Half)."""

from __future__ import annotations

import onnx
import pytest

from inception_deploy.engine import TENSORRT_RTX, build_engine
from inception_deploy.lint import lint_model
from inception_deploy.passes import optimize_onnx
from inception_deploy.precision import quantize_onnx


@pytest.fixture(scope="module", params=["googlenet", "inception_v3"])
def model_graphs(request, googlenet_random_export, inception_v3_random_export, tmp_path_factory):
    export = googlenet_random_export if request.param == "googlenet" else inception_v3_random_export
    folder = tmp_path_factory.mktemp(f"lint-{request.param}")
    optimized = optimize_onnx(export.path, folder / "m.opt.onnx", recipe=export.recipe, check_images=2).path
    # Random weights: these graphs are for structure, not accuracy; a few synthetic images suffice.
    fp16 = quantize_onnx(optimized, folder / "m.fp16.onnx", recipe=export.recipe, precision="fp16",
                         calib_data="synthetic:4", calib_count=4, progress=False).path
    # Bias correction only changes bias values, not the structure lint checks; on Inception v3 it
    # is one pass per depth (48), over a minute of CI, so GoogLeNet alone carries it here.
    int8 = quantize_onnx(optimized, folder / "m.int8.onnx", recipe=export.recipe, precision="int8",
                         calib_data="synthetic:8", calib_count=8, calib_method="max", progress=False,
                         bias_correction=request.param == "googlenet").path
    return {"fp32": export.path, "optimized": optimized, "fp16": fp16, "int8": int8}


@pytest.mark.parametrize("target", ["tensorrt-10", "tensorrt-11", "tensorrt-rtx"])
@pytest.mark.parametrize("kind", ["fp32", "optimized", "fp16", "int8"])
def test_our_graphs_pass_lint(model_graphs, kind, target):
    report = lint_model(model_graphs[kind], target=target)
    assert report, "\n".join(report.lines())
    assert report.errors == []
    # The one warning allowed: the classifier Gemm kept float in INT8 graphs (no Q/DQ on its inputs).
    assert all("Gemm" in f.node for f in report.warnings), [str(f) for f in report.warnings]


@pytest.mark.skipif(not TENSORRT_RTX.installed(), reason="needs TensorRT-RTX (pip install -e '.[rtx]')")
@pytest.mark.parametrize("kind", ["fp32", "optimized", "fp16", "int8"])
def test_tensorrt_rtx_builds_our_graphs_as_typed(model_graphs, kind, tmp_path):
    precision = {"fp32": None, "optimized": None, "fp16": "fp16", "int8": "int8"}[kind]
    result = build_engine(model_graphs[kind], tmp_path / f"m.{kind}.plan", precision=precision,
                          builder="tensorrt-rtx")
    assert result.precision_report, "\n".join(result.precision_report.lines())
    convs = sum(node.op_type == "Conv" for node in onnx.load(str(model_graphs[kind])).graph.node)
    plan = result.plan_report
    want = {"fp32": "FP32", "optimized": "FP32", "fp16": "FP16", "int8": "INT8"}[kind]
    assert plan.convolutions == {want: convs}, plan.convolutions
    assert plan.concats and plan.concats_removed == len(plan.concats)
    assert plan.concats_rescaled == 0, [c.describe() for c in plan.concats if c.rescaled]
    assert (tmp_path / f"m.{kind}.plan").is_file() and result.manifest.plan_report["concats"]
