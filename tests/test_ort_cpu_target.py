"""`quantize --int8 --for ort-cpu`: the INT8 graph for ONNX Runtime's CPU kernels, on the trained
digits GoogLeNet (stage: quantize; lint and build-engine refuse it for TensorRT)."""

from __future__ import annotations

import collections

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, numpy_helper

from inception_deploy.cli import main
from inception_deploy.lint import lint_model
from inception_deploy.manifest import read_onnx_manifest
from inception_deploy.precision import quantize_onnx
from inception_deploy.precision.targets import OrtCpuTarget
from inception_deploy.recipes import recipe_from_dict

HELD_OUT = 450  # every held-out digit (digits-holdout): what CI's INT8 accuracy assertions run on

FIX = ("TensorRT takes symmetric int8 Q/DQ with float biases: quantize the FP32 graph again with "
       "`inception-deploy quantize --int8 --for tensorrt`")
BY_MANIFEST = ("quantized for ONNX Runtime CPU (its manifest records `quantize --for ort-cpu`: asymmetric uint8 "
               "activations, int32 biases)")


@pytest.fixture(scope="module")
def ort_cpu_result(digits_opt_onnx, tmp_path_factory):
    """The ort-cpu graph from the committed entropy cache (and its bias corrections)."""
    out = tmp_path_factory.mktemp("ortcpu") / "googlenet-digits.ortcpu.int8.onnx"
    return quantize_onnx(digits_opt_onnx, out, target="ort-cpu", progress=False, eval_images=HELD_OUT)


@pytest.fixture(scope="module")
def tensorrt_result(digits_opt_onnx, tmp_path_factory):
    out = tmp_path_factory.mktemp("trt") / "googlenet-digits.int8.onnx"
    return quantize_onnx(digits_opt_onnx, out, progress=False, eval_images=HELD_OUT)


def _constants(model):
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}


def test_ort_cpu_graph_accuracy_on_held_out_digits_is_no_worse_than_the_tensorrt_graph(ort_cpu_result,
                                                                                         tensorrt_result):
    ev, trt = ort_cpu_result.evaluation, tensorrt_result.evaluation
    assert ev.source == "digits-holdout" and ev.main.count == 450 and ev.labelled == 450
    assert ev.main.top1_agreement >= 0.99 and abs(ev.candidate_top1 - ev.reference_top1) <= 0.005
    assert ev.main.cosine_min > 0.99
    assert ev.main.max_abs_error <= 0.17  # CI's INT8 bound; measured 0.103 (the tensorrt graph: 0.146)
    assert ev.main.max_abs_error <= trt.main.max_abs_error
    assert ev.main.top1_agreement >= trt.main.top1_agreement


def test_ort_cpu_graph_is_uint8_with_int32_biases_and_records_its_target(ort_cpu_result):
    model = onnx.load(str(ort_cpu_result.path))
    onnx.checker.check_model(model, full_check=True)
    constants = _constants(model)
    zero_points = {n.input[0]: constants[n.input[2]] for n in model.graph.node if n.op_type == "QuantizeLinear"}
    assert len(zero_points) > 50 and all(z.dtype == np.uint8 for z in zero_points.values())
    # The normalized image lies in [-1, 1]: zero point 128, scale 1/127, so +-1 stay exact.
    assert int(zero_points["input"]) == 128
    scale = next(constants[n.input[1]] for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "input")
    assert float(scale) == pytest.approx(1 / 127, rel=1e-6)
    assert sum(int(z) == 0 for z in zero_points.values()) == len(zero_points) - 1  # after Relu: [0, amax]
    producers = {o: n for n in model.graph.node for o in n.output}
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    for conv in convs:
        bias_dq = producers[conv.input[2]]
        assert bias_dq.op_type == "DequantizeLinear" and constants[bias_dq.input[0]].dtype == np.int32, conv.name
        x_scale = constants[producers[conv.input[0]].input[1]]
        w_scale = constants[producers[conv.input[1]].input[1]]
        np.testing.assert_allclose(constants[bias_dq.input[1]], x_scale * w_scale, rtol=1e-6)
    stage = read_onnx_manifest(model)["history"][-1]
    assert stage["int8_target"] == "ort-cpu" and stage["settings"]["int8"]["target"] == "ort-cpu"


def test_onnx_runtime_fuses_every_conv_concat_and_the_pool_into_qlinear_kernels(ort_cpu_result, tmp_path):
    """The point of the target: ORT's own optimized graph (SessionOptions.optimized_model_filepath)
    has no float Conv left; the signed TensorRT graph keeps them float (FusedConv)."""
    import onnxruntime as ort

    def optimized_ops(path):
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED  # QDQ fusions, no NCHWc
        options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return collections.Counter(n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node)

    source = collections.Counter(n.op_type for n in onnx.load(str(ort_cpu_result.path)).graph.node)
    fused = optimized_ops(ort_cpu_result.path)
    assert fused["QLinearConv"] == source["Conv"] == 57
    assert fused["QLinearConcat"] == source["Concat"] == 9
    assert fused["QLinearGlobalAveragePool"] == 1
    assert not {"Conv", "FusedConv", "Concat", "GlobalAveragePool", "Relu"} & set(fused)
    # What stays: the image's Q, the DQ before the float classifier (a Gemm of 10 outputs, kept float).
    assert fused["QuantizeLinear"] == 1 and fused["DequantizeLinear"] == 1 and fused["Gemm"] == 1


def test_recipe_key_makes_the_same_graph_as_the_flag(digits_opt_onnx, digits_recipe, ort_cpu_result, tmp_path):
    raw = digits_recipe.to_dict()
    raw["precision"]["int8"]["target"] = "ort-cpu"
    result = quantize_onnx(digits_opt_onnx, tmp_path / "r.int8.onnx", recipe=recipe_from_dict(raw), progress=False)
    by_recipe, by_flag = onnx.load(str(result.path)), onnx.load(str(ort_cpu_result.path))
    assert by_recipe.graph.SerializeToString(deterministic=True) == by_flag.graph.SerializeToString(deterministic=True)


def test_unknown_target_is_a_usage_error(digits_opt_onnx, tmp_path):
    result = CliRunner().invoke(main, ["quantize", str(digits_opt_onnx), "--int8", "--for", "tensorrt-cpu",
                                       "-o", str(tmp_path / "x.onnx")])
    assert result.exit_code == 2 and "'tensorrt-cpu' is not one of 'tensorrt', 'ort-cpu'" in result.output
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.parametrize("target", ["tensorrt-10", "tensorrt-11", "tensorrt-rtx"])
def test_lint_for_tensorrt_rejects_the_ort_cpu_graph_first_with_the_reason(ort_cpu_result, target):
    report = lint_model(ort_cpu_result.path, target)
    assert not report
    first = report.errors[0]
    assert (first.rule, first.node) == ("int8-target", "<graph>")
    assert first.message == f"{BY_MANIFEST}; {report.target} does not build it. {FIX}"


def test_lint_cli_exit_code_and_first_line(ort_cpu_result):
    result = CliRunner().invoke(main, ["lint", str(ort_cpu_result.path), "--target", "tensorrt-rtx"])
    assert result.exit_code == 1
    assert result.output.splitlines()[0] == (f"error: <graph>: {BY_MANIFEST}; tensorrt-rtx-1.7 does not build it. "
                                             f"{FIX} [int8-target]")


def test_without_its_manifest_the_qdq_rules_still_reject_it(ort_cpu_result):
    """A graph in that form made elsewhere: the per-node rules say what TensorRT refuses."""
    model = onnx.load(str(ort_cpu_result.path))
    del model.metadata_props[:]
    report = lint_model(model, "tensorrt-rtx")
    assert not report and "int8-target" not in report.rules_failed()
    assert {"qdq-zero-point", "qdq-int8", "qdq-bias"} <= set(report.rules_failed())


def test_tensorrt_graph_is_not_flagged(tensorrt_result):
    report = lint_model(tensorrt_result.path, "tensorrt-rtx")
    assert report and not [f for f in report.findings if f.rule == "int8-target"]


def test_build_engine_refuses_the_ort_cpu_graph_in_one_line(ort_cpu_result, tmp_path):
    plan = tmp_path / "g.plan"
    result = CliRunner().invoke(main, ["build-engine", str(ort_cpu_result.path), "--int8", "-o", str(plan), "-q"])
    assert result.exit_code == 2 and not plan.exists()
    assert result.output == (f"error: {ort_cpu_result.path}: not built: {BY_MANIFEST}, which TensorRT rejects. "
                             f"{FIX}\n")


def test_asymmetric_range_keeps_both_ends_representable():
    target = OrtCpuTarget()
    scale, zero_point = target.activation(1.0, -1.0)
    assert zero_point.dtype == np.uint8 and int(zero_point) == 128 and scale == pytest.approx(1 / 127)
    assert (0 - 128) * scale <= -1.0 and (255 - 128) * scale >= 1.0
    scale, zero_point = target.activation(6.0, 0.0)  # after Relu: all 255 levels on [0, amax]
    assert int(zero_point) == 0 and scale == pytest.approx(6.0 / 255)
    scale, zero_point = target.activation(4.0, -1.0)  # observed min above -amax: asymmetric
    assert int(zero_point) == 51 and (0 - 51) * scale <= -1.0 and (255 - 51) * scale >= 4.0
    assert TensorProto.UINT8 == onnx.helper.np_dtype_to_tensor_dtype(zero_point.dtype)


def test_run_neither_lints_nor_builds_an_ort_cpu_graph_for_tensorrt(digits_recipe, ort_cpu_result, tmp_path):
    """`run` with precision.int8.target: ort-cpu keeps its INT8 graph (validated on ORT) and says
    why no TensorRT lint or engine is made from it, instead of failing on them."""
    from inception_deploy.pipeline import PipelineState, _build_engines, _lint

    recipe = digits_recipe.with_overrides({"precision.int8.target": "ort-cpu"})
    state = PipelineState(recipe, None, tmp_path)
    state.artifacts["int8"] = ort_cpu_result.path
    _lint(state)
    _build_engines(state)
    why = (f"{ort_cpu_result.path.name} is quantized for ort-cpu (precision.int8.target); TensorRT takes the "
           "tensorrt target's graph")
    assert state.lines == [f"SKIPPED | lint tensorrt-11 | {why}", f"SKIPPED | build-engine | {why}"]
    assert state.exit_code == 0 and "int8" not in state.lint_reports and "int8" not in state.plans
