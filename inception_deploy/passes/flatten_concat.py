"""Pass `flatten-concat`: nested Concats on the same axis merged into one (stage: optimize).

Concat(a, Concat(b, c), d) on one axis is Concat(a, b, c, d) when the inner Concat's
output feeds nothing else. Inception v3's Mixed_7b/7c build their 3x3 branches as a
Concat inside the block's Concat; one Concat lets the quantizer give all branches one
scale and TensorRT elide it. Written by hand: neither onnxscript's rewriter nor
onnx-ir ships this rule.
"""

from __future__ import annotations

from .base import GraphPass, PassContext, int_attr, register


def _axis(node):
    axis = int_attr(node, "axis", 0)
    if axis < 0:
        shape = node.outputs[0].shape
        if shape is None:
            return None
        axis += len(shape)
    return axis


@register
class FlattenConcat(GraphPass):
    """Concat(..., Concat(x, y), ...) on the same axis -> Concat(..., x, y, ...)."""

    name = "flatten-concat"
    idle = "no Concat feeding a Concat on the same axis"

    def run(self, model, ctx: PassContext) -> list[str]:
        graph = model.graph
        changed = True
        while changed:  # until no Concat reads a mergeable Concat
            changed = False
            for outer in [n for n in graph if n.op_type == "Concat" and n.domain in ("", "ai.onnx")]:
                axis = _axis(outer)
                if axis is None:
                    continue
                inputs, merged = [], False
                for value in outer.inputs:
                    inner = value.producer() if value is not None else None
                    if (inner is not None and inner.op_type == "Concat" and inner.domain in ("", "ai.onnx")
                            and _axis(inner) == axis and len(value.uses()) == 1 and not value.is_graph_output()):
                        inputs.extend(inner.inputs)
                        merged = True
                    else:
                        inputs.append(value)
                if merged:
                    outer.resize_inputs(len(inputs))
                    for i, value in enumerate(inputs):
                        outer.replace_input_with(i, value)
                    changed = True
        return []
