"""Which ONNX Runtime mode computes a Q/DQ graph the way ONNX defines it (and TensorRT implements it).

A small Q/DQ graph (QuantizeLinear/DequantizeLinear on the inputs of two Convs, per-channel int8
weights, float biases, a Relu between) against QuantizeLinear, DequantizeLinear and Conv written
in numpy: the exact mode (graph optimizations off) equals the reference to float tolerance; ORT's
optimized mode (its Q/DQ rewrites) does not.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from inception_deploy.backends.onnxruntime_backend import create_session
from inception_deploy.precision.evaluate import EXACT, MODE_LEVELS, OPTIMIZED, evaluate

F32 = np.float32


def quantize(x, scale):  # ONNX QuantizeLinear, int8, zero point 0: round half to even, saturate
    return np.clip(np.rint(x / scale), -128, 127)


def dequantize(q, scale):  # ONNX DequantizeLinear (float32 product, as the operator's output type)
    return (q * scale).astype(F32)


def conv(x, w, b):  # ONNX Conv, stride 1, pads 1, accumulated in float64
    n, _, h, wd = x.shape
    kh, kw = w.shape[2:]
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    out = np.zeros((n, w.shape[0], h, wd))
    for i in range(kh):
        for j in range(kw):
            out += np.einsum("nchw,oc->nohw", xp[:, :, i:i + h, j:j + wd], w[:, :, i, j].astype(np.float64))
    return out + b.reshape(1, -1, 1, 1)


@pytest.fixture(scope="module")
def qdq_graph():
    """(model, numpy reference function)"""
    rng = np.random.default_rng(0)
    w1, b1 = rng.standard_normal((16, 3, 3, 3)), (rng.standard_normal(16) * 0.3).astype(F32)
    w2, b2 = rng.standard_normal((8, 16, 3, 3)) * 0.2, (rng.standard_normal(8) * 0.3).astype(F32)
    sx1, sx2 = F32(0.02), F32(0.2)
    sw1 = (np.abs(w1).reshape(16, -1).max(1) / 127).astype(F32)
    sw2 = (np.abs(w2).reshape(8, -1).max(1) / 127).astype(F32)
    w1q, w2q = quantize(w1, sw1.reshape(-1, 1, 1, 1)), quantize(w2, sw2.reshape(-1, 1, 1, 1))
    arrays = {"sx1": sx1, "sx2": sx2, "zp": np.int8(0), "w1q": w1q.astype(np.int8), "sw1": sw1,
              "zw1": np.zeros(16, np.int8), "b1": b1, "w2q": w2q.astype(np.int8), "sw2": sw2,
              "zw2": np.zeros(8, np.int8), "b2": b2}
    nodes = [helper.make_node("QuantizeLinear", ["x", "sx1", "zp"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "sx1", "zp"], ["xd"]),
             helper.make_node("DequantizeLinear", ["w1q", "sw1", "zw1"], ["w1d"], axis=0),
             helper.make_node("Conv", ["xd", "w1d", "b1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("QuantizeLinear", ["r1", "sx2", "zp"], ["r1q"]),
             helper.make_node("DequantizeLinear", ["r1q", "sx2", "zp"], ["r1d"]),
             helper.make_node("DequantizeLinear", ["w2q", "sw2", "zw2"], ["w2d"], axis=0),
             helper.make_node("Conv", ["r1d", "w2d", "b2"], ["y"], pads=[1, 1, 1, 1])]
    graph = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 8, 8, 8])],
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in arrays.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # onnx 1.23 writes 14, which onnxruntime 1.31 refuses
    onnx.checker.check_model(model)

    # The FP32 graph the Q/DQ one was made from (its weights the dequantized int8 ones).
    float_weights = {"w1": dequantize(w1q, sw1.reshape(-1, 1, 1, 1)), "w2": dequantize(w2q, sw2.reshape(-1, 1, 1, 1))}
    float_graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c1"], ["r1"]),
         helper.make_node("Conv", ["r1", "w2", "b2"], ["y"], pads=[1, 1, 1, 1])], "fp32", list(graph.input),
        list(graph.output), [numpy_helper.from_array(v, k) for k, v in {**float_weights, "b1": b1, "b2": b2}.items()])
    fp32 = helper.make_model(float_graph, opset_imports=[helper.make_opsetid("", 17)])
    fp32.ir_version = 8

    def reference(x):
        xd = dequantize(quantize(x, sx1), sx1)
        r1 = np.maximum(conv(xd, dequantize(w1q, sw1.reshape(-1, 1, 1, 1)), b1), 0).astype(F32)
        return conv(dequantize(quantize(r1, sx2), sx2), dequantize(w2q, sw2.reshape(-1, 1, 1, 1)), b2)

    return model, reference, fp32


def test_exact_mode_equals_numpy_qdq_reference_and_optimized_mode_does_not(qdq_graph):
    model, reference, _ = qdq_graph
    x = np.random.default_rng(1).standard_normal((4, 3, 8, 8)).astype(F32)
    want = reference(x)
    scale = np.abs(want).max()
    exact = create_session(model, optimization=MODE_LEVELS[EXACT]).run(None, {"x": x})[0]
    optimized = create_session(model, optimization=MODE_LEVELS[OPTIMIZED]).run(None, {"x": x})[0]
    assert np.abs(exact - want).max() <= 1e-6 * scale  # float32 accumulation order only (measured 6e-6 of 23.7)
    # ORT's Q/DQ rewrites (int32 bias and requantization inside its fused kernels) round differently:
    # measured 0.027 here, about half a step of the second Q (0.05) times a weight.
    assert np.abs(optimized - want).max() > 1e-3 * scale
    # ORT's basic level already rewrites Q/DQ; only "disable" is exact.
    basic = create_session(model, optimization="basic").run(None, {"x": x})[0]
    assert np.abs(basic - want).max() > 1e-3 * scale


def test_evaluation_judges_qdq_graphs_in_exact_mode_and_reports_the_optimized_numbers(qdq_graph):
    """quantize's comparison: its main numbers are the numpy Q/DQ reference's error against FP32,
    and ORT's optimized numbers come beside them, marked as different."""
    model, reference, fp32 = qdq_graph
    x = np.random.default_rng(2).uniform(-2, 2, (16, 3, 8, 8)).astype(F32)  # inside the first Q's range
    want = create_session(fp32).run(None, {"x": x})[0].astype(np.float64)
    numpy_error = np.abs(want - reference(x)).max()
    ev = evaluate(fp32, model, [(x, None)], "test images")
    assert ev.mode == EXACT
    assert ev.main.max_abs_error == pytest.approx(numpy_error, abs=1e-5 * np.abs(want).max())
    assert ev.optimized is not None and ev.optimized_differs
    assert abs(ev.optimized.max_abs_error - numpy_error) > 1e-3
    lines = ev.lines("INT8")
    assert lines[0] == "FP32 vs INT8 on 16 images of test images (exact Q/DQ semantics: ONNX Runtime with graph optimizations off):"
    assert lines[-1].startswith("  ONNX Runtime with its graph optimizations on (differs; not what TensorRT computes)")
    summary = ev.summary()
    assert summary["mode"] == "exact" and summary["ort-optimized"]["differs"] is True


def test_batches_run_two_at_a_time_keep_their_order_and_optimized_numbers_cover_the_first_images(qdq_graph):
    """Several batches: the exact mode runs them concurrently (a batch per core) and is still the
    numpy reference's error batch by batch; ORT's optimized numbers come from the first
    `optimized_images`, with the exact mode's numbers on those same images beside them."""
    model, reference, fp32 = qdq_graph
    rng = np.random.default_rng(3)
    batches = [(rng.uniform(-2, 2, (4, 3, 8, 8)).astype(F32), None) for _ in range(4)]
    fp32_session = create_session(fp32)
    numpy_errors = [np.abs(fp32_session.run(None, {"x": x})[0].astype(np.float64) - reference(x)).max()
                    for x, _ in batches]
    ev = evaluate(fp32, model, batches, "test images", optimized_images=8)
    assert ev.main.count == 16
    assert ev.main.max_abs_error == pytest.approx(max(numpy_errors), abs=1e-5)
    assert ev.optimized.count == 8 and ev.optimized_subset and ev.exact_on_optimized.count == 8
    first_two = evaluate(fp32, model, batches[:2], "test images", optimized_images=None)
    assert not first_two.optimized_subset and first_two.exact_on_optimized is None
    assert ev.exact_on_optimized.max_abs_error == first_two.main.max_abs_error
    assert ev.optimized.max_abs_error == first_two.optimized.max_abs_error and ev.optimized_differs
    line = ev.lines("INT8")[-1]
    assert line.startswith("  ONNX Runtime with its graph optimizations on (differs, first 8 images; not what "
                           "TensorRT computes): top-1 agreement")
    assert f"(exact on those images: agreement 100.00%, max {first_two.main.max_abs_error:.4g})" in line
    summary = ev.summary()[OPTIMIZED]
    assert summary["samples"] == 8 and summary["exact_on_same_images"]["samples"] == 8


def test_float_graphs_are_run_optimized(qdq_graph):
    _, _, fp32 = qdq_graph
    x = np.zeros((2, 3, 8, 8), F32)
    ev = evaluate(fp32, fp32, [(x, None)], "zeros")
    assert ev.mode == OPTIMIZED and ev.optimized is None and ev.main.max_abs_error == 0
