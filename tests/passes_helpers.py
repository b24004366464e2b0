"""Small hand-built graphs and an ORT runner for the pass tests (stage: optimize, tests)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def make_model(nodes, inputs, outputs, initializers) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, [numpy_helper.from_array(v, k) for k, v in initializers.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10  # onnxruntime 1.31 refuses onnx 1.23's default IR version 14
    return model


def tensor(name, shape, elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, shape)


def run(model: onnx.ModelProto | bytes, feed: dict) -> list[np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # run the graph as written
    data = model if isinstance(model, bytes) else model.SerializeToString()
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"]).run(None, feed)


def apply(model: onnx.ModelProto, names, ctx=None):
    """Run passes on a copy; return (optimized ModelProto, records)."""
    import onnx_ir as ir

    from inception_deploy.passes import PassContext, run_passes

    ir_model = ir.from_proto(model)
    records = run_passes(ir_model, names, ctx or PassContext())
    return ir.serde.serialize_model(ir_model), records


def ops(model: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in model.graph.node]


def assert_close(ref: np.ndarray, out: np.ndarray, rel: float = 1e-5, abs_: float = 1e-6) -> None:
    err = float(np.abs(ref.astype(np.float64) - out).max())
    assert err <= rel * float(np.abs(ref).max()) + abs_, f"max abs error {err:.3g} vs max |ref| {np.abs(ref).max():.3g}"
