"""Tests for the TensorRT-readiness lint (stage: lint): real graphs built with onnx.helper,
each breaking one rule, plus clean FP32 (exported GoogLeNet), FP16 and Q/DQ graphs."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from inception_deploy.cli import main
from inception_deploy.errors import UserError
from inception_deploy.lint import RULES, lint_model

F32, F16, I8 = TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.INT8


# --- graph builders --------------------------------------------------------------------------

def make_model(nodes, inputs, outputs, initializers=(), opset=17, value_info=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers), value_info=list(value_info))
    # onnx 1.23 writes IR 14, which onnxruntime 1.31 refuses.
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)


def tensor(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


def image_input(name="x", channels=3, size=8, batch="batch", elem=F32):
    return helper.make_tensor_value_info(name, elem, [batch, channels, size, size])


def conv_weights(k=4, c=3, kh=3, dtype=np.float32, seed=0):
    return np.random.default_rng(seed).normal(0, 0.2, (k, c, kh, kh)).astype(dtype)


def fp32_conv_model(**conv_attrs):
    conv_attrs.setdefault("pads", [1, 1, 1, 1])
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", kernel_shape=[3, 3], **conv_attrs),
             helper.make_node("Relu", ["c"], ["y"], name="relu")]
    return make_model(nodes, [image_input()], [helper.make_tensor_value_info("y", F32, ["batch", 4, 8, 8])],
                      [tensor("w", conv_weights()), tensor("b", np.zeros(4, np.float32))])


def fp16_model(bias_dtype=np.float16, output_elem=F32):
    """FP32 IO, Cast to FP16 after the input and back before the output: strongly typed FP16."""
    nodes = [helper.make_node("Cast", ["x"], ["x16"], name="cast_in", to=F16),
             helper.make_node("Conv", ["x16", "w", "b"], ["c"], name="conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("Cast", ["r"], ["y"], name="cast_out", to=F32)]
    return make_model(nodes, [image_input()], [helper.make_tensor_value_info("y", output_elem, ["batch", 4, 8, 8])],
                      [tensor("w", conv_weights(dtype=np.float16)), tensor("b", np.zeros(4, bias_dtype))])


def qdq_model(*, x_zero_point=0, weight_scale_len=4, weight_axis=0, concat_scales=(0.05, 0.05), activation_scale=None,
              quantize_data=True, zp_dtype=np.int8, scale_value=0.02):
    """A small Inception-like Q/DQ block that follows TensorRT's rules unless a knob breaks one.

    x -Q/DQ-> conv1(W via DQ, per-channel axis 0) -> relu1 -Q/DQ-> [convA -> reluA | maxpool]
    -> each branch Q/DQ with one shared scale -> Concat -> y
    """
    rng = np.random.default_rng(1)
    w1 = rng.integers(-127, 128, (4, 3, 3, 3)).astype(np.int8)
    wa = rng.integers(-127, 128, (4, 4, 1, 1)).astype(np.int8)
    inits = [
        tensor("x_scale", np.float32(scale_value) if activation_scale is None else activation_scale),
        tensor("x_zp", np.array(x_zero_point, dtype=zp_dtype) if activation_scale is None
               else np.zeros(len(activation_scale), zp_dtype)),
        tensor("w1_q", w1), tensor("w1_scale", np.full(weight_scale_len, 0.01, np.float32)),
        tensor("w1_zp", np.zeros(weight_scale_len, np.int8)), tensor("b1", np.zeros(4, np.float32)),
        tensor("r1_scale", np.float32(0.04)), tensor("zp0", np.int8(0)),
        tensor("wa_q", wa), tensor("wa_scale", np.full(4, 0.01, np.float32)), tensor("wa_zp", np.zeros(4, np.int8)),
        tensor("ba", np.zeros(4, np.float32)),
        tensor("cat_scale_a", np.float32(concat_scales[0])), tensor("cat_scale_b", np.float32(concat_scales[1])),
    ]
    x_attrs = {"axis": 1} if activation_scale is not None else {}
    nodes = []
    if quantize_data:
        nodes += [helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zp"], ["xq"], name="q_x", **x_attrs),
                  helper.make_node("DequantizeLinear", ["xq", "x_scale", "x_zp"], ["xd"], name="dq_x", **x_attrs)]
    nodes += [
        helper.make_node("DequantizeLinear", ["w1_q", "w1_scale", "w1_zp"], ["w1"], name="dq_w1", axis=weight_axis),
        helper.make_node("Conv", ["xd" if quantize_data else "x", "w1", "b1"], ["c1"], name="conv1",
                         kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("QuantizeLinear", ["r1", "r1_scale", "zp0"], ["r1q"], name="q_r1"),
        helper.make_node("DequantizeLinear", ["r1q", "r1_scale", "zp0"], ["r1d"], name="dq_r1"),
        helper.make_node("DequantizeLinear", ["wa_q", "wa_scale", "wa_zp"], ["wa"], name="dq_wa", axis=0),
        helper.make_node("Conv", ["r1d", "wa", "ba"], ["ca"], name="convA", kernel_shape=[1, 1]),
        helper.make_node("Relu", ["ca"], ["ra"], name="reluA"),
        helper.make_node("MaxPool", ["r1d"], ["mp"], name="pool", kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                         strides=[1, 1]),
        helper.make_node("QuantizeLinear", ["ra", "cat_scale_a", "zp0"], ["raq"], name="q_a"),
        helper.make_node("DequantizeLinear", ["raq", "cat_scale_a", "zp0"], ["rad"], name="dq_a"),
        helper.make_node("QuantizeLinear", ["mp", "cat_scale_b", "zp0"], ["mpq"], name="q_b"),
        helper.make_node("DequantizeLinear", ["mpq", "cat_scale_b", "zp0"], ["mpd"], name="dq_b"),
        helper.make_node("Concat", ["rad", "mpd"], ["y"], name="concat", axis=1),
    ]
    return make_model(nodes, [image_input()], [helper.make_tensor_value_info("y", F32, ["batch", 8, 8, 8])], inits)


def errors_of(report):
    return [str(f) for f in report.errors]


# --- clean graphs pass -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def googlenet_onnx(tmp_path_factory):
    """A realistic FP32 Inception graph: GoogLeNet (10 classes) exported at 64x64, dynamic batch."""
    import torch

    from inception_deploy.models import build_model

    path = tmp_path_factory.mktemp("googlenet") / "googlenet.onnx"
    model = build_model("googlenet", num_classes=10).eval()
    torch.onnx.export(model, torch.randn(1, 3, 64, 64), str(path), dynamo=False, opset_version=17,
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, input_names=["input"],
                      output_names=["logits"])
    return path


@pytest.mark.parametrize("target", ["tensorrt", "tensorrt-10", "tensorrt-11"])
def test_exported_googlenet_is_clean(googlenet_onnx, target):
    report = lint_model(googlenet_onnx, target=target)
    assert report, report.lines()
    assert report.findings == []
    assert report.nodes_checked > 150


def test_fp16_graph_with_cast_at_io_is_clean():
    report = lint_model(fp16_model())
    assert report and report.findings == []


def test_qdq_conv_graph_that_follows_the_rules_is_clean_and_runs():
    import onnxruntime as ort

    model = qdq_model()
    report = lint_model(model)
    assert report and report.findings == [], report.lines()
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (y,) = session.run(None, {"x": np.random.default_rng(0).normal(size=(2, 3, 8, 8)).astype(np.float32)})
    assert y.shape == (2, 8, 8, 8)


def test_report_shape():
    report = lint_model(qdq_model(x_zero_point=3))
    assert not report and bool(report) is False
    assert report.target == "tensorrt-11.0" and report.source == "<model>"
    assert report.summary() == "FAILED | <model> | tensorrt-11.0 | 16 nodes, 2 errors, 0 warnings"
    assert report.to_dict()["passed"] is False
    assert {r.id for r in RULES} >= {"op-supported", "qdq-zero-point", "mixed-precision", "dynamic-dims"}


# --- each rule, broken once ------------------------------------------------------------------

def unique_model():
    return make_model([helper.make_node("Unique", ["x"], ["y"], name="uniq")],
                      [helper.make_tensor_value_info("x", F32, [5])], [helper.make_tensor_value_info("y", F32, [None])],
                      opset=21)


def qlinear_conv_model():
    inputs = ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"]
    inits = [tensor("xs", np.float32(0.1)), tensor("xz", np.int8(0)),
             tensor("w", np.ones((4, 3, 3, 3), np.int8)), tensor("ws", np.float32(0.1)), tensor("wz", np.int8(0)),
             tensor("ys", np.float32(0.1)), tensor("yz", np.int8(0))]
    return make_model([helper.make_node("QLinearConv", inputs, ["y"], name="qconv")],
                      [helper.make_tensor_value_info("x", I8, [1, 3, 8, 8])],
                      [helper.make_tensor_value_info("y", I8, [1, 4, 6, 6])], inits)


def custom_domain_model():
    node = helper.make_node("FancyPool", ["x"], ["y"], name="fancy", domain="com.example")
    graph = helper.make_graph([node], "g", [image_input()], [helper.make_tensor_value_info("y", F32, ["batch", 3, 8, 8])])
    return helper.make_model(graph, ir_version=10, opset_imports=[helper.make_opsetid("", 17),
                                                                  helper.make_opsetid("com.example", 1)])


def relu_model(opset=17, op="Relu"):
    return make_model([helper.make_node(op, ["x"], ["y"], name=op.lower())], [image_input()],
                      [helper.make_tensor_value_info("y", F32, ["batch", 3, 8, 8])], opset=opset)


def uint8_concat_model():
    return make_model([helper.make_node("Concat", ["a", "b"], ["y"], name="cat", axis=0)],
                      [helper.make_tensor_value_info("a", TensorProto.UINT8, [2]),
                       helper.make_tensor_value_info("b", TensorProto.UINT8, [2])],
                      [helper.make_tensor_value_info("y", TensorProto.UINT8, [4])])


def cast_to_int8_model():
    return make_model([helper.make_node("Cast", ["x"], ["y"], name="to_int8", to=I8)], [image_input()],
                      [helper.make_tensor_value_info("y", I8, ["batch", 3, 8, 8])])


def short_bias_model():
    model = fp32_conv_model()
    model.graph.initializer[1].CopyFrom(tensor("b", np.zeros(3, np.float32)))
    return model


def pool_model(dilations=(2, 2), indices=True):
    outputs = ["y", "idx"] if indices else ["y"]
    size = 4 if dilations else 7
    nodes = [helper.make_node("MaxPool", ["x"], outputs, name="pool", kernel_shape=[2, 2],
                              **({"dilations": list(dilations)} if dilations else {}))]
    values = [helper.make_tensor_value_info("y", F32, ["batch", 3, size, size])]
    if indices:
        values.append(helper.make_tensor_value_info("idx", TensorProto.INT64, ["batch", 3, size, size]))
    return make_model(nodes, [image_input()], values)


def training_dropout_model():
    nodes = [helper.make_node("Dropout", ["x", "ratio", "training"], ["y"], name="drop")]
    return make_model(nodes, [image_input()], [helper.make_tensor_value_info("y", F32, ["batch", 3, 8, 8])],
                      [tensor("ratio", np.float32(0.5)), tensor("training", np.bool_(True))])


def runtime_axes_model():
    nodes = [helper.make_node("ReduceMean", ["x", "axes"], ["y"], name="mean")]
    return make_model(nodes, [image_input(), helper.make_tensor_value_info("axes", TensorProto.INT64, [2])],
                      [helper.make_tensor_value_info("y", F32, [])], opset=18)


def runtime_scale_model():
    model = qdq_model()
    model.graph.initializer.remove(next(t for t in model.graph.initializer if t.name == "x_scale"))
    model.graph.input.append(helper.make_tensor_value_info("x_scale", F32, []))
    return model


def quantized_output_model():
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"], name="q")]
    return make_model(nodes, [image_input()], [helper.make_tensor_value_info("y", I8, ["batch", 3, 8, 8])],
                      [tensor("s", np.float32(0.1)), tensor("z", np.int8(0))])


def quantized_bias_model():
    model = qdq_model()
    model.graph.initializer.extend([tensor("b1_q", np.zeros(4, np.int32)), tensor("b1_scale", np.full(4, 2e-4, np.float32))])
    model.graph.node.insert(0, helper.make_node("DequantizeLinear", ["b1_q", "b1_scale"], ["b1_dq"], name="dq_b1", axis=0))
    conv1 = next(n for n in model.graph.node if n.name == "conv1")
    conv1.input[2] = "b1_dq"
    return model


def qdq_between_conv_and_relu_model():
    model = fp32_conv_model()
    model.graph.initializer.extend([tensor("s", np.float32(0.1)), tensor("z", np.int8(0))])
    relu = model.graph.node[1]
    model.graph.node.insert(1, helper.make_node("QuantizeLinear", ["c", "s", "z"], ["cq"], name="q_c"))
    model.graph.node.insert(2, helper.make_node("DequantizeLinear", ["cq", "s", "z"], ["cd"], name="dq_c"))
    relu.input[0] = "cd"
    return model


def untyped_fp16_model():
    model = fp16_model()
    model.opset_import.append(helper.make_opsetid("com.example", 1))
    cast_out = model.graph.node[3]
    model.graph.node.insert(3, helper.make_node("Mystery", ["r"], ["m"], name="mystery", domain="com.example"))
    cast_out.input[0] = "m"
    return model


def dynamic_spatial_model():
    return make_model([helper.make_node("Relu", ["x"], ["y"], name="relu")],
                      [helper.make_tensor_value_info("x", F32, ["batch", 3, "h", "w"])],
                      [helper.make_tensor_value_info("y", F32, ["batch", 3, "h", "w"])])


def fixed_batch_reshape_model():
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["y"], name="flatten")]
    return make_model(nodes, [image_input()], [helper.make_tensor_value_info("y", F32, [1, 192])],
                      [tensor("shape", np.array([1, -1], np.int64))])


def invalid_model():
    return make_model([helper.make_node("Relu", ["nowhere"], ["y"], name="relu")], [image_input()],
                      [helper.make_tensor_value_info("y", F32, None)])


def test_unsupported_op():
    model = unique_model()
    assert errors_of(lint_model(model)) == [
        "error: Unique 'uniq': op 'Unique' is not supported by tensorrt-11.0's ONNX parser [op-supported]"]


def test_qoperator_conv_names_the_qdq_form():
    model = qlinear_conv_model()
    assert "error: QLinearConv 'qconv': op 'QLinearConv' is not supported by tensorrt-11.0's ONNX parser; export " \
           "in QDQ form (QuantizeLinear/DequantizeLinear around a float Conv) [op-supported]" in errors_of(lint_model(model))


def test_custom_domain_op_needs_a_plugin():
    model = custom_domain_model()
    assert errors_of(lint_model(model)) == [
        "error: FancyPool 'fancy': op 'com.example::FancyPool' is not an ONNX op tensorrt-11.0 imports; it needs a "
        "TensorRT plugin of that name [op-supported]"]


def test_swish_is_imported_from_tensorrt_11_only():
    model = relu_model(opset=24, op="Swish")
    assert lint_model(model, "tensorrt-11")
    assert errors_of(lint_model(model, "tensorrt-10")) == [
        "error: Swish 'swish': op 'Swish' is not supported by tensorrt-10.16's ONNX parser (imported from TensorRT "
        "11.0) [op-supported]"]


@pytest.mark.parametrize("opset,target,ok", [(8, "tensorrt-11", False), (24, "tensorrt-11", True),
                                             (25, "tensorrt-11", False), (25, "tensorrt-11.5", True),
                                             (25, "tensorrt-10", False)])
def test_opset_range(opset, target, ok):
    model = relu_model(opset=opset)
    report = lint_model(model, target)
    assert bool(report) is ok
    if not ok:
        top = 25 if target == "tensorrt-11.5" else 24
        assert errors_of(report) == [f"error: graph: opset {opset} is outside 9..{top}, what {report.target}'s ONNX "
                                     "parser imports; re-export with opset 17 [opset-range]"]


def test_dtype_the_operator_does_not_take():
    model = uint8_concat_model()
    assert errors_of(lint_model(model))[0] == (
        "error: Concat 'cat': input 'a' is UINT8; TensorRT's Concat takes BFLOAT16, BOOL, FLOAT, FLOAT16, INT32, "
        "INT64 [op-dtype]")


def test_cast_to_int8_is_not_quantization():
    model = cast_to_int8_model()
    assert errors_of(lint_model(model)) == [
        "error: Cast 'to_int8': Cast to INT8 is not a way to quantize in TensorRT; use QuantizeLinear/DequantizeLinear "
        "[cast-target]"]
    # TensorRT-RTX 1.7 builds it (a saturating cast): a warning there (tests/test_lint_vs_rtx.py).
    rtx = lint_model(model, "tensorrt-rtx")
    assert rtx and [str(f) for f in rtx.warnings] == [
        "warning: Cast 'to_int8': Cast to INT8 saturates, it does not quantize (no scale); TensorRT-RTX builds it, "
        "TensorRT 10/11 do not: use QuantizeLinear/DequantizeLinear [cast-target]"]


def test_same_padding_with_explicit_pads():
    report = lint_model(fp32_conv_model(auto_pad="SAME_UPPER"))
    assert "error: Conv 'conv': auto_pad SAME_UPPER together with explicit pads is rejected; keep one of them " \
           "[auto-pad]" in errors_of(report)


def test_conv_bias_length_must_equal_output_channels():
    model = short_bias_model()
    assert "error: Conv 'conv': bias 'b' has shape [3]; it must be 1-D with 4 values (one per output channel) " \
           "[conv-bias]" in errors_of(lint_model(model))


def test_conv_group_must_match_channels():
    report = lint_model(fp32_conv_model(group=3))
    assert "error: Conv 'conv': W.shape[1] (3) x group (3) != input channels (3) [conv-shape]" in errors_of(report)


def test_pooling_dilations_and_indices():
    model = pool_model()
    assert errors_of(lint_model(model)) == [
        "error: MaxPool 'pool': dilations [2, 2]; TensorRT pools only with dilations 1 [pool-shape]",
        "error: MaxPool 'pool': second output 'idx' (Indices) is not supported; drop it [pool-shape]"]


def test_dropout_in_training_mode():
    model = training_dropout_model()
    assert errors_of(lint_model(model)) == [
        "error: Dropout 'drop': training_mode is true; export the model in eval mode [inference-only]"]


def test_reduce_axes_computed_at_run_time():
    model = runtime_axes_model()
    assert errors_of(lint_model(model)) == [
        "error: ReduceMean 'mean': axes 'axes' is computed at run time; TensorRT needs it as an initializer (a "
        "build-time constant) [constant-input]"]


def test_qdq_nonzero_zero_point():
    assert errors_of(lint_model(qdq_model(x_zero_point=3))) == [
        "error: QuantizeLinear 'q_x': zero point 'x_zp' holds 3; TensorRT quantizes symmetrically and rejects a "
        "non-zero zero point [qdq-zero-point]",
        "error: DequantizeLinear 'dq_x': zero point 'x_zp' holds 3; TensorRT quantizes symmetrically and rejects a "
        "non-zero zero point [qdq-zero-point]"]


def test_qdq_uint8_is_not_accepted():
    report = lint_model(qdq_model(zp_dtype=np.uint8))
    assert "error: QuantizeLinear 'q_x': UINT8 quantization is asymmetric; TensorRT on the GPU takes INT8 only " \
           "(zero point int8 0) [qdq-int8]" in errors_of(report)


def test_qdq_scale_must_be_positive():
    assert errors_of(lint_model(qdq_model(scale_value=-0.02)))[0] == (
        "error: QuantizeLinear 'q_x': scale 'x_scale' has values <= 0 (min -0.02); scales must be positive [qdq-scale]")


def test_qdq_scale_must_be_constant():
    model = runtime_scale_model()
    assert errors_of(lint_model(model))[0] == (
        "error: QuantizeLinear 'q_x': scale 'x_scale' is computed at run time; TensorRT needs a constant scale "
        "[qdq-scale]")


def test_per_channel_scale_length_must_equal_channels():
    report = lint_model(qdq_model(weight_scale_len=3))
    assert "error: DequantizeLinear 'dq_w1': per-channel scale has 3 values but 'w1_q' has 4 channels on axis 0; " \
           "give one scale per channel [qdq-scale-shape]" in errors_of(report)


def test_conv_weights_quantized_on_the_wrong_axis():
    report = lint_model(qdq_model(weight_scale_len=3, weight_axis=1))
    assert errors_of(report) == [
        "error: Conv 'conv1': weights quantized along axis 1 (DequantizeLinear 'dq_w1'); Conv weights are quantized "
        "per output channel, axis 0 [qdq-weight-axis]"]


def test_activations_quantized_per_channel():
    report = lint_model(qdq_model(activation_scale=np.full(3, 0.02, np.float32)))
    assert errors_of(report) == [
        "error: Conv 'conv1': its data input is dequantized per channel (3 scales, DequantizeLinear 'dq_x'); "
        "quantize activations per tensor [qdq-activation-per-tensor]"]


def test_conv_with_only_its_weights_quantized():
    assert errors_of(lint_model(qdq_model(quantize_data=False))) == [
        "error: Conv 'conv1': its weight input is dequantized but its data input 'x' is not; TensorRT runs it in "
        "float: put a Q/DQ pair on the data input too (or on neither) [qdq-conv-inputs]"]


def test_concat_inputs_with_different_scales():
    # A warning: TensorRT builds it and requantizes at the Concat (measured with TensorRT-RTX).
    report = lint_model(qdq_model(concat_scales=(0.05, 0.08)))
    assert report and [str(f) for f in report.warnings] == [
        "warning: Concat 'concat': inputs are quantized with 2 different scales (rad: 0.05, mpd: 0.08), so TensorRT "
        "requantizes here instead of eliding the Concat; give all Concat inputs and the Q after it one scale (the max "
        "of their amax) [qdq-concat-scale]"]


def test_quantized_graph_output_is_a_warning():
    # TensorRT builds it with an INT8 engine output (measured with TensorRT-RTX): a warning, not an error.
    report = lint_model(quantized_output_model())
    assert report and [str(f) for f in report.warnings] == [
        "warning: QuantizeLinear 'q': quantized 'y' is a graph output: the engine returns INT8 values its caller must "
        "dequantize; end the pair with a DequantizeLinear to return floats [qdq-pairs]"]


def quantized_scalar_model():
    """x * DQ(int8 scalar): onnxruntime's quantize_static writes these for Inception v3's transform_input."""
    nodes = [helper.make_node("DequantizeLinear", ["cq", "cs", "cz"], ["c"], name="dq_c"),
             helper.make_node("Mul", ["x", "c"], ["y"], name="mul")]
    return make_model(nodes, [image_input()], [helper.make_tensor_value_info("y", F32, ["batch", 3, 8, 8])],
                      [tensor("cq", np.int8(100)), tensor("cs", np.float32(0.01)), tensor("cz", np.int8(0))])


def test_quantized_scalar_constant():
    assert errors_of(lint_model(quantized_scalar_model(), "tensorrt-rtx")) == [
        "error: DequantizeLinear 'dq_c': dequantizes the 0-d constant 'cq'; TensorRT-RTX's builder refuses a quantized "
        "scalar constant (give it shape [1], or keep it float) [qdq-scalar-constant]"]
    report = lint_model(quantized_scalar_model(), "tensorrt-11")
    assert report and [f.rule for f in report.warnings] == ["qdq-scalar-constant"]


def test_quantized_bias_is_rejected():
    model = quantized_bias_model()
    assert errors_of(lint_model(model)) == [
        "error: DequantizeLinear 'dq_b1': dequantizes INT32 'b1_q' (a quantized bias); TensorRT rejects it: keep "
        "biases float (quantize with bias quantization off) [qdq-int8]",
        "error: Conv 'conv1': its bias is dequantized (DequantizeLinear 'dq_b1'); TensorRT takes float biases: "
        "quantize with bias quantization off [qdq-bias]"]


def test_qdq_between_conv_and_relu_is_a_warning():
    model = qdq_between_conv_and_relu_model()
    report = lint_model(model)
    assert report  # warnings do not fail the lint
    assert [str(f) for f in report.warnings] == [
        "warning: Conv 'conv': no Q/DQ on its inputs: it stays in float inside an INT8 graph [qdq-conv-inputs]",
        "warning: Relu 'relu': Q/DQ sits between Conv 'conv' and this Relu; move the Q after the Relu so TensorRT "
        "fuses them [qdq-conv-relu]"]


def test_layer_quantize_kept_float_is_info_not_a_warning():
    """A quantize run records its exclusions in the manifest; lint reads them back."""
    from inception_deploy.manifest import new_manifest, write_onnx_manifest

    model = qdq_between_conv_and_relu_model()
    manifest = new_manifest("export")
    manifest["history"].append({"stage": "quantize", "excluded": [{"node": "conv", "op_type": "Conv",
                                                                   "reason": "classifier"}]})
    write_onnx_manifest(model, manifest)
    report = lint_model(model)
    assert [str(f) for f in report.infos] == [
        "info: Conv 'conv': kept float on purpose by quantize (classifier) [qdq-conv-inputs]"]
    assert [f.rule for f in report.warnings] == ["qdq-conv-relu"]
    assert report.summary().endswith("1 warnings, 1 info")


def test_fp16_conv_with_fp32_bias_mixes_types():
    assert errors_of(lint_model(fp16_model(bias_dtype=np.float32))) == [
        "error: Conv 'conv': mixes float types ('b' FLOAT, 'w' FLOAT16, 'x16' FLOAT16); strongly typed TensorRT does "
        "not promote: cast in the graph so all inputs share one type [mixed-precision]"]


def test_fp16_graph_output_without_declared_type():
    errors = errors_of(lint_model(fp16_model(output_elem=TensorProto.UNDEFINED)))
    assert "error: output 'y': no declared element type; declare it (FLOAT for an FP16 graph with FP32 outputs) " \
           "[io-types]" in errors


def test_fp16_graph_with_untyped_tensor():
    model = untyped_fp16_model()
    assert "error: Cast 'cast_out': the type of input 'm' cannot be inferred; an FP16 graph must be typed end to " \
           "end (run onnx shape inference and declare value_info) [fp16-typed]" in errors_of(lint_model(model))


def test_dynamic_dims_beyond_batch():
    model = dynamic_spatial_model()
    assert errors_of(lint_model(model)) == [
        f"error: input 'x': axis {axis} is dynamic ('{name}'); the engine's profile covers only the batch axis: "
        "export with fixed channel/height/width [dynamic-dims]" for axis, name in ((2, "h"), (3, "w"))]


def test_reshape_that_hard_codes_the_batch():
    model = fixed_batch_reshape_model()
    assert errors_of(lint_model(model)) == [
        "error: Reshape 'flatten': reshapes a dynamic batch to the fixed shape [1, -1]; use 0 or -1 for the batch so "
        "every profile batch size works [reshape-batch]"]


def test_invalid_onnx_is_reported():
    model = invalid_model()
    errors = errors_of(lint_model(model))
    assert errors[0].startswith("error: graph: onnx.checker rejects the model: ")
    assert errors[0].endswith("[onnx-valid]")


# --- inputs and targets ----------------------------------------------------------------------

def test_unreadable_input_is_a_user_error(tmp_path):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\xff\xfe not a protobuf")
    # The one ONNX loader's messages (onnx_reader), as every other stage gives them.
    with pytest.raises(UserError, match=r"junk.onnx: not a readable ONNX model \(DecodeError: truncated, or another "
                                        r"format\); export it again"):
        lint_model(junk)
    with pytest.raises(UserError, match=r"missing.onnx: no such ONNX file"):
        lint_model(tmp_path / "missing.onnx")


def test_unknown_target():
    with pytest.raises(UserError) as caught:
        lint_model(fp16_model(), target="tensorrt-9")
    assert str(caught.value) == ("unknown lint target 'tensorrt-9'; choose one of tensorrt, tensorrt-10, tensorrt-11, "
                                 "tensorrt-rtx (or e.g. tensorrt-11.5)")


# --- the command -----------------------------------------------------------------------------

def test_cli_clean_graph_exits_0(googlenet_onnx):
    result = CliRunner().invoke(main, ["lint", str(googlenet_onnx), "--target", "tensorrt-10"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [f"PASSED | {googlenet_onnx} | tensorrt-10.16 | 179 nodes, 0 errors, 0 warnings"]


def test_cli_errors_exit_1(tmp_path):
    path = tmp_path / "bad.onnx"
    onnx.save(qdq_model(activation_scale=np.full(3, 0.02, np.float32)), path)
    result = CliRunner().invoke(main, ["lint", str(path)])
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        "error: Conv 'conv1': its data input is dequantized per channel (3 scales, DequantizeLinear 'dq_x'); "
        "quantize activations per tensor [qdq-activation-per-tensor]",
        f"FAILED | {path} | tensorrt-11.0 | 16 nodes, 1 errors, 0 warnings"]


def test_cli_json_report(tmp_path):
    import json

    path = tmp_path / "fp16.onnx"
    onnx.save(fp16_model(), path)
    result = CliRunner().invoke(main, ["lint", str(path), "--json"])
    assert result.exit_code == 0
    assert json.loads(result.output) == {"target": "tensorrt-11.0", "source": str(path), "passed": True,
                                         "nodes_checked": 4, "findings": []}


def test_cli_unreadable_input_exits_2(tmp_path):
    junk = tmp_path / "junk.onnx"
    junk.write_text("hello")
    result = CliRunner().invoke(main, ["lint", str(junk)])
    assert result.exit_code == 2
    assert result.output == (f"error: {junk}: not a readable ONNX model (DecodeError: truncated, or another format); "
                             "export it again (inception-deploy export) or give the .onnx it was made from\n")


# --- the corpus: every graph above, by name (tests/test_lint_vs_rtx.py feeds them to TensorRT-RTX) ---

CORPUS = {
    "fp32 conv": fp32_conv_model,
    "fp16 conv": fp16_model,
    "qdq block": qdq_model,
    "unsupported op": unique_model,
    "QLinearConv": qlinear_conv_model,
    "custom domain op": custom_domain_model,
    "Swish at opset 24": lambda: relu_model(opset=24, op="Swish"),
    "opset 8": lambda: relu_model(opset=8),
    "opset 25": lambda: relu_model(opset=25),
    "UINT8 Concat": uint8_concat_model,
    "Cast to INT8": cast_to_int8_model,
    "SAME_UPPER with pads": lambda: fp32_conv_model(auto_pad="SAME_UPPER"),
    "short conv bias": short_bias_model,
    "conv group mismatch": lambda: fp32_conv_model(group=3),
    "pool dilations and indices": pool_model,
    "Dropout in training mode": training_dropout_model,
    "ReduceMean axes at run time": runtime_axes_model,
    "Q/DQ zero point 3": lambda: qdq_model(x_zero_point=3),
    "Q/DQ uint8": lambda: qdq_model(zp_dtype=np.uint8),
    "Q/DQ negative scale": lambda: qdq_model(scale_value=-0.02),
    "Q/DQ scale at run time": runtime_scale_model,
    "per-channel scale length": lambda: qdq_model(weight_scale_len=3),
    "weights quantized on axis 1": lambda: qdq_model(weight_scale_len=3, weight_axis=1),
    "activations per channel": lambda: qdq_model(activation_scale=np.full(3, 0.02, np.float32)),
    "weights-only quantized conv": lambda: qdq_model(quantize_data=False),
    "Concat inputs with two scales": lambda: qdq_model(concat_scales=(0.05, 0.08)),
    "quantized graph output": quantized_output_model,
    "quantized bias": quantized_bias_model,
    "quantized scalar constant": quantized_scalar_model,
    "Q/DQ between Conv and Relu": qdq_between_conv_and_relu_model,
    "FP16 conv with FP32 bias": lambda: fp16_model(bias_dtype=np.float32),
    "FP16 output without a type": lambda: fp16_model(output_elem=TensorProto.UNDEFINED),
    "FP16 graph with an untyped tensor": untyped_fp16_model,
    "dynamic height and width": dynamic_spatial_model,
    "Reshape to a fixed batch": fixed_batch_reshape_model,
    "invalid ONNX": invalid_model,
}
