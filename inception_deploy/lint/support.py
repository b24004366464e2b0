"""Rules: can TensorRT's ONNX parser import this node at all (stage: lint).

Opset range, operator support per release, custom-domain ops (plugins), and the tensor
types an operator accepts.
"""

from __future__ import annotations

import onnx

from .base import NodeRule, Rule
from .graph import input_at
from .operators import (ALL_INPUTS_ARE_DATA, OPERATORS, QUANTIZED_TYPES, REPLACEMENT_HINTS,
                        TRT_CUSTOM_OPS, type_name)


class OnnxCheckerRule(Rule):
    id = "onnx-valid"
    description = "the model passes onnx.checker (TensorRT's parser assumes a valid model)"

    def check(self, view, target):
        try:
            onnx.checker.check_model(view.model)
        except Exception as exc:  # the checker raises several error types
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            yield self.error("graph", f"onnx.checker rejects the model: {first_line}")


class OpsetRule(Rule):
    id = "opset-range"
    description = "the default-domain opset lies in the range the target's parser imports"

    def check(self, view, target):
        opset = view.opset
        if not target.min_opset <= opset <= target.max_opset:
            yield self.error("graph", f"opset {opset} is outside {target.min_opset}..{target.max_opset}, "
                                      f"what {target.name}'s ONNX parser imports; re-export with opset 17")


class OperatorSupportRule(NodeRule):
    id = "op-supported"
    description = "every node's op type is imported by the target's ONNX parser"

    def check_node(self, view, target, node):
        where = view.name(node)
        if node.domain not in ("", "ai.onnx"):
            since = TRT_CUSTOM_OPS.get(node.op_type)
            if since is None or not target.at_least(*since):
                yield self.error(where, f"op '{node.domain}::{node.op_type}' is not an ONNX op {target.name} imports; "
                                        "it needs a TensorRT plugin of that name")
            return
        support = OPERATORS.get(node.op_type)
        if support is None:
            yield self.error(where, f"op '{node.op_type}' is not in {target.name}'s ONNX operator table; "
                                    "it needs a TensorRT plugin of that name")
        elif not support.supported_by(target):
            hint = REPLACEMENT_HINTS.get(node.op_type)
            since = f" (imported from TensorRT {support.since[0]}.{support.since[1]})" if support.since else ""
            if target.rtx and support.since and target.at_least(*support.since):
                since = f" (TensorRT imports it from {support.since[0]}.{support.since[1]}; TensorRT-RTX does not)"
            yield self.error(where, f"op '{node.op_type}' is not supported by {target.name}'s ONNX parser{since}"
                                    + (f"; {hint}" if hint else ""))


class TensorTypeRule(NodeRule):
    id = "op-dtype"
    description = "each data input has a type the operator accepts in TensorRT"

    def check_node(self, view, target, node):
        support = OPERATORS.get(node.op_type)
        if support is None or node.domain not in ("", "ai.onnx") or not support.types:
            return
        if node.op_type == "DequantizeLinear":  # its input types are the qdq-int8 rule's business
            return
        data_inputs = node.input if node.op_type in ALL_INPUTS_ARE_DATA else [input_at(node, 0)]
        for tensor in data_inputs:
            elem = view.elem_type(tensor) if tensor else 0
            if not elem:
                continue
            if elem == onnx.TensorProto.DOUBLE:
                yield self.warning(view.name(node), f"input '{tensor}' is DOUBLE; TensorRT casts it down to FLOAT")
            elif elem in QUANTIZED_TYPES and node.op_type != "DequantizeLinear":
                continue  # quantized tensors between Q and DQ are fine anywhere
            elif elem not in support.types:
                allowed = ", ".join(sorted(type_name(t) for t in support.types))
                yield self.error(view.name(node), f"input '{tensor}' is {type_name(elem)}; TensorRT's "
                                                  f"{node.op_type} takes {allowed}")


RULES = [OnnxCheckerRule(), OpsetRule(), OperatorSupportRule(), TensorTypeRule()]
