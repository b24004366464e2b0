"""Tests for build-engine, the plan manifest, the precision truth check and the TensorRT runner
(stage: build-engine, runtime).

Everything up to the TensorRT call runs here on the CPU: lint first, precision assertion,
one-line refusal without TensorRT or a GPU, no partial plan. The inspector JSON parsing is
tested on a hand-written sample in the documented format. Tests marked `gpu` build, run and
compare real FP16 and INT8 engines; they skip where TensorRT or a GPU is missing.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from inception_deploy.cli import main
from inception_deploy.engine import (EngineManifest, check_precision, classify_graph, manifest_path,
                                     parse_layer_information, read_manifest)
from inception_deploy.engine.build import profile_shapes
from inception_deploy.engine.environment import missing_pieces
from inception_deploy.engine.graph_precision import check_requested_precision
from inception_deploy.engine.inspector import precision_failure_message, precision_of
from inception_deploy.engine.manifest import check_runtime_compatibility, write_manifest
from inception_deploy.engine.trt_build import ParserIssue, describe_parser_issues
from inception_deploy.errors import MissingDependency, UserError
from inception_deploy.recipes import BatchRange

from test_lint import fp16_model, googlenet_onnx, qdq_model  # noqa: F401 (googlenet_onnx is a fixture)

GPU_READY = not missing_pieces()
GPU_REASON = "needs an NVIDIA GPU and TensorRT (pip install -e '.[tensorrt]' on a GPU machine)"
NOTHING_HERE = ("needs TensorRT and an NVIDIA GPU; missing here: TensorRT (Python package 'tensorrt') and an NVIDIA GPU "
                "(torch.cuda.is_available() is False). Install with pip install -e '.[tensorrt]' on a machine with an "
                "NVIDIA GPU")
cpu_only = pytest.mark.skipif(missing_pieces() != ["TensorRT (Python package 'tensorrt')",
                                                   "an NVIDIA GPU (torch.cuda.is_available() is False)"],
                              reason="checks the refusal on a machine without TensorRT and without a GPU")


# --- the engine inspector's layer JSON -------------------------------------------------------

# Engine-wide JSON as IEngineInspector.get_engine_information(LayerInformationFormat.JSON)
# prints it for an engine built with ProfilingVerbosity.DETAILED (TensorRT 10 layout:
# "Format/Datatype" strings, Metadata with \x1e between the fused ONNX layers, "Bindings").
INSPECTOR_SAMPLE = {
    "Layers": [
        {"Name": "/conv1/conv/Conv + /conv1/Relu", "LayerType": "CaskConvolution",
         "Inputs": [{"Name": "input", "Location": "Device", "Dimensions": [8, 3, 64, 64],
                     "Format/Datatype": "Thirty-two wide channel vectorized row major Int8 format."}],
         "Outputs": [{"Name": "/conv1/Relu_output_0", "Location": "Device", "Dimensions": [8, 64, 32, 32],
                      "Format/Datatype": "Thirty-two wide channel vectorized row major Int8 format."}],
         "ParameterType": "Convolution", "Kernel": [7, 7], "PaddingMode": "kEXPLICIT_ROUND_DOWN",
         "PrePadding": [3, 3], "PostPadding": [3, 3], "Stride": [2, 2], "Dilation": [1, 1], "OutMaps": 64,
         "Groups": 1, "Weights": {"Type": "Int8", "Count": 9408}, "Bias": {"Type": "Float", "Count": 64},
         "HasBias": 1, "HasReLU": 1, "Activation": "RELU",
         "TacticName": "sm80_xmma_fprop_implicit_gemm_interleaved_i8i8_i8i32_f32_nchw_vect_c_32kcrs_vect_c_32",
         "TacticValue": "0x11bde0e1d9f2f35d",
         "Metadata": "[ONNX Layer: /conv1/conv/Conv]\x1e[ONNX Layer: /conv1/Relu]"},
        {"Name": "/maxpool1/MaxPool", "LayerType": "CaskPooling",
         "Inputs": [{"Name": "/conv1/Relu_output_0", "Location": "Device", "Dimensions": [8, 64, 32, 32],
                     "Format/Datatype": "Thirty-two wide channel vectorized row major Int8 format."}],
         "Outputs": [{"Name": "/maxpool1/MaxPool_output_0", "Location": "Device", "Dimensions": [8, 64, 16, 16],
                      "Format/Datatype": "Thirty-two wide channel vectorized row major Int8 format."}],
         "ParameterType": "Pooling", "PoolingType": "MAX", "WindowSize": [3, 3],
         "Metadata": "[ONNX Layer: /maxpool1/MaxPool]"},
        {"Name": "/conv2/conv/Conv + /conv2/Relu", "LayerType": "CaskConvolution",
         "Inputs": [{"Name": "/maxpool1/MaxPool_output_0", "Location": "Device", "Dimensions": [8, 64, 16, 16],
                     "Format/Datatype": "Row major linear FP32"}],
         "Outputs": [{"Name": "/conv2/Relu_output_0", "Location": "Device", "Dimensions": [8, 64, 16, 16],
                      "Format/Datatype": "Row major linear FP32"}],
         "ParameterType": "Convolution", "Kernel": [1, 1], "Weights": {"Type": "Float", "Count": 4096},
         "Bias": {"Type": "Float", "Count": 64}, "Metadata": "[ONNX Layer: /conv2/conv/Conv]\x1e[ONNX Layer: /conv2/Relu]"},
        {"Name": "/fc/Gemm", "LayerType": "CaskGemmConvolution",
         "Inputs": [{"Name": "/Flatten_output_0", "Location": "Device", "Dimensions": [8, 1024, 1, 1],
                     "Format/Datatype": "Channel major FP16 format where channel % 8 == 0"}],
         "Outputs": [{"Name": "logits", "Location": "Device", "Dimensions": [8, 10, 1, 1],
                      "Format/Datatype": "Row major linear FP32"}],
         "ParameterType": "Convolution", "Weights": {"Type": "Half", "Count": 10240},
         "Metadata": "[ONNX Layer: /fc/Gemm]"},
    ],
    "Bindings": ["input", "logits"],
}


def test_precision_words():
    assert [precision_of(s) for s in (
        "Thirty-two wide channel vectorized row major Int8 format.", "Row major linear FP16 format (kLINEAR)",
        "Channel major FP16 format where channel % 8 == 0", "Row major linear FP32", "Half", "Float",
        "Row major linear BFloat16 format", "Row major linear UInt8 format", "Unknown format", None)] == [
        "INT8", "FP16", "FP16", "FP32", "FP16", "FP32", "BF16", "UINT8", "UNKNOWN", "UNKNOWN"]


def test_parse_layer_information_reads_precision_weights_and_onnx_origins():
    layers = parse_layer_information(json.dumps(INSPECTOR_SAMPLE))
    assert [(l.name, l.layer_type, l.precision, l.weights, l.is_compute) for l in layers] == [
        ("/conv1/conv/Conv + /conv1/Relu", "Convolution", "INT8", "INT8", True),
        ("/maxpool1/MaxPool", "Pooling", "INT8", None, False),
        ("/conv2/conv/Conv + /conv2/Relu", "Convolution", "FP32", "FP32", True),
        ("/fc/Gemm", "Convolution", "FP16", "FP16", True)]
    assert layers[0].onnx_nodes == ("/conv1/conv/Conv", "/conv1/Relu")


def test_parse_layer_information_tolerates_a_datatype_field_and_no_metadata():
    info = {"Layers": [{"Name": "a + b", "LayerType": "CaskConvolution", "ParameterType": "Convolution",
                        "Inputs": [{"Name": "x", "DataType": "Half", "Format": "Row major linear (kLINEAR)"}]}],
            "I/O Tensors": [{"Name": "x", "IOMode": "Input", "DataType": "Half"}]}
    (layer,) = parse_layer_information(info)
    assert (layer.precision, layer.onnx_nodes) == ("FP16", ("a", "b"))


def test_layer_names_only_cannot_be_checked():
    with pytest.raises(UserError, match="lists layer names only; build with ProfilingVerbosity.DETAILED"):
        parse_layer_information('{"Layers": ["conv1", "relu1"], "Bindings": ["input"]}')


def test_int8_engine_with_a_float_conv_fails_the_truth_check():
    report = check_precision(parse_layer_information(INSPECTOR_SAMPLE), "int8")
    assert not report
    assert [(v.layer.name, v.expected, v.ok) for v in report.failures] == [
        ("/conv2/conv/Conv + /conv2/Relu", "INT8", False), ("/fc/Gemm", "INT8", False)]
    assert report.lines() == [
        "ok   | /conv1/conv/Conv + /conv1/Relu | Convolution | INT8 | expected INT8",
        "FAIL | /conv2/conv/Conv + /conv2/Relu | Convolution | FP32 | expected INT8",
        "FAIL | /fc/Gemm | Convolution | FP16 | expected INT8",
        "FAILED | precision INT8 | 3 compute layers: 1 FP16, 1 FP32, 1 INT8 | 2 not in INT8"]
    assert precision_failure_message("out/g.int8.plan", report) == (
        "out/g.int8.plan not written: 2 of 3 compute layers run in FP16, FP32, not INT8 (first: "
        "'/conv2/conv/Conv + /conv2/Relu' in FP32); check the Q/DQ or FP16 casts around them with `inception-deploy lint`")
    assert report.to_dict()["counts"] == {"FP16": 1, "FP32": 1, "INT8": 1}


def test_layers_the_graph_keeps_in_float_are_allowed():
    expected = {"/conv1/conv/Conv": "INT8", "/conv2/conv/Conv": "FP32", "/fc/Gemm": "FP16"}
    report = check_precision(parse_layer_information(INSPECTOR_SAMPLE), "int8", expected)
    assert report, report.lines()
    assert report.summary() == "PASSED | precision INT8 | 3 compute layers: 1 FP16, 1 FP32, 1 INT8"


def test_fp16_request_fails_on_fp32_layers_and_passes_on_narrower():
    report = check_precision(parse_layer_information(INSPECTOR_SAMPLE), "fp16")
    assert [v.layer.name for v in report.failures] == ["/conv2/conv/Conv + /conv2/Relu"]


def test_no_precision_information_is_a_failure():
    info = {"Layers": [{"Name": "conv", "LayerType": "CaskConvolution", "ParameterType": "Convolution",
                        "Inputs": [{"Name": "x", "Format/Datatype": "Unknown format"}]}]}
    report = check_precision(parse_layer_information(info), "int8")
    assert not report
    assert precision_failure_message("m.plan", report) == (
        "m.plan not written: the inspector names no precision for any convolution/GEMM layer, so INT8 cannot be "
        "confirmed")


# --- what precision a graph asks for ---------------------------------------------------------

def test_classify_graphs(googlenet_onnx):
    fp32 = classify_graph(onnx.load(googlenet_onnx))
    assert fp32.kind == "fp32" and set(fp32.node_precisions.values()) == {"FP32"} and len(fp32.node_precisions) == 58
    assert classify_graph(fp16_model()).node_precisions == {"conv": "FP16"}
    int8 = classify_graph(qdq_model())
    assert (int8.kind, int8.node_precisions) == ("int8", {"conv1": "INT8", "convA": "INT8"})


def test_requested_precision_must_be_the_graphs(googlenet_onnx):
    fp32 = classify_graph(onnx.load(googlenet_onnx))
    assert check_requested_precision("m.onnx", None, fp32) == "fp32"
    assert check_requested_precision("q.onnx", "int8", classify_graph(qdq_model())) == "int8"
    with pytest.raises(UserError) as caught:
        check_requested_precision("h.onnx", "fp16", classify_graph(qdq_model()))
    assert str(caught.value) == ("h.onnx is an INT8 Q/DQ graph; build it with --int8 (or pass the FP16 graph made by "
                                 "`inception-deploy quantize MODEL.onnx --fp16`); no engine was built")


def test_profile_shapes_cover_the_dynamic_batch(googlenet_onnx):
    shapes, dynamic = profile_shapes(onnx.load(googlenet_onnx), BatchRange(min=1, opt=8, max=64))
    assert dynamic == {"input"}
    assert shapes == {"input": {"min": [1, 3, 64, 64], "opt": [8, 3, 64, 64], "max": [64, 3, 64, 64]}}


def test_parser_errors_are_reported_per_node():
    issues = [ParserIssue(3, "/conv1/conv/Conv", "Conv", "Invalid weights"),
              ParserIssue(7, "uniq", "Unique", "No importer registered for op: Unique")]
    assert describe_parser_issues("m.onnx", "11.4.0", issues) == (
        "m.onnx: TensorRT 11.4.0's ONNX parser rejected 2 node(s): Conv '/conv1/conv/Conv' (node 3): Invalid weights; "
        "Unique 'uniq' (node 7): No importer registered for op: Unique; see `inception-deploy lint m.onnx`")


# --- build-engine on this machine ------------------------------------------------------------

def _invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@cpu_only
def test_build_engine_without_tensorrt_exits_2_in_one_line_and_writes_nothing(googlenet_onnx, tmp_path):
    plan = tmp_path / "out" / "googlenet.plan"
    cache = tmp_path / "timing.cache"
    result = _invoke("build-engine", googlenet_onnx, "-o", plan, "--timing-cache", cache)
    assert result.exit_code == 2
    assert result.output == f"error: build-engine {NOTHING_HERE}\n"
    assert not plan.exists() and not manifest_path(plan).exists() and not cache.exists()
    assert not plan.parent.exists()


@pytest.mark.parametrize("flag,fix", [
    ("--int8", "but --int8 needs a Q/DQ graph (TensorRT 11 has no INT8 flag or calibrator): make one with "
               "`inception-deploy quantize {onnx} --int8 --calib-data DIR` from the FP32 model and build that"),
    ("--fp16", "but --fp16 needs an FP16 graph (strongly typed TensorRT has no FP16 flag): make one with "
               "`inception-deploy quantize {onnx} --fp16` and build that"),
])
def test_precision_flag_on_an_fp32_graph_names_the_command_that_makes_it(googlenet_onnx, tmp_path, flag, fix):
    plan = tmp_path / "g.plan"
    result = _invoke("build-engine", googlenet_onnx, flag, "-o", plan)
    assert result.exit_code == 2
    assert result.output == (f"error: {googlenet_onnx} is an FP32 graph (no QuantizeLinear/DequantizeLinear, no FP16 "
                             f"tensors), {fix.format(onnx=googlenet_onnx)}; no engine was built\n")
    assert not plan.exists()


def test_int8_flag_on_an_fp16_graph_is_refused(tmp_path):
    path = tmp_path / "g.fp16.onnx"
    onnx.save(fp16_model(), path)
    result = _invoke("build-engine", path, "--int8")
    assert result.exit_code == 2
    assert result.output.startswith(f"error: {path} is an FP16 graph, but --int8 needs a Q/DQ graph")
    assert not (tmp_path / "g.fp16.plan").exists()


def test_build_engine_lints_first(tmp_path):
    path = tmp_path / "bad.int8.onnx"
    onnx.save(qdq_model(x_zero_point=3), path)
    result = _invoke("build-engine", path, "--int8", "--target", "tensorrt-10")
    assert result.exit_code == 2
    assert result.output == (
        f"error: {path}: 2 lint error(s) for tensorrt-10.16, first: QuantizeLinear 'q_x': zero point 'x_zp' holds 3; "
        "TensorRT quantizes symmetrically and rejects a non-zero zero point [qdq-zero-point]; see all with "
        f"`inception-deploy lint {path} --target tensorrt-10`\n")


@cpu_only
@pytest.mark.parametrize("make,flag", [(fp16_model, "--fp16"), (qdq_model, "--int8")])
def test_right_graph_and_flag_reach_the_tensorrt_check(tmp_path, make, flag):
    path = tmp_path / "m.onnx"
    onnx.save(make(), path)
    result = _invoke("build-engine", path, flag)
    assert (result.exit_code, result.output) == (2, f"error: build-engine {NOTHING_HERE}\n")
    assert list(tmp_path.iterdir()) == [path]


def test_build_engine_input_errors(googlenet_onnx, tmp_path):
    assert _invoke("build-engine", tmp_path / "none.onnx").output == (
        f"error: {tmp_path / 'none.onnx'}: no such ONNX file; pass the path of an .onnx model\n")
    result = _invoke("build-engine", googlenet_onnx, "-o", tmp_path / "g.onnx.bin")
    assert (result.exit_code, result.output) == (2, f"error: {tmp_path / 'g.onnx.bin'}: a TensorRT plan must end in "
                                                    ".plan or .engine (validate and benchmark pick the TensorRT runner "
                                                    "by it)\n")
    result = _invoke("build-engine", googlenet_onnx, "--min-batch", "16", "--max-batch", "4")
    assert (result.exit_code, result.output) == (2, "error: batch range min=16 opt=8 max=4 (flags over recipe): batch "
                                                    "range needs min <= opt <= max; set --min-batch/--opt-batch/"
                                                    "--max-batch together\n")
    result = _invoke("build-engine", googlenet_onnx, "--fp16", "--int8")
    assert (result.exit_code, result.output) == (2, "error: give --fp16 or --int8, not both: the graph has one "
                                                    "precision\n")


# --- the runner and the manifest -------------------------------------------------------------

@cpu_only
def test_plan_runner_without_tensorrt_raises_missing_dependency(tmp_path):
    from inception_deploy.backends import open_runner

    plan = tmp_path / "x.plan"
    plan.write_bytes(b"not really a plan")
    runner = open_runner(plan)
    assert runner.name == "tensorrt"
    with pytest.raises(MissingDependency) as caught:
        with runner:
            pass
    assert str(caught.value) == f"running {plan} {NOTHING_HERE}"


def _manifest(**changes):
    fields = dict(tensorrt_version="10.16.1", gpu_name="NVIDIA H100 80GB HBM3", compute_capability="9.0",
                  precision="int8", onnx_path="out/g.int8.onnx", onnx_sha256="ab" * 32, plan_sha256="cd" * 32,
                  inputs=["input"], outputs=["logits"], workspace_mb=4096, optimization_level=3,
                  lint_target="tensorrt-10.16", build_seconds=12.5, built_at="2025-01-01T00:00:00+00:00",
                  profile={"input": {"min": [1, 3, 64, 64], "opt": [8, 3, 64, 64], "max": [64, 3, 64, 64]}})
    fields.update(changes)
    return EngineManifest(**fields)


def test_manifest_round_trip_beside_the_plan(tmp_path):
    plan = tmp_path / "g.int8.plan"
    write_manifest(plan, _manifest(recipe="googlenet-digits"))
    assert manifest_path(plan) == tmp_path / "g.int8.plan.json"
    loaded = read_manifest(plan)
    assert loaded.tensorrt_version == "10.16.1" and loaded.model_dump()["recipe"] == "googlenet-digits"
    assert read_manifest(tmp_path / "other.plan") is None
    manifest_path(plan).write_text("{}")
    with pytest.raises(UserError, match=r"g.int8.plan.json: not a valid engine manifest \(Field required\)"):
        read_manifest(plan)


def test_runner_refuses_a_plan_from_another_tensorrt_and_gpu():
    manifest = _manifest()
    check_runtime_compatibility("g.plan", manifest, "cd" * 32, "10.16.1", "NVIDIA H100 80GB HBM3", "9.0")
    with pytest.raises(UserError) as caught:
        check_runtime_compatibility("g.plan", manifest, "cd" * 32, "11.4.0", "NVIDIA A100-SXM4-40GB", "8.0")
    assert str(caught.value) == (
        "g.plan was built by TensorRT 10.16.1 on NVIDIA H100 80GB HBM3 (sm 9.0); this machine has TensorRT 11.4.0 on "
        "NVIDIA A100-SXM4-40GB (sm 8.0) (TensorRT version and GPU differ): rebuild it here with "
        "`inception-deploy build-engine out/g.int8.onnx`")
    with pytest.raises(UserError, match=r"\(GPU differs\)"):
        check_runtime_compatibility("g.plan", manifest, "cd" * 32, "10.16.1", "NVIDIA L4", "8.9")
    with pytest.raises(UserError, match=r"\(TensorRT version differs\)"):
        check_runtime_compatibility("g.plan", manifest, "cd" * 32, "10.16.0", "NVIDIA H100 80GB HBM3", "9.0")
    with pytest.raises(UserError, match=r"g.plan.json describes another plan"):
        check_runtime_compatibility("g.plan", manifest, "ef" * 32, "10.16.1", "NVIDIA H100 80GB HBM3", "9.0")


# --- on a GPU machine: build, run, compare with PyTorch ---------------------------------------
# These run the commands of the README's "On a GPU machine" section. They never run on the CPU-only machines of CI.

def gpu_only(test):
    """Marked `gpu`, and skipped before any fixture (training, quantizing) runs where TensorRT or a GPU is missing."""
    return pytest.mark.gpu(pytest.mark.skipif(not GPU_READY, reason=GPU_REASON)(test))


def _command(*args):
    """Run a CLI command; skip while a stage another issue delivers is not registered yet."""
    if main.get_command(None, args[0]) is None:
        pytest.skip(f"`inception-deploy {args[0]}` is not built yet")
    result = _invoke(*args)
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def quantized_graphs(digits_onnx, tmp_path_factory):
    """The trained digits GoogLeNet as FP16 and INT8 (Q/DQ) graphs, made by `inception-deploy quantize`."""
    out = tmp_path_factory.mktemp("engines")
    fp16, int8 = out / "googlenet-digits.fp16.onnx", out / "googlenet-digits.int8.onnx"
    _command("quantize", digits_onnx, "--fp16", "-o", fp16)
    _command("quantize", digits_onnx, "--int8", "--calib-data", "digits-train", "-o", int8)
    return {"fp16": fp16, "int8": int8}


@pytest.fixture(scope="module")
def inception_v3_graphs(inception_v3_random_export, tmp_path_factory):
    """Inception v3 at 299 (random weights, BN re-estimated: engine parity, not accuracy) as FP16 and INT8."""
    out = tmp_path_factory.mktemp("engines-v3")
    graph = inception_v3_random_export.path
    fp16, int8 = out / "inception_v3.fp16.onnx", out / "inception_v3.int8.onnx"
    _command("quantize", graph, "--fp16", "--recipe", "inception_v3", "--calib-data", "synthetic:16",
             "--calib-count", "16", "-o", fp16)
    _command("quantize", graph, "--int8", "--recipe", "inception_v3", "--calib-data", "digits-train",
             "--calib-count", "64", "-o", int8)
    return {"fp16": fp16, "int8": int8}


def _engine_vs_pytorch(graph, precision, recipe_name, reference_module, inputs, tmp_path):
    from inception_deploy.backends import open_runner
    from inception_deploy.backends.torch_backend import TorchRunner

    plan = tmp_path / f"{recipe_name}.{precision}.plan"
    cache = tmp_path / "timing.cache"
    result = _command("build-engine", graph, f"--{precision}", "--recipe", recipe_name, "-o", plan,
                      "--timing-cache", cache)
    assert f"PASSED | precision {precision.upper()}" in result.output
    manifest = read_manifest(plan)
    assert manifest.precision == precision and cache.is_file()
    # The second build reuses the timing cache.
    _command("build-engine", graph, f"--{precision}", "--recipe", recipe_name, "-o", tmp_path / "again.plan",
             "--timing-cache", cache)
    with open_runner(plan) as engine, TorchRunner(reference_module) as reference:
        got, want = engine.infer({"input": inputs})["logits"], reference.infer({"input": inputs})["logits"]
        single = engine.infer({"input": inputs[:1]})["logits"]  # the batch profile starts at 1
    assert got.shape == want.shape and single.shape == (1, want.shape[1])
    agreement = float(np.mean(got.argmax(1) == want.argmax(1)))
    cosine = float(np.sum(got * want) / (np.linalg.norm(got) * np.linalg.norm(want)))
    return manifest, got, want, agreement, cosine


@gpu_only
@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_gpu_build_run_and_parity_with_pytorch(precision, quantized_graphs, digits_export, tmp_path):
    from inception_deploy.export import parity_inputs

    x = parity_inputs(digits_export.recipe, 16)  # real held-out digits
    manifest, got, want, agreement, cosine = _engine_vs_pytorch(
        quantized_graphs[precision], precision, "googlenet-digits", digits_export.reference.module, x, tmp_path)
    assert manifest.profile["input"]["max"] == [64, 3, 64, 64]
    if precision == "fp16":
        assert np.max(np.abs(got - want)) < 0.05 * np.max(np.abs(want)) and agreement >= 0.99
    else:
        assert cosine > 0.98 and agreement >= 0.9


@gpu_only
@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_gpu_inception_v3_engines_match_pytorch(precision, inception_v3_graphs, inception_v3_random_export, tmp_path):
    from inception_deploy.export import parity_inputs

    x = parity_inputs(inception_v3_random_export.recipe, 8)
    _, got, want, agreement, cosine = _engine_vs_pytorch(
        inception_v3_graphs[precision], precision, "inception_v3", inception_v3_random_export.reference.module, x, tmp_path)
    assert cosine > (0.999 if precision == "fp16" else 0.95)


@gpu_only
@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_gpu_validate_and_benchmark_a_plan(precision, quantized_graphs, tmp_path):
    plan = tmp_path / f"googlenet-digits.{precision}.plan"
    _command("build-engine", quantized_graphs[precision], f"--{precision}", "--recipe", "googlenet-digits", "-o", plan)
    _command("validate", "--recipe", "googlenet-digits", "--target", plan, "--data", "digits-holdout")
    _command("benchmark", plan)
