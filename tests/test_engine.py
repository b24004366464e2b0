"""Tests for build-engine's CPU side, the layer-report parser, the precision truth check, the plan
report, the plan manifest and the runner's refusals (stage: build-engine, runtime).

The layer-report tests read real reports TensorRT-RTX wrote on this machine (tests/data/engine,
made by make_samples.py from the digits GoogLeNet and the lint tests' Q/DQ block). The
inspector-JSON tests read the 10.x and 11.x layouts NVIDIA documents: a real inspector report
needs the engine deserialized, which needs a GPU. Real builds are in test_engine_rtx.py; tests
marked `gpu` build, run and compare plans and skip where no GPU is.
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from inception_deploy.cli import main
from inception_deploy.engine import (TENSORRT, TENSORRT_RTX, EngineManifest, check_precision, classify_graph,
                                     manifest_path, parse_builder_log, parse_inspector_json, read_manifest)
from inception_deploy.engine.build import profile_shapes
from inception_deploy.engine.cuda_memory import cuda_available
from inception_deploy.engine.flavours import choose_flavour, parse_compute_capabilities
from inception_deploy.engine.graph_precision import check_requested_precision
from inception_deploy.engine.layer_report import datatype_of, parse_record
from inception_deploy.engine.manifest import check_runtime_compatibility, write_manifest
from inception_deploy.engine.plan_report import describe_plan
from inception_deploy.engine.precision_check import precision_failure_message
from inception_deploy.engine.trt_build import ParserIssue, describe_parser_issues
from inception_deploy.errors import MissingDependency, UserError
from inception_deploy.lint.graph import GraphView
from inception_deploy.recipes import BatchRange
from inception_deploy.validate.layerwise import module_path

from test_lint import fp16_model, googlenet_onnx, qdq_model  # noqa: F401 (googlenet_onnx is a fixture)

SAMPLES = Path(__file__).parent / "data" / "engine"
NO_GPU = "an NVIDIA GPU (torch.cuda.is_available() is False)"
NOTHING_HERE = (f"needs TensorRT-RTX, or TensorRT and an NVIDIA GPU; missing here: TensorRT-RTX (Python package "
                f"'tensorrt_rtx'), TensorRT (Python package 'tensorrt') and {NO_GPU}. Install with pip install -e "
                "'.[rtx]' (builds on any machine, no GPU needed), or pip install -e '.[tensorrt]' on a machine with an "
                "NVIDIA GPU")
needs_no_gpu = pytest.mark.skipif(cuda_available(), reason="checks the messages of a machine without a GPU")


def sample(name: str) -> str:
    path = SAMPLES / name
    return gzip.open(path, "rt").read() if path.suffix == ".gz" else path.read_text()


def graph_facts(precision: str) -> dict:
    return json.loads((SAMPLES / "googlenet-digits.graphs.json").read_text())[precision]


@pytest.fixture
def no_tensorrt(monkeypatch):
    """This machine as one without any TensorRT: both modules made unimportable for the test."""
    for module in ("tensorrt", "tensorrt_rtx"):
        monkeypatch.setitem(sys.modules, module, None)
    assert not TENSORRT.installed() and not TENSORRT_RTX.installed()


# --- the builder's layer report (real, from TensorRT-RTX) -----------------------------------------

def test_datatype_words():
    assert [datatype_of(s) for s in (
        "Int8", "Half", "Float", "Thirty-two wide channel vectorized row major Int8 format.",
        "Row major linear FP16 format (kLINEAR)", "Channel major FP16 format where channel % 8 == 0",
        "Row major linear FP32", "Row major linear BFloat16 format", "Row major linear UInt8 format",
        "(NHWC) Channel major format", None)] == [
        "INT8", "FP16", "FP32", "INT8", "FP16", "FP16", "FP32", "BF16", "UINT8", "UNKNOWN", "UNKNOWN"]


def test_record_parser_reads_nested_lists_names_with_brackets_and_metadata():
    record = parse_record(
        "Name: __myl_FcAddRelu_myl0_164, LayerType: runtime_fusion, Inputs: [ { Name: (Unnamed Layer* 3) "
        "[Shuffle]_output, Dimensions: [-1,832,4], Datatype: Half, Format: (Transposed) Transposed format }], "
        "Constants: [], Outputs: [ { Name: y, Dimensions: [-1,384,4], Datatype: Half, Format: (Linear) Row major "
        "linear format }], TacticName: , StreamId: 3, Metadata: [ONNX Layer: /a/conv/Conv][ONNX Layer: /a/Relu]"
        "__gemm_from_conv1x1")
    assert record["Inputs"] == [{"Name": "(Unnamed Layer* 3) [Shuffle]_output", "Dimensions": [-1, 832, 4],
                                 "Datatype": "Half", "Format": "(Transposed) Transposed format"}]
    assert record["Constants"] == [] and record["TacticName"] == "" and record["StreamId"] == "3"
    assert record["Metadata"] == "[ONNX Layer: /a/conv/Conv][ONNX Layer: /a/Relu]__gemm_from_conv1x1"


def test_builder_log_of_the_qdq_block():
    report = parse_builder_log(sample("qdq-block.int8.rtx.log"))
    assert report.source == "TensorRT-RTX builder log"
    assert (report.weights_bytes, report.activation_bytes) == (2980, 8273920)
    assert [(t.name, t.datatype, t.dims) for t in report.io_tensors] == [
        ("x", "FP32", (-1, 3, 8, 8)), ("y", "FP32", (-1, 8, 8, 8))]
    assert len(report.layers) == 7  # one shape call, left out of engine_layers
    assert [(l.kind, l.data_type, l.weights_type, l.output_type, l.onnx_nodes) for l in report.engine_layers] == [
        ("fused", "FP32", "FP32", "INT8", ("q_x", "conv1", "dq_x", "dq_w1")),  # quantizes the input
        ("convolution", "INT8", "INT8", "FP32", ("conv1", "dq_x", "dq_w1")),
        ("fused", "FP32", "FP32", "INT8", ("conv1", "q_r1", "relu1")),  # bias, Relu, requantize
        ("convolution", "INT8", "INT8", "FP32", ("convA", "dq_r1", "dq_wa")),
        ("pooling", "INT8", "FP32", "INT8", ("dq_r1", "pool", "q_b")),  # MaxPool in INT8
        ("fused", "INT8", "FP32", "FP32", ("convA", "q_a", "reluA", "dq_a", "concat"))]
    assert report.engine_layers[1].name == "conv1_myl0_2" and report.engine_layers[1].layer_type == "correlation"


def test_builder_log_of_the_digits_googlenet_int8_and_fp16():
    int8 = parse_builder_log(sample("googlenet-digits.int8.rtx.log.gz"))
    compute = [l for l in int8.engine_layers if l.is_compute]
    assert sum(l.kind == "convolution" for l in compute) == 57
    assert {(l.data_type, l.weights_type) for l in compute if l.kind == "convolution"} == {("INT8", "INT8")}
    assert [(l.name, l.data_type) for l in compute if l.kind == "gemm"] == [("__myl_FcAdd_myl0_183", "FP32")]
    assert (int8.weights_bytes, int8.activation_bytes) == (5725960, 48988160)
    fp16 = parse_builder_log(sample("googlenet-digits.fp16.rtx.log.gz"))
    compute = [l for l in fp16.engine_layers if l.is_compute]
    assert {(l.data_type, l.weights_type) for l in compute} == {("FP16", "FP16")}
    # TensorRT-RTX runs one 1x1 convolution as a GEMM kernel; it still counts as that Conv's layer.
    assert [l.onnx_nodes for l in compute if l.layer_type == "runtime_fusion"][0] == (
        "/inception5b/branch1/conv/Conv", "/inception5b/branch1/Relu")


def test_a_log_without_a_layer_report_is_refused():
    with pytest.raises(UserError, match="the builder log has no layer report; build with ProfilingVerbosity.DETAILED"):
        parse_builder_log(["Total Weights Memory: 10 bytes"])


# --- the engine inspector's JSON (TensorRT 10.x and 11.x, on a GPU) --------------------------------

# TensorRT 10.x layout, as NVIDIA's developer guide shows it (engine built with DETAILED): one
# "Format/Datatype" string per tensor, Weights/Bias {Type, Count}, \x1e between fused ONNX layers, "Bindings".
INSPECTOR_10 = {
    "Layers": [
        {"Name": "/conv1/conv/Conv + /conv1/Relu", "LayerType": "CaskConvolution", "ParameterType": "Convolution",
         "Inputs": [{"Name": "input", "Location": "Device", "Dimensions": [8, 3, 64, 64],
                     "Format/Datatype": "Thirty-two wide channel vectorized row major Int8 format."}],
         "Outputs": [{"Name": "/conv1/Relu_output_0", "Location": "Device", "Dimensions": [8, 64, 32, 32],
                      "Format/Datatype": "Thirty-two wide channel vectorized row major Int8 format."}],
         "Weights": {"Type": "Int8", "Count": 9408}, "Bias": {"Type": "Float", "Count": 64},
         "TacticName": "sm80_xmma_fprop_implicit_gemm_interleaved_i8i8_i8i32_f32_nchw_vect_c_32kcrs_vect_c_32",
         "Metadata": "[ONNX Layer: /conv1/conv/Conv]\x1e[ONNX Layer: /conv1/Relu]"},
        {"Name": "/maxpool1/MaxPool", "LayerType": "CaskPooling", "ParameterType": "Pooling",
         "Inputs": [{"Name": "/conv1/Relu_output_0", "Format/Datatype": "Thirty-two wide channel vectorized row major "
                                                                       "Int8 format."}],
         "Outputs": [{"Name": "/maxpool1/MaxPool_output_0", "Format/Datatype": "Row major linear FP32"}],
         "Metadata": "[ONNX Layer: /maxpool1/MaxPool]"},
        {"Name": "/conv2/conv/Conv + /conv2/Relu", "LayerType": "CaskConvolution", "ParameterType": "Convolution",
         "Inputs": [{"Name": "/maxpool1/MaxPool_output_0", "Format/Datatype": "Row major linear FP32"}],
         "Outputs": [{"Name": "/conv2/Relu_output_0", "Format/Datatype": "Row major linear FP32"}],
         "Weights": {"Type": "Float", "Count": 4096}, "Bias": {"Type": "Float", "Count": 64}},
    ],
    "Bindings": ["input", "logits"],
}


def test_inspector_json_10x_layout():
    report = parse_inspector_json(json.dumps(INSPECTOR_10))
    assert report.source == "inspector JSON (TensorRT 10.x)"
    assert [t.name for t in report.io_tensors] == ["input", "logits"]
    assert [(l.kind, l.data_type, l.weights_type, l.onnx_nodes) for l in report.layers] == [
        ("convolution", "INT8", "INT8", ("/conv1/conv/Conv", "/conv1/Relu")),
        ("pooling", "INT8", None, ("/maxpool1/MaxPool",)),
        ("convolution", "FP32", "FP32", ("/conv2/conv/Conv", "/conv2/Relu"))]  # no Metadata: from the name


def test_inspector_json_11x_layout_gives_what_the_builder_log_gives():
    """11.x splits "Format/Datatype" into "Format" and "DataType" and has "I/O Tensors" objects: the same
    keys the TensorRT-RTX builder writes as text. The real qdq-block report, as 11.x JSON, parses alike."""
    lines = sample("qdq-block.int8.rtx.log").splitlines()
    layers = [parse_record(line) for line in lines if line.startswith("Name: ")]
    io = [parse_record(line) for line in lines if line.startswith(" Name: ")]
    for tensor in (t for layer in layers for key in ("Inputs", "Outputs", "Constants") for t in layer[key]):
        tensor["DataType"] = tensor.pop("Datatype")
    from_json = parse_inspector_json(json.dumps({"Layers": layers, "I/O Tensors": io}))
    from_log = parse_builder_log(lines)
    assert from_json.source == "inspector JSON (TensorRT 11.x)"
    assert from_json.layers == from_log.layers and from_json.io_tensors == from_log.io_tensors


def test_layer_names_only_cannot_be_checked():
    with pytest.raises(UserError, match="lists layer names only; build with ProfilingVerbosity.DETAILED"):
        parse_inspector_json('{"Layers": ["conv1", "relu1"], "Bindings": ["input"]}')


# --- the precision truth check on real reports -----------------------------------------------------

def _modules(facts: dict) -> dict:
    return {node: module_path(node) for node in facts["op_types"] if node.startswith("/")}


def test_truth_check_passes_on_the_real_int8_and_fp16_reports():
    facts = graph_facts("int8")
    report = check_precision(parse_builder_log(sample("googlenet-digits.int8.rtx.log.gz")), "int8",
                             facts["node_precisions"], _modules(facts))
    assert report, report.lines()
    assert report.summary() == "PASSED | precision INT8 | 58 Conv/Gemm checked in the engine: 1 FP32, 57 INT8"
    assert report.verdicts[1].line() == (
        "ok   | /conv2/conv/Conv | conv2 | /conv2/conv/Conv_myl0_5 | data INT8 | weights INT8 | asks INT8")
    fp16 = graph_facts("fp16")
    report = check_precision(parse_builder_log(sample("googlenet-digits.fp16.rtx.log.gz")), "fp16",
                             fp16["node_precisions"])
    assert report.summary() == "PASSED | precision FP16 | 58 Conv/Gemm checked in the engine: 58 FP16"


def _doctored(name: str, layer: str, old: str, new: str) -> str:
    """The real report with one layer's input datatype changed (its first 'Datatype: old')."""
    lines = sample(name).splitlines()
    index = next(i for i, line in enumerate(lines) if line.startswith(f"Name: {layer},"))
    lines[index] = lines[index].replace(f"Datatype: {old}", f"Datatype: {new}", 1)
    return "\n".join(lines)


def test_one_float_convolution_in_an_int8_engine_fails_naming_layer_nodes_and_module():
    facts = graph_facts("int8")
    doctored = parse_builder_log(_doctored("googlenet-digits.int8.rtx.log.gz", "/conv2/conv/Conv_myl0_5", "Int8",
                                           "Float"))
    report = check_precision(doctored, "int8", facts["node_precisions"], _modules(facts))
    assert not report
    assert [v.line() for v in report.failures] == [
        "FAIL | /conv2/conv/Conv | conv2 | /conv2/conv/Conv_myl0_5 | data FP32 | weights INT8 | asks INT8"]
    assert report.summary() == ("FAILED | precision INT8 | 58 Conv/Gemm checked in the engine: 2 FP32, 56 INT8 | "
                                "1 wider than the graph asks")
    assert precision_failure_message("out/g.int8.plan", report) == (
        "out/g.int8.plan not written: 1 of 58 Conv/Gemm run wider than the graph asks (first: ONNX /conv2/conv/Conv "
        "asks INT8; engine layer '/conv2/conv/Conv_myl0_5' (correlation) reads FP32 data and INT8 weights, fusing "
        "ONNX /conv2/conv/Conv, maxpool1_MaxPool_output_0_DequantizeLinear, onnx__Conv_565_DequantizeLinear "
        "(PyTorch module conv2)); check the Q/DQ or FP16 casts around it with `inception-deploy lint`")


def test_one_float_convolution_in_an_fp16_engine_fails():
    doctored = parse_builder_log(_doctored("googlenet-digits.fp16.rtx.log.gz", "/conv2/conv/Conv_myl0_6", "Half",
                                           "Float"))
    report = check_precision(doctored, "fp16", graph_facts("fp16")["node_precisions"])
    assert [(v.node, v.data, v.weights) for v in report.failures] == [("/conv2/conv/Conv", "FP32", "FP16")]


def test_nodes_the_graph_keeps_float_are_allowed_and_unnamed_nodes_fail():
    report = parse_builder_log(sample("qdq-block.int8.rtx.log"))
    assert check_precision(report, "int8", {"conv1": "INT8", "convA": "FP32"})
    missing = check_precision(report, "int8", {"conv1": "INT8", "convA": "INT8", "convB": "INT8"})
    assert [v.where() for v in missing.failures] == ["ONNX convB: no convolution/GEMM engine layer names it"]


# --- the plan report ---------------------------------------------------------------------------------

def test_plan_report_of_the_qdq_block():
    layers = parse_builder_log(sample("qdq-block.int8.rtx.log"))
    view = GraphView(qdq_model())
    truth = check_precision(layers, "int8", classify_graph(view).node_precisions)
    plan = describe_plan(layers, view, truth, builder="TensorRT-RTX 1.7.1.116", targets=["sm86"], plan_bytes=123456,
                         build_seconds=0.51)
    assert [(a.name, a.does) for a in plan.added] == [("__myl_MulMinMaxRounCastReplConc_myl0_1",
                                                       "quantize FP32 -> INT8")]
    assert [(c.node, c.removed, c.rescaled) for c in plan.concats] == [("concat", True, None)]
    assert (plan.convolutions, plan.layers_by_datatype) == ({"INT8": 2}, {"FP32": 2, "INT8": 4})
    assert plan.lines() == [
        "builder                         TensorRT-RTX 1.7.1.116 for sm86",
        "plan                            0.12 MB, built in 0.5 s",
        "weights memory                  0.00 MB",
        "activation memory               8.27 MB",
        "engine layers by datatype read  6: 4 INT8, 2 FP32",
        "convolutions (ONNX Conv)        2 INT8",
        "GEMMs (ONNX Gemm/MatMul)        none",
        "layers the builder added        1: 1 quantize FP32 -> INT8",
        "Concats removed                 1 of 1; requantized at 0"]
    assert plan.layers[1] == {"layer": "conv1_myl0_2", "type": "correlation", "kind": "convolution", "reads": "INT8",
                              "weights": "INT8", "writes": "FP32", "onnx_nodes": ["conv1", "dq_x", "dq_w1"],
                              "modules": []}


# --- what precision a graph asks for -----------------------------------------------------------------

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
    assert describe_parser_issues("m.onnx", "TensorRT-RTX 1.7.1.116", issues) == (
        "m.onnx: TensorRT-RTX 1.7.1.116's ONNX parser rejected 2 node(s): Conv '/conv1/conv/Conv' (node 3): Invalid "
        "weights; Unique 'uniq' (node 7): No importer registered for op: Unique; see `inception-deploy lint m.onnx`")


# --- builders and targets ----------------------------------------------------------------------------

def test_compute_capabilities():
    assert parse_compute_capabilities(None) == ("sm80", "sm86", "sm89", "sm120")
    assert parse_compute_capabilities("86, SM89,8.6,120") == ("sm86", "sm89", "sm120")
    with pytest.raises(UserError) as caught:
        parse_compute_capabilities("sm86,sm90")
    assert str(caught.value) == ("--compute-capability 'sm90' is not a TensorRT-RTX target; choose from sm75, sm80, "
                                 "sm86, sm89, sm120, sm121 (Hopper sm90 needs TensorRT 10/11: --builder tensorrt on "
                                 "that GPU)")


@needs_no_gpu
def test_builder_choice_without_a_gpu(no_tensorrt):
    with pytest.raises(MissingDependency) as caught:
        choose_flavour("auto")
    assert str(caught.value) == f"build-engine {NOTHING_HERE}"
    with pytest.raises(MissingDependency) as caught:
        choose_flavour("tensorrt")
    assert str(caught.value) == (f"build-engine --builder tensorrt needs TensorRT and an NVIDIA GPU; missing here: "
                                 f"TensorRT (Python package 'tensorrt') and {NO_GPU}. Install with pip install -e "
                                 "'.[tensorrt]' on a machine with an NVIDIA GPU")
    with pytest.raises(UserError, match="--compute-capability names TensorRT-RTX targets; TensorRT builds for the GPU"):
        choose_flavour("tensorrt", compute_capabilities=True)
    # a hardware-compatibility level is TensorRT's: auto asks for TensorRT and says what is missing
    with pytest.raises(MissingDependency) as caught:
        choose_flavour("auto", hardware_compatibility=True)
    assert str(caught.value).startswith("build-engine --builder tensorrt needs TensorRT and an NVIDIA GPU; missing here")
    with pytest.raises(UserError) as caught:
        choose_flavour("tensorrt-rtx", hardware_compatibility=True)
    assert str(caught.value) == (
        "--hardware-compatibility is a TensorRT 10/11 build setting; TensorRT-RTX plans name their target GPUs with "
        "--compute-capability (use --builder tensorrt on a GPU machine, or drop --hardware-compatibility)")
    with pytest.raises(UserError, match=r"^--compute-capability \(TensorRT-RTX targets\) and --hardware-compatibility"):
        choose_flavour("auto", compute_capabilities=True, hardware_compatibility=True)


@needs_no_gpu
def test_build_engine_with_a_hardware_compatibility_level_needs_tensorrt(googlenet_onnx, tmp_path, no_tensorrt):
    plan = tmp_path / "g.plan"
    result = CliRunner().invoke(main, ["build-engine", str(googlenet_onnx), "-o", str(plan),
                                       "--hardware-compatibility", "ampere-plus", "-q"])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: build-engine --builder tensorrt needs TensorRT and an NVIDIA GPU")
    assert not plan.exists() and not (tmp_path / "g.plan.json").exists()


# --- build-engine on a machine without any TensorRT --------------------------------------------------

def _invoke(*args):
    # -q: these tests read the exact error lines; the build's start line is tested in test_engine_rtx.py
    return CliRunner().invoke(main, [*(str(a) for a in args), "-q"])


@needs_no_gpu
def test_build_engine_without_any_tensorrt_exits_2_in_one_line_and_writes_nothing(googlenet_onnx, tmp_path,
                                                                                   no_tensorrt):
    plan = tmp_path / "out" / "googlenet.plan"
    cache = tmp_path / "timing.cache"
    result = _invoke("build-engine", googlenet_onnx, "-o", plan, "--timing-cache", cache)
    assert result.exit_code == 2
    assert result.output == f"error: build-engine {NOTHING_HERE}\n"
    assert not plan.exists() and not manifest_path(plan).exists() and not cache.exists()
    assert not plan.parent.exists()


@needs_no_gpu
@pytest.mark.parametrize("make,flag", [(fp16_model, "--fp16"), (qdq_model, "--int8")])
def test_right_graph_and_flag_reach_the_tensorrt_check(tmp_path, make, flag, no_tensorrt):
    path = tmp_path / "m.onnx"
    onnx.save(make(), path)
    result = _invoke("build-engine", path, flag)
    assert (result.exit_code, result.output) == (2, f"error: build-engine {NOTHING_HERE}\n")
    assert list(tmp_path.iterdir()) == [path]


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
    result = _invoke("build-engine", googlenet_onnx, "--compute-capability", "sm90")
    assert result.exit_code == 2 and result.output.startswith("error: --compute-capability 'sm90' is not a "
                                                              "TensorRT-RTX target")


# --- the runner and the manifest ---------------------------------------------------------------------

@needs_no_gpu
def test_plan_runner_without_tensorrt_raises_missing_dependency(tmp_path, no_tensorrt):
    from inception_deploy.backends import open_runner

    plan = tmp_path / "x.plan"
    plan.write_bytes(b"not really a plan")
    runner = open_runner(plan)
    assert runner.name == "tensorrt"
    with pytest.raises(MissingDependency) as caught:
        with runner:
            pass
    assert str(caught.value) == (f"running {plan} needs TensorRT and an NVIDIA GPU; missing here: TensorRT (Python "
                                 f"package 'tensorrt') and {NO_GPU}. Install with pip install -e '.[tensorrt]' on a "
                                 "machine with an NVIDIA GPU")


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
    assert loaded.builder == "tensorrt"  # manifests written before TensorRT-RTX plans say nothing else
    assert read_manifest(tmp_path / "other.plan") is None
    # the artifact-level reader takes a plan's path too, and gives the same manifest as a dict
    from inception_deploy.manifest import read_manifest as read_any_manifest

    assert read_any_manifest(plan) == loaded.model_dump(mode="json")
    assert read_any_manifest(str(plan))["recipe"] == "googlenet-digits"
    assert read_any_manifest(tmp_path / "other.plan") is None
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


def test_runner_takes_a_hardware_compatible_plan_on_the_gpus_of_its_level():
    ampere_plus = _manifest(hardware_compatibility="ampere-plus")
    assert ampere_plus.targets == "Ampere and newer GPUs (built on NVIDIA H100 80GB HBM3, sm 9.0)"
    check_runtime_compatibility("g.plan", ampere_plus, "cd" * 32, "10.16.1", "NVIDIA L4", "8.9")
    check_runtime_compatibility("g.plan", ampere_plus, "cd" * 32, "10.16.1", "NVIDIA A100-SXM4-80GB", "8.0")
    with pytest.raises(UserError) as caught:
        check_runtime_compatibility("g.plan", ampere_plus, "cd" * 32, "10.16.1", "Tesla T4", "7.5")
    assert str(caught.value) == (
        "g.plan was built by TensorRT 10.16.1 for Ampere and newer GPUs (built on NVIDIA H100 80GB HBM3, sm 9.0); "
        "this machine has TensorRT 10.16.1 on Tesla T4 (sm 7.5) (GPU differs): rebuild it here with "
        "`inception-deploy build-engine out/g.int8.onnx`")
    same_cc = _manifest(hardware_compatibility="same-compute-capability")
    check_runtime_compatibility("g.plan", same_cc, "cd" * 32, "10.16.1", "NVIDIA H200", "9.0")
    with pytest.raises(UserError, match=r"\(GPU differs\)"):
        check_runtime_compatibility("g.plan", same_cc, "cd" * 32, "10.16.1", "NVIDIA L4", "8.9")


def test_runner_takes_an_rtx_plan_on_any_of_its_compute_capabilities():
    manifest = _manifest(builder="tensorrt-rtx", tensorrt_version="1.7.1.116", gpu_name=None, compute_capability=None,
                         compute_capabilities=["sm86", "sm89"])
    check_runtime_compatibility("g.plan", manifest, "cd" * 32, "1.7.1.116", "NVIDIA GeForce RTX 4090", "8.9")
    with pytest.raises(UserError) as caught:
        check_runtime_compatibility("g.plan", manifest, "cd" * 32, "1.7.1.116", "NVIDIA H200", "9.0")
    assert str(caught.value) == (
        "g.plan is a TensorRT-RTX plan for sm86, sm89; this GPU, NVIDIA H200, is sm90: rebuild it with "
        "`inception-deploy build-engine out/g.int8.onnx --builder tensorrt` here (sm90 is not a TensorRT-RTX target: "
        "it needs TensorRT 10/11)")
    with pytest.raises(UserError, match=r"is sm120: rebuild it with `inception-deploy build-engine out/g.int8.onnx "
                                        r"--compute-capability sm120`$"):
        check_runtime_compatibility("g.plan", manifest, "cd" * 32, "1.7.1.116", "NVIDIA GeForce RTX 5090", "12.0")
    with pytest.raises(UserError, match=r"TensorRT-RTX 1.7.1.116 built it, this machine has 1.8.0"):
        check_runtime_compatibility("g.plan", manifest, "cd" * 32, "1.8.0", "NVIDIA GeForce RTX 4090", "8.9")


# --- on a GPU machine: build, run, compare with PyTorch ---------------------------------------
# These run the commands of the README's "On a GPU machine" section. They never run on the CPU-only machines of CI.

def _gpu_builders() -> list[str]:
    """The builders whose plans can run on this machine's GPU."""
    if not cuda_available():
        return []
    from inception_deploy.engine.cuda_memory import gpu_identity
    from inception_deploy.engine.flavours import COMPUTE_CAPABILITIES, capability_of

    found = ["tensorrt"] if TENSORRT.installed() else []
    if TENSORRT_RTX.installed() and capability_of(gpu_identity()[1]) in COMPUTE_CAPABILITIES:
        found.append("tensorrt-rtx")
    return found


GPU_BUILDERS = _gpu_builders()
GPU_REASON = ("needs an NVIDIA GPU with TensorRT (pip install -e '.[tensorrt]'), or one of TensorRT-RTX's target GPUs "
              "with pip install -e '.[rtx]'")
on_gpu_builders = pytest.mark.parametrize(
    "builder", GPU_BUILDERS or [pytest.param("none", marks=pytest.mark.skip(reason=GPU_REASON))])


def gpu_only(test):
    """Marked `gpu`, run once per builder whose plans run here; skipped before any fixture (training,
    quantizing) runs where no GPU is."""
    return pytest.mark.gpu(on_gpu_builders(test))


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


def _build_here(builder, graph, precision, recipe_name, plan, *extra):
    """build-engine for this GPU: TensorRT with a timing cache, TensorRT-RTX for this GPU's compute capability."""
    if builder == "tensorrt-rtx":
        from inception_deploy.engine.cuda_memory import gpu_identity
        from inception_deploy.engine.flavours import capability_of

        extra = ("--compute-capability", capability_of(gpu_identity()[1]))
    return _command("build-engine", graph, f"--{precision}", "--recipe", recipe_name, "-o", plan, "--builder",
                    builder, *extra)


def _engine_vs_pytorch(builder, graph, precision, recipe_name, reference_module, inputs, tmp_path):
    from inception_deploy.backends import open_runner
    from inception_deploy.backends.torch_backend import TorchRunner
    from inception_deploy.engine.rtx_build import runtime_cache_path

    plan = tmp_path / f"{recipe_name}.{precision}.plan"
    cache = tmp_path / "timing.cache"
    result = _build_here(builder, graph, precision, recipe_name, plan, "--timing-cache", cache)
    assert f"PASSED | precision {precision.upper()}" in result.output
    manifest = read_manifest(plan)
    assert manifest.precision == precision and manifest.builder == builder
    if builder == "tensorrt":
        assert cache.is_file()
        # The second build reuses the timing cache.
        _build_here(builder, graph, precision, recipe_name, tmp_path / "again.plan", "--timing-cache", cache)
    with open_runner(plan) as engine, TorchRunner(reference_module) as reference:
        got, want = engine.infer({"input": inputs})["logits"], reference.infer({"input": inputs})["logits"]
        single = engine.infer({"input": inputs[:1]})["logits"]  # the batch profile starts at 1
    assert got.shape == want.shape and single.shape == (1, want.shape[1])
    if builder == "tensorrt-rtx":
        assert runtime_cache_path(plan).is_file()  # the kernels it compiled, for the next run
    agreement = float(np.mean(got.argmax(1) == want.argmax(1)))
    cosine = float(np.sum(got * want) / (np.linalg.norm(got) * np.linalg.norm(want)))
    return manifest, got, want, agreement, cosine


@gpu_only
@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_gpu_build_run_and_parity_with_pytorch(builder, precision, quantized_graphs, digits_export, tmp_path):
    from inception_deploy.export import parity_inputs

    x = parity_inputs(digits_export.recipe, 16)  # real held-out digits
    manifest, got, want, agreement, cosine = _engine_vs_pytorch(
        builder, quantized_graphs[precision], precision, "googlenet-digits", digits_export.reference.module, x, tmp_path)
    assert manifest.profile["input"]["max"] == [64, 3, 64, 64]
    if precision == "fp16":
        assert np.max(np.abs(got - want)) < 0.05 * np.max(np.abs(want)) and agreement >= 0.99
    else:
        assert cosine > 0.98 and agreement >= 0.9


@gpu_only
@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_gpu_inception_v3_engines_match_pytorch(builder, precision, inception_v3_graphs, inception_v3_random_export,
                                                tmp_path):
    from inception_deploy.export import parity_inputs

    x = parity_inputs(inception_v3_random_export.recipe, 8)
    _, got, want, agreement, cosine = _engine_vs_pytorch(
        builder, inception_v3_graphs[precision], precision, "inception_v3", inception_v3_random_export.reference.module, x, tmp_path)
    assert cosine > (0.999 if precision == "fp16" else 0.95)


@gpu_only
@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_gpu_validate_and_benchmark_a_plan(builder, precision, quantized_graphs, tmp_path):
    plan = tmp_path / f"googlenet-digits.{precision}.plan"
    _build_here(builder, quantized_graphs[precision], precision, "googlenet-digits", plan)
    _command("validate", "--recipe", "googlenet-digits", "--target", plan, "--data", "digits-holdout")
    _command("benchmark", plan)  # --backend auto: the builder the plan's manifest names
