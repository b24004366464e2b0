"""Activation equalization (stage: quantize): rescaled Conv channels leave the FP32 function
unchanged, only channels that reach Conv/Gemm weights through scale-commuting ops are
touched, and the INT8 graph made from the equalized one is closer to FP32."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from inception_deploy.precision import quantize_onnx
from inception_deploy.precision.equalize import apply_equalization, equalization_scales, find_scalable
from inception_deploy.backends.onnxruntime_backend import create_session as session, run_batched as run


def _branchy_graph(relu_reader: str = "Conv"):
    """x -> conv a (4 ch) -> relu -+-> concat -> maxpool -> conv c -> relu -> GAP -> flatten -> gemm
       x -> conv b (2 ch) -> relu -+    (channel offset of b's channels in the concat: 4)"""
    rng = np.random.default_rng(0)

    def init(name, *shape):
        return numpy_helper.from_array(rng.normal(0, 0.5, shape).astype(np.float32), name)

    nodes = [helper.make_node("Conv", ["x", "wa", "ba"], ["a"], name="conv_a", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["a"], ["ra"], name="relu_a"),
             helper.make_node("Conv", ["x", "wb"], ["b"], name="conv_b"),
             helper.make_node("Relu", ["b"], ["rb"], name="relu_b"),
             helper.make_node("Concat", ["ra", "rb"], ["cat"], name="cat", axis=1),
             helper.make_node("MaxPool", ["cat"], ["pool"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Conv", ["pool", "wc", "bc"], ["c"], name="conv_c"),
             helper.make_node("Relu", ["c"], ["rc"], name="relu_c"),
             helper.make_node("GlobalAveragePool", ["rc"], ["gap"], name="gap"),
             helper.make_node("Flatten", ["gap"], ["flat"], name="flat"),
             helper.make_node("Gemm", ["flat", "wd", "bd"], ["y"], name="fc", transB=1)]
    inits = [init("wa", 4, 3, 3, 3), init("ba", 4), init("wb", 2, 3, 1, 1), init("wc", 5, 6, 1, 1), init("bc", 5),
             init("wd", 3, 5), init("bd", 3)]
    if relu_reader == "Add":  # conv c's Relu output also feeds an Add: not scale-commuting
        nodes.append(helper.make_node("Add", ["rc", "rc"], ["z"], name="add"))
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    if relu_reader == "Add":
        outputs.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, None))
    graph = helper.make_graph(nodes, "branchy", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3, 8, 8])],
                              outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10  # onnx 1.23 writes 14, which onnxruntime 1.31 refuses
    return model


def test_equalization_through_concat_pool_gap_and_gemm_is_an_fp32_identity():
    model = _branchy_graph()
    found = {item.conv: item for item in find_scalable(model)}
    assert sorted(found) == ["conv_a", "conv_b", "conv_c"]
    assert sorted(found["conv_b"].readers) == [("conv_c", 4)]  # b's channels sit after a's 4 in the concat
    assert found["conv_c"].readers == [("fc", 0)]
    inputs = np.random.default_rng(1).normal(size=(16, 3, 8, 8)).astype(np.float32)
    scales = equalization_scales(model, [inputs[:8], inputs[8:]], strength=1.0)
    assert any(float(s.max()) > 1.5 for s in scales.values())
    assert all(float(s.min()) >= 1.0 for s in scales.values())
    equalized = apply_equalization(model, scales)
    before, after = (run(session(m), inputs)["y"] for m in (model, equalized))
    np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-5)
    # The weights did change: b's channels were scaled up (and conv c's reading them down).
    weights = {i.name: numpy_helper.to_array(i) for i in equalized.graph.initializer}
    original = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    assert np.all(np.abs(weights["wb"]) >= np.abs(original["wb"])) and not np.allclose(weights["wb"], original["wb"])


def test_a_relu_output_read_by_an_unscalable_op_is_left_alone():
    found = {item.conv for item in find_scalable(_branchy_graph(relu_reader="Add"))}
    assert found == {"conv_a", "conv_b"}


def test_flatten_of_a_spatial_map_stops_equalization():
    """Conv -> Relu -> Flatten -> Gemm with a 2x2 map (GoogLeNet's aux head): channel c becomes
    features 4c..4c+3, not feature c, so that conv is left alone; after a global pool it is not."""
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"), helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Flatten", ["r"], ["f"]), helper.make_node("Gemm", ["f", "g"], ["y"], name="fc", transB=1)]
    inits = [numpy_helper.from_array(rng.normal(size=(3, 3, 1, 1)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.normal(size=(5, 12)).astype(np.float32), "g")]
    graph = helper.make_graph(nodes, "aux", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3, 2, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    assert find_scalable(model) == []
    assert [item.conv for item in find_scalable(_branchy_graph())] == ["conv_a", "conv_b", "conv_c"]  # GAP first


def test_scales_that_do_not_fit_the_graph_are_refused():
    with pytest.raises(ValueError, match="equalization scales for 'conv_a' do not fit this graph"):
        apply_equalization(_branchy_graph(), {"conv_a": np.ones(3, dtype=np.float32)})


def test_equalized_int8_digits_graph_is_closer_to_fp32(digits_opt_onnx, tmp_path):
    """Same calibration (max, 64 images), with and without equalization, on the 450 held-out
    digits: every conv of GoogLeNet is equalized and the mean abs logit error drops."""
    common = dict(calib_data="digits-train", calib_count=64, calib_method="max", progress=False, eval_images=450)
    plain = quantize_onnx(digits_opt_onnx, tmp_path / "plain.int8.onnx", equalize=False, **common)
    equalized = quantize_onnx(digits_opt_onnx, tmp_path / "eq.int8.onnx", equalize=True, **common)
    assert plain.equalized == 0 and equalized.equalized == 57
    assert equalized.evaluation.main.mean_abs_error < 0.9 * plain.evaluation.main.mean_abs_error
    assert equalized.evaluation.main.top1_agreement >= 0.99
    assert equalized.manifest["history"][-1]["equalized_layers"] == 57


def test_a_weight_shared_by_two_convs_is_copied_then_scaled_and_the_fp32_function_holds():
    """Two Convs read one weight initializer: each gets its own scaled copy (the copy used to be
    registered before the graph's own, so the graph kept the unscaled values with a scaled bias)."""
    rng = np.random.default_rng(3)

    def init(name, *shape):
        return numpy_helper.from_array(rng.normal(0, 0.5, shape).astype(np.float32), name)

    nodes = [helper.make_node("Conv", ["x", "w", "bp"], ["p"], name="conv_p"),
             helper.make_node("Relu", ["p"], ["rp"], name="relu_p"),
             helper.make_node("Conv", ["x", "w", "bq"], ["q"], name="conv_q"),
             helper.make_node("Relu", ["q"], ["rq"], name="relu_q"),
             helper.make_node("Concat", ["rp", "rq"], ["cat"], name="cat", axis=1),
             helper.make_node("Conv", ["cat", "wr"], ["r"], name="conv_r"),
             helper.make_node("GlobalAveragePool", ["r"], ["gap"], name="gap"),
             helper.make_node("Flatten", ["gap"], ["y"], name="flat")]
    graph = helper.make_graph(nodes, "shared", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [init("w", 4, 3, 3, 3), init("bp", 4), init("bq", 4), init("wr", 2, 8, 1, 1)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    inputs = rng.normal(size=(8, 3, 8, 8)).astype(np.float32)
    scales = equalization_scales(model, [inputs], strength=1.0)
    assert sorted(scales) == ["conv_p", "conv_q"] and any(float(s.max()) > 1.5 for s in scales.values())
    equalized = apply_equalization(model, scales)
    readers = {n.name: n.input[1] for n in equalized.graph.node if n.name in ("conv_p", "conv_q")}
    assert len(set(readers.values())) == 2  # one private copy each
    before, after = (run(session(m), inputs)["y"] for m in (model, equalized))
    np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-5)


def test_the_input_graph_scaled_per_channel_gives_the_equalized_graphs_statistics():
    """quantize runs one session of the input graph for equalization and calibration: each
    tensor the scaled channels reach, times its channel factors (tensor_scales), has the
    equalized graph's ranges; through the Concat, b's channels sit after a's 4."""
    from inception_deploy.precision.collect import collect_statistics
    from inception_deploy.precision.equalize import tensor_scales

    model = _branchy_graph()
    inputs = np.random.default_rng(4).normal(size=(16, 3, 8, 8)).astype(np.float32)
    scales = equalization_scales(model, [inputs], strength=1.0)
    factors = tensor_scales(model, scales)
    np.testing.assert_array_equal(factors["cat"][:4], scales["conv_a"])
    np.testing.assert_array_equal(factors["cat"][4:], scales["conv_b"])
    tensors = ["cat", "pool", "flat"]
    scaled = collect_statistics(model, tensors, [inputs[:8], inputs[8:]], scales=factors)
    equalized = collect_statistics(apply_equalization(model, scales), tensors, [inputs[:8], inputs[8:]])
    for name in tensors:
        assert scaled[name].max == pytest.approx(equalized[name].max, rel=1e-5)
        assert scaled[name].min == pytest.approx(equalized[name].min, rel=1e-5, abs=1e-6)
        assert scaled[name].width == equalized[name].width
        assert np.abs(scaled[name].hist - equalized[name].hist).sum() <= 2  # a value on a bin edge may move
