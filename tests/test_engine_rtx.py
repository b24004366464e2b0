"""Real TensorRT engines on this CPU-only machine: build-engine with TensorRT-RTX (stage: build-engine).

The digits GoogLeNet's INT8 and FP16 graphs, made by `inception-deploy quantize` as a user
makes them, built by NVIDIA's compiler; the precision truth check and the plan report read
the builder's own layer report. Also: a foreign graph (an Inception exported by plain
torch.onnx.export, no inception-deploy manifest), a graph whose Concat branches have two
scales (requantized), a real engine that runs a quantized conv in FP32 (exit 1, no plan),
the refusals on a plan without a GPU, and the names our code calls on `tensorrt_rtx`.
"""

from __future__ import annotations

import ast
import inspect
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import numpy_helper

from inception_deploy.cli import main
from inception_deploy.engine import TENSORRT_RTX, build_engine, read_manifest
from inception_deploy.engine.cuda_memory import cuda_available
from inception_deploy.engine.precision_check import PrecisionNotMaterialized
from inception_deploy.lint import RULES, lint_model

from test_lint import qdq_model

pytestmark = pytest.mark.skipif(not TENSORRT_RTX.installed(), reason="needs TensorRT-RTX (pip install -e '.[rtx]')")
NO_GPU = "an NVIDIA GPU (torch.cuda.is_available() is False)"


def _invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _ok(*args):
    result = _invoke(*args)
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def digits_graphs(digits_opt_onnx, tmp_path_factory):
    """The optimized digits GoogLeNet as INT8 (the committed entropy calibration cache) and FP16 graphs."""
    out = tmp_path_factory.mktemp("rtx")
    int8, fp16 = out / "googlenet-digits.int8.onnx", out / "googlenet-digits.fp16.onnx"
    _ok("quantize", digits_opt_onnx, "--int8", "-o", int8, "-q")
    _ok("quantize", digits_opt_onnx, "--fp16", "--calib-count", "32", "-o", fp16, "-q")  # range check on 32 images
    return {"int8": int8, "fp16": fp16}


@pytest.fixture(scope="module")
def int8_plan(digits_graphs, tmp_path_factory):
    plan = tmp_path_factory.mktemp("rtx-plan") / "g.int8.plan"
    result = _ok("build-engine", digits_graphs["int8"], "--int8", "-o", plan)
    return plan, result.output


def test_build_engine_int8_on_the_cpu_writes_a_plan_its_manifest_and_the_table(int8_plan):
    plan, output = int8_plan
    lines = [line.rstrip() for line in output.splitlines()]
    assert "PASSED | precision INT8 | 58 Conv/Gemm checked in the engine: 1 FP32, 57 INT8" in lines
    assert any(line.startswith("convolutions (ONNX Conv)") and line.endswith("57 INT8") for line in lines), output
    assert any(line.startswith("Concats removed") and "9 of 9; requantized at 0" in line for line in lines), output
    manifest = read_manifest(plan)
    assert (manifest.builder, manifest.precision) == ("tensorrt-rtx", "int8")
    assert manifest.compute_capabilities == ["sm80", "sm86", "sm89", "sm120"] and manifest.gpu_name is None
    assert manifest.layer_precisions["passed"] and manifest.lint_target == "tensorrt-rtx-1.7"
    report = manifest.plan_report
    assert report["convolutions"] == {"INT8": 57} and report["gemms"] == {"FP32": 1}  # the 10-class fc stays float
    assert report["weights_bytes"] > 0 and report["activation_bytes"] > 0 and report["plan_bytes"] == plan.stat().st_size
    conv2 = next(row for row in report["layers"] if row["onnx_nodes"][:1] == ["/conv2/conv/Conv"]
                 and row["kind"] == "convolution")
    assert (conv2["reads"], conv2["weights"], conv2["modules"]) == ("INT8", "INT8", ["conv2"])
    assert manifest.history[-1]["stage"] == "build-engine" and [h["stage"] for h in manifest.history][:1] == ["export"]


def test_fp16_plan_runs_every_convolution_in_half(digits_graphs, tmp_path):
    plan = tmp_path / "g.fp16.plan"
    result = _ok("build-engine", digits_graphs["fp16"], "--fp16", "-o", plan, "--compute-capability", "sm86",
                 "--timing-cache", tmp_path / "timing.cache", "--show-layers")
    assert "PASSED | precision FP16 | 58 Conv/Gemm checked in the engine: 58 FP16" in result.output
    assert result.output.startswith(f"building the plan of {Path(digits_graphs['fp16']).name}: started, lint, build "
                                    "with NVIDIA's builder, truth check; usually seconds to a minute\n")
    assert "/conv2/conv/Conv_myl0_6 | correlation | reads FP16 | weights FP16 | writes FP16 | /conv2/conv/Conv, " \
           "/conv2/Relu | conv2" in result.output
    assert ("warning: --timing-cache" in result.output) and not (tmp_path / "timing.cache").exists()
    manifest = read_manifest(plan)
    assert manifest.compute_capabilities == ["sm86"] and manifest.plan_report["convolutions"] == {"FP16": 57}


def test_int8_flag_on_the_fp32_graph_is_still_refused(digits_opt_onnx, tmp_path):
    result = _invoke("build-engine", digits_opt_onnx, "--int8", "-o", tmp_path / "g.plan")
    assert result.exit_code == 2 and "is an FP32 graph" in result.output and not (tmp_path / "g.plan").exists()


def test_a_foreign_inception_quantized_by_quantize_builds_and_passes(tmp_path):
    """GoogLeNet exported by plain torch.onnx.export (opset 13, its own I/O names, no manifest)."""
    import torch

    from inception_deploy.models import build_model

    foreign = tmp_path / "foreign.onnx"
    torch.onnx.export(build_model("googlenet", num_classes=10).eval(), torch.randn(1, 3, 64, 64), str(foreign),
                      dynamo=False, opset_version=13, input_names=["images"], output_names=["scores"],
                      dynamic_axes={"images": {0: "n"}, "scores": {0: "n"}})
    int8 = tmp_path / "foreign.int8.onnx"
    _ok("quantize", foreign, "--int8", "--recipe", "googlenet-digits", "--calib-data", "synthetic:8", "--calib-count",
        "8", "--calib-method", "max", "--no-bias-correction", "--no-equalize", "-o", int8, "-q")
    result = _ok("build-engine", int8, "--int8", "-o", tmp_path / "foreign.int8.plan")
    assert "PASSED | precision INT8 | 58 Conv/Gemm checked in the engine: 1 FP32, 57 INT8" in result.output
    manifest = read_manifest(tmp_path / "foreign.int8.plan")
    assert manifest.inputs == ["images"] and manifest.outputs == ["scores"]
    # No inception-deploy export in its history: node names are not taken for PyTorch module paths.
    assert all(row["modules"] == [] for row in manifest.plan_report["layers"])


def test_concat_branches_with_two_scales_are_requantized(digits_graphs, tmp_path):
    model = onnx.load(str(digits_graphs["int8"]))
    q = next(n for n in model.graph.node if n.name == "inception3a_branch1_Relu_output_0_QuantizeLinear")
    dq = next(n for n in model.graph.node if n.name == "inception3a_branch1_Relu_output_0_DequantizeLinear")
    scale = next(t for t in model.graph.initializer if t.name == q.input[1])
    model.graph.initializer.append(numpy_helper.from_array(numpy_helper.to_array(scale) * np.float32(1.5), "other"))
    q.input[1] = dq.input[1] = "other"
    graph = tmp_path / "two-scales.int8.onnx"
    onnx.save(model, graph)
    result = build_engine(graph, tmp_path / "two-scales.plan", precision="int8")
    assert [(c.node, c.describe()) for c in result.plan_report.concats if c.rescaled] == [
        ("/inception3a/Concat", "removed, requantized (its inputs' scales differ)")]
    assert [w.node for w in result.lint_report.warnings if w.rule == "qdq-concat-scale"] == [
        "Concat '/inception3a/Concat'"]


def test_a_real_engine_with_an_fp32_convolution_fails_the_check_and_writes_no_plan(tmp_path):
    """Activations quantized per channel: TensorRT-RTX builds it but runs conv1 in FP32. The lint refuses it;
    a lint without that rule lets it reach the builder, and the truth check stops it."""
    graph = tmp_path / "per-channel.int8.onnx"
    onnx.save(qdq_model(activation_scale=np.full(3, 0.02, np.float32)), graph)
    rules = [rule for rule in RULES if rule.id != "qdq-activation-per-tensor"]
    lenient = lint_model(graph, "tensorrt-rtx", rules=rules)
    assert lenient
    plan = tmp_path / "per-channel.plan"
    with pytest.raises(PrecisionNotMaterialized) as caught:
        build_engine(graph, plan, precision="int8", lint_report=lenient)
    assert caught.value.exit_code == 1 and not plan.exists() and not (tmp_path / "per-channel.plan.json").exists()
    assert str(caught.value).startswith(
        f"{plan} not written: 1 of 2 Conv/Gemm run wider than the graph asks (first: ONNX conv1 asks INT8; engine "
        "layer 'conv1_myl0_3' (correlation) reads FP32 data and FP32 weights")


def test_a_passing_lint_report_of_the_same_file_is_reused(digits_graphs, tmp_path):
    graph = digits_graphs["fp16"]
    report = lint_model(graph, "tensorrt-11")
    result = build_engine(graph, tmp_path / "a.plan", precision="fp16", lint_report=report)
    assert result.lint_reused and result.manifest.lint_target == "tensorrt-11.0"
    other = lint_model(digits_graphs["int8"], "tensorrt-11")  # another file: linted again
    result = build_engine(graph, tmp_path / "b.plan", precision="fp16", lint_report=other)
    assert not result.lint_reused and result.manifest.lint_target == "tensorrt-rtx-1.7"


@pytest.mark.skipif(cuda_available(), reason="checks the refusal on a machine without a GPU")
def test_validate_and_benchmark_of_a_plan_without_a_gpu_say_so_in_one_line(int8_plan):
    plan, _ = int8_plan
    line = f"error: running {plan} needs TensorRT-RTX and an NVIDIA GPU; missing here: {NO_GPU}\n"
    result = _invoke("validate", "--recipe", "googlenet-digits", "--target", plan, "--data", "digits-holdout")
    assert (result.exit_code, result.output) == (2, line)
    result = _invoke("benchmark", plan, "--backend", "tensorrt")
    assert (result.exit_code, result.output) == (2, line)


@pytest.mark.skipif(cuda_available(), reason="checks the pipeline on a machine without a GPU")
def test_the_pipeline_stage_builds_with_rtx_and_skips_without_any_tensorrt(digits_graphs, digits_recipe, tmp_path,
                                                                           monkeypatch):
    import shutil
    import sys

    from inception_deploy.pipeline import PipelineState, _build_engines

    artifacts = {}
    for precision, graph in digits_graphs.items():
        artifacts[precision] = tmp_path / graph.name
        shutil.copy(graph, artifacts[precision])
    state = PipelineState(digits_recipe, None, tmp_path, artifacts=dict(artifacts))
    _build_engines(state)
    assert [line.split(" | ")[:3] for line in state.lines if line.startswith(("PASSED", "FAILED", "SKIPPED"))] == [
        ["PASSED", "build-engine", "googlenet-digits.fp16.plan"], ["PASSED", "build-engine", "googlenet-digits.int8.plan"]]
    assert f"  googlenet-digits.int8.plan is not validated here: running a plan needs {NO_GPU}" in state.lines
    assert set(state.artifacts) == {"fp16", "int8"}  # plans go on to validate only where they can run

    for module in ("tensorrt", "tensorrt_rtx"):
        monkeypatch.setitem(sys.modules, module, None)
    state = PipelineState(digits_recipe, None, tmp_path, artifacts=dict(artifacts))
    _build_engines(state)
    assert state.lines == [
        "SKIPPED | build-engine | build-engine needs TensorRT-RTX, or TensorRT and an NVIDIA GPU; missing here: "
        f"TensorRT-RTX (Python package 'tensorrt_rtx'), TensorRT (Python package 'tensorrt') and {NO_GPU}. Install "
        "with pip install -e '.[rtx]' (builds on any machine, no GPU needed), or pip install -e '.[tensorrt]' on a "
        "machine with an NVIDIA GPU"]


# --- the TensorRT-RTX names our code uses, checked on the installed module ---------------------------

# Variables that hold TensorRT objects in trt_build.py, rtx_build.py and the runner.
TRT_OBJECTS = {"builder", "network", "parser", "config", "profile", "engine", "runtime", "inspector", "cache",
               "error", "_engine", "_context", "_runtime"}


def _trt_names(source: str) -> set[tuple[str, ...]]:
    """Names reached through the `trt` module (trt.ComputeCapability.SM86) or called on a TensorRT object
    (config.set_compute_capability -> ('IBuilderConfig?', 'set_compute_capability')), as tuples."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Attribute):
            continue
        chain, base = [], node
        while isinstance(base, ast.Attribute):
            chain.append(base.attr)
            base = base.value
        chain.reverse()
        if isinstance(base, ast.Name) and base.id == "trt":
            found.add(("trt", *chain))
        elif isinstance(base, ast.Name) and base.id in TRT_OBJECTS:
            found.add(("object", chain[0]))
        elif isinstance(base, ast.Name) and base.id == "self" and chain[0] in TRT_OBJECTS and len(chain) > 1:
            found.add(("object", chain[1]))
    return found


def test_every_tensorrt_name_our_engine_code_uses_exists_in_the_installed_tensorrt_rtx():
    import tensorrt_rtx as trt

    from inception_deploy.backends import tensorrt_backend
    from inception_deploy.engine import rtx_build, trt_build

    members = {name for cls in vars(trt).values() if isinstance(cls, type) for name in dir(cls)}
    # TensorRT 10/11-only names, used in TensorRTHooks only (never with tensorrt_rtx), checked by check_api.py.
    datacenter_only = {("trt", "NetworkDefinitionCreationFlag", "STRONGLY_TYPED")}
    missing = []
    for module in (trt_build, rtx_build, tensorrt_backend):
        for name in sorted(_trt_names(inspect.getsource(module)) - datacenter_only):
            if name[0] == "object":
                ok = name[1] in members
            else:
                target, ok = trt, True
                for part in name[1:]:
                    if not hasattr(target, part):
                        ok = False
                        break
                    target = getattr(target, part)
            if not ok:
                missing.append(f"{module.__name__}: {'.'.join(name[1:])}")
    assert missing == []
    assert ("object", "set_compute_capability") in _trt_names(inspect.getsource(rtx_build))
