"""Bias correction's FP32 reference (stage: quantize): the per-channel means of every Conv/Gemm
output, derived from the per-position means of the layer inputs that the calibration pass
gathers, equal the means a pass of the FP32 graph measures on the same images."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from inception_deploy.backends.onnxruntime_backend import create_session
from inception_deploy.precision.bias import channel_means, layer_inputs, means_through_layers
from inception_deploy.precision.collect import InputMeans, collect_statistics


def _graph():
    """x -> conv (pad 1, stride 2, bias) -> relu -> conv (3x3, no pad, no bias) -> relu -> GAP
    -> flatten -> gemm: padding, strides and a missing bias are what linearity must survive."""
    rng = np.random.default_rng(0)

    def init(name, *shape):
        return numpy_helper.from_array(rng.normal(0, 0.5, shape).astype(np.float32), name)

    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1], strides=[2, 2]),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2"),
             helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
             helper.make_node("GlobalAveragePool", ["r2"], ["g"], name="gap"),
             helper.make_node("Flatten", ["g"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "w3", "b3"], ["y"], name="fc", transB=1, beta=0.5)]
    graph = helper.make_graph(nodes, "reference", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3, 9, 9])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [init("w1", 4, 3, 3, 3), init("b1", 4), init("w2", 5, 4, 3, 3), init("w3", 3, 5),
                               init("b3", 3)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10  # onnx 1.23 writes 14, which onnxruntime 1.31 refuses
    return model


def test_layer_output_means_follow_from_input_means_by_linearity():
    model = _graph()
    inputs = np.random.default_rng(1).normal(1.0, 1.0, size=(12, 3, 9, 9)).astype(np.float32)
    reads = layer_inputs(model)
    assert reads == {"conv1": "x", "conv2": "r1", "fc": "f"}
    session = create_session(model, extra_outputs=["r1", "f"])
    values = dict(zip(["r1", "f"], session.run(["r1", "f"], {"x": inputs})))
    values["x"] = inputs
    derived = means_through_layers(model, {name: values[name].mean(axis=0) for name in reads.values()})
    measured = channel_means(model, ["c1", "c2", "y"], inputs)
    assert sorted(derived) == ["c1", "c2", "y"]
    for name in measured:
        np.testing.assert_allclose(derived[name], measured[name], rtol=1e-5, atol=1e-6)


def test_the_calibration_pass_averages_exactly_the_chosen_images():
    """InputMeans inside collect_statistics: the means over the chosen dataset indices only,
    whatever batch they fall in, and the graph input among them."""
    model = _graph()
    inputs = np.random.default_rng(2).normal(size=(10, 3, 9, 9)).astype(np.float32)
    order = np.arange(100, 110)  # the dataset indices of the 10 images, in stream order
    batches, record = [inputs[:4], inputs[4:8], inputs[8:]], []

    def stream():
        for start, batch in zip((0, 4, 8), batches):
            record.append(order[start:start + len(batch)])
            yield batch

    chosen = [101, 104, 105, 109]
    means = InputMeans(["x", "r1", "f"], lambda: record, chosen)
    collect_statistics(model, ["r1"], stream(), means=means)
    assert sorted(means.folded) == chosen and means.images == 4
    rows = inputs[[1, 4, 5, 9]]
    session = create_session(model, extra_outputs=["r1", "f"])
    r1, f = session.run(["r1", "f"], {"x": rows})
    got = means.means()
    np.testing.assert_allclose(got["x"], rows.mean(axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["r1"], r1.mean(axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["f"], f.mean(axis=0), rtol=1e-5, atol=1e-6)


def test_spilled_outputs_read_back_the_same_from_memory_and_from_disk(tmp_path):
    """Bias correction's store of segment outputs: the first bytes stay in memory, the rest go to
    disk; either way a read is the batch minus its tensor's correction, and reading a held batch
    twice (two later segments) gives the same values both times."""
    from inception_deploy.precision.bias import _Spilled

    rng = np.random.default_rng(0)
    batches = [rng.standard_normal((2, 3, 4, 4)).astype(np.float32) for _ in range(4)]
    store = _Spilled(tmp_path, memory_bytes=2 * batches[0].nbytes)  # two batches held, two on disk
    for batch in batches:
        store.put("t", batch.copy())
    assert store.held == 2 * batches[0].nbytes and (tmp_path / "0.bin").stat().st_size == 2 * batches[0].nbytes
    shift = np.array([0.5, -1.0, 2.0], dtype=np.float32)
    store.shifts["t"] = shift
    for number, batch in enumerate(batches):
        want = batch - shift.reshape(1, 3, 1, 1)
        assert np.array_equal(store.get("t", number), want)
        assert np.array_equal(store.get("t", number), want)  # not shifted twice
    store.drop("t")
    assert store.held == 0 and not (tmp_path / "0.bin").exists()
