"""Pass `fuse-pad`: a constant Pad before Conv / MaxPool / AveragePool moved into its `pads` (stage: optimize).

Pad(x, pads) -> op(pads += spatial pads) when the semantics are the same:
  - mode "constant" only (reflect / edge padding has no `pads` equivalent);
  - no padding on the batch and channel axes, no negative pads, no `axes` input;
  - the padding value is what the op pads with: 0 for Conv, -inf for MaxPool, 0 for
    AveragePool with count_include_pad=1 (set when the pool had no padding, since the
    explicit zeros were counted), and not with ceil_mode (its partial windows differ);
  - the op has auto_pad NOTSET and the Pad's output feeds only it.
Written by hand: onnxscript's fuse_pad_into_conv rule covers Conv only and re-emits the
node under a generated name, losing the PyTorch module path.
"""

from __future__ import annotations

import math

import numpy as np

from .base import GraphPass, PassContext, const_array, int_attr, ints_attr, register


@register
class FusePad(GraphPass):
    """Pad(constant) -> Conv|MaxPool|AveragePool becomes the op with larger `pads`."""

    name = "fuse-pad"
    idle = "no constant Pad before a Conv or pool"

    def run(self, model, ctx: PassContext) -> list[str]:
        notes = []
        graph = model.graph
        for pad in [n for n in graph if n.op_type == "Pad" and n.domain in ("", "ai.onnx")]:
            out = pad.outputs[0]
            users = out.uses()
            if len(users) != 1 or out.is_graph_output():
                continue
            consumer, index = users[0]
            if index != 0 or consumer.op_type not in ("Conv", "MaxPool", "AveragePool"):
                continue
            reason = _fuse(pad, consumer)
            if reason is not None:
                notes.append(f"kept Pad '{pad.name}' before {consumer.op_type} '{consumer.name}': {reason}")
        return notes


def _fuse(pad, consumer):
    import onnx_ir as ir

    attr = pad.attributes.get("mode")
    mode = attr.as_string() if attr is not None else "constant"
    if mode != "constant":
        return f"mode '{mode}' has no pads equivalent"
    if len(pad.inputs) > 3 and pad.inputs[3] is not None:
        return "an axes input"
    pads = const_array(pad.inputs[1]) if len(pad.inputs) > 1 else None
    if pads is None:
        pads = np.asarray(ints_attr(pad, "pads", []) or [], dtype=np.int64)  # opset < 11
        if pads.size == 0:
            return "pads are not constant"
    pads = pads.astype(np.int64).reshape(-1)
    value = 0.0
    if len(pad.inputs) > 2 and pad.inputs[2] is not None:
        constant = const_array(pad.inputs[2])
        if constant is None:
            return "the padding value is not constant"
        value = float(constant.reshape(-1)[0]) if constant.size else 0.0
    rank = len(pads) // 2
    begin, end = pads[:rank], pads[rank:]
    if rank < 3 or (pads < 0).any() or begin[:2].any() or end[:2].any():
        return "it pads the batch or channel axis, or crops"
    auto_pad = consumer.attributes.get("auto_pad")
    if auto_pad is not None and auto_pad.as_string() not in ("NOTSET", ""):
        return "the consumer uses auto_pad"
    op = consumer.op_type
    if op == "Conv" and value != 0.0:
        return f"padding value {value:g} is not the 0 Conv pads with"
    if op == "MaxPool":
        if not (math.isinf(value) and value < 0):
            return f"padding value {value:g} is not the -inf MaxPool pads with"
        if len(consumer.outputs) > 1 and consumer.outputs[1].uses():
            return "MaxPool's Indices output is read"
    spatial = rank - 2
    old = ints_attr(consumer, "pads", [0] * (2 * spatial))
    if op == "AveragePool":
        if value != 0.0:
            return f"padding value {value:g} is not 0"
        if int_attr(consumer, "ceil_mode", 0):
            return "ceil_mode=1 (its partial windows count padding differently)"
        if not int_attr(consumer, "count_include_pad", 0) and any(old):
            return "the pool already pads and excludes padding from its average"
    new = [int(a) + int(b) for a, b in zip(old, list(begin[2:]) + list(end[2:]))]
    consumer.attributes["pads"] = ir.AttrInt64s("pads", new)
    if op == "AveragePool":
        consumer.attributes["count_include_pad"] = ir.AttrInt64("count_include_pad", 1)
    consumer.replace_input_with(0, pad.inputs[0])
    return None
