"""Rules: strong typing, as TensorRT 11 always builds (stage: lint).

Every tensor's type follows from the network's declared input types and the operators'
type rules; nothing is promoted implicitly. So graph inputs and outputs declare their
types, no node mixes float types, and in an FP16 graph every tensor's type is known.
"""

from __future__ import annotations

from onnx import TensorProto

from .base import NodeRule, Rule
from .operators import FLOAT_TYPES, type_name

# Ops whose inputs legitimately carry different float types.
_MIXED_OK = frozenset({
    "Cast", "CastLike", "QuantizeLinear", "DequantizeLinear", "Resize", "Upsample", "Shape", "Size",
    "BatchNormalization",  # FP16 data with FP32 statistics: accepted from 10.7
})


def is_fp16_graph(view) -> bool:
    return any(view.elem_type(t) == TensorProto.FLOAT16 for node in view.nodes for t in node.output if t) or any(
        init.data_type == TensorProto.FLOAT16 for init in view.graph.initializer)


class DeclaredIOTypesRule(Rule):
    id = "io-types"
    description = "graph inputs and outputs declare their element type (and inputs their shape)"

    def check(self, view, target):
        for value in view.graph_inputs:
            tensor_type = value.type.tensor_type
            if not tensor_type.elem_type:
                yield self.error(f"input '{value.name}'", "no declared element type; TensorRT types the whole "
                                                          "network from its input types")
            if not tensor_type.HasField("shape"):
                yield self.error(f"input '{value.name}'", "no declared shape; declare its rank and dims")
        for value in view.graph.output:
            if not value.type.tensor_type.elem_type:
                yield self.error(f"output '{value.name}'", "no declared element type; declare it (FLOAT for an "
                                                           "FP16 graph with FP32 outputs)")


class MixedFloatTypesRule(NodeRule):
    id = "mixed-precision"
    description = "a node's float inputs share one type (no implicit FP16/FP32 promotion)"

    def check_node(self, view, target, node):
        if node.op_type in _MIXED_OK:
            return
        typed = [(t, view.elem_type(t)) for t in node.input if t]
        floats = {(t, e) for t, e in typed if e in FLOAT_TYPES}
        kinds = {e for _, e in floats}
        if len(kinds) > 1:
            listed = ", ".join(f"'{t}' {type_name(e)}" for t, e in sorted(floats))
            yield self.error(view.name(node), f"mixes float types ({listed}); strongly typed TensorRT does not "
                                              "promote: cast in the graph so all inputs share one type")


class FP16TypesKnownRule(Rule):
    id = "fp16-typed"
    description = "in an FP16 graph, every tensor's type is known (strongly typed end to end)"

    def check(self, view, target):
        if not is_fp16_graph(view):
            return
        for node in view.nodes:
            for tensor in node.input:
                if tensor and not view.elem_type(tensor):
                    yield self.error(view.name(node), f"the type of input '{tensor}' cannot be inferred; an FP16 "
                                                      "graph must be typed end to end (run onnx shape inference "
                                                      "and declare value_info)")


RULES = [DeclaredIOTypesRule(), MixedFloatTypesRule(), FP16TypesKnownRule()]
