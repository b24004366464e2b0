"""What precision an ONNX graph asks TensorRT for (stage: build-engine, CPU side).

Strongly typed TensorRT runs each Conv/Gemm in the type its graph gives it: INT8 where a
DequantizeLinear feeds both its data and weights, else the float type of its data input.
build-engine compares this with --int8/--fp16 before building, and the truth check
compares it with the built engine after.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from onnx import TensorProto

from ..errors import UserError
from ..lint.graph import GraphView, input_at
from ..lint.qdq import QDQ_OPS, WEIGHTED_OPS, dq_feeding, quantized_type

_FLOAT_NAMES = {TensorProto.FLOAT: "FP32", TensorProto.FLOAT16: "FP16", TensorProto.BFLOAT16: "BF16"}
_QUANT_NAMES = {TensorProto.INT8: "INT8", TensorProto.FLOAT8E4M3FN: "FP8", TensorProto.INT4: "INT4",
                TensorProto.FLOAT4E2M1: "FP4"}


@dataclass
class GraphPrecision:
    kind: str  # "int8" | "fp16" | "bf16" | "fp32"
    node_precisions: dict[str, str] = field(default_factory=dict)  # Conv/Gemm name -> INT8/FP16/FP32

    def describe(self) -> str:
        return {"int8": "an INT8 Q/DQ graph", "fp16": "an FP16 graph", "bf16": "a BF16 graph",
                "fp32": "an FP32 graph (no QuantizeLinear/DequantizeLinear, no FP16 tensors)"}[self.kind]


def classify_graph(model) -> GraphPrecision:
    view = model if isinstance(model, GraphView) else GraphView(model)
    precisions: dict[str, str] = {}
    for index, node in enumerate(view.nodes):
        if node.op_type not in WEIGHTED_OPS:
            continue
        name = node.name or f"#{index}"
        data_dq, weight_dq = dq_feeding(view, input_at(node, 0)), dq_feeding(view, input_at(node, 1))
        if data_dq is not None and weight_dq is not None:
            precisions[name] = _QUANT_NAMES.get(quantized_type(view, data_dq), "INT8")
        else:
            precisions[name] = _FLOAT_NAMES.get(view.elem_type(input_at(node, 0)), "FP32")
    found = set(precisions.values())
    if found & {"INT8", "FP8", "INT4", "FP4"} or (not precisions and any(n.op_type in QDQ_OPS for n in view.nodes)):
        kind = "int8"
    elif "FP16" in found or (not precisions and any(view.elem_type(o) == TensorProto.FLOAT16
                                                    for n in view.nodes for o in n.output if o)):
        kind = "fp16"
    elif "BF16" in found:
        kind = "bf16"
    else:
        kind = "fp32"
    return GraphPrecision(kind, precisions)


def check_requested_precision(onnx_path: str | Path, requested: str | None, graph: GraphPrecision) -> str:
    """The precision to build; refuses a flag the graph does not carry (never a silent FP32 engine)."""
    if requested is None:
        return graph.kind
    requested = requested.lower()
    if requested == graph.kind:
        return requested
    path = str(onnx_path)
    if requested == "int8":
        raise UserError(
            f"{path} is {graph.describe()}, but --int8 needs a Q/DQ graph (TensorRT 11 has no INT8 flag or "
            f"calibrator): make one with `inception-deploy quantize {path} --int8 --calib-data DIR` from the FP32 "
            "model and build that; no engine was built")
    if requested == "fp16":
        if graph.kind == "int8":
            raise UserError(f"{path} is an INT8 Q/DQ graph; build it with --int8 (or pass the FP16 graph made by "
                            f"`inception-deploy quantize MODEL.onnx --fp16`); no engine was built")
        raise UserError(
            f"{path} is {graph.describe()}, but --fp16 needs an FP16 graph (strongly typed TensorRT has no FP16 "
            f"flag): make one with `inception-deploy quantize {path} --fp16` and build that; no engine was built")
    raise UserError(f"unknown precision '{requested}'; use --fp16 or --int8 (or neither to build the graph as typed)")
