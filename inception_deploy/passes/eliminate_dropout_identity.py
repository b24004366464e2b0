"""Pass `eliminate-dropout-identity`: inference Dropout and Identity nodes removed (stage: optimize).

Dropout is the identity at inference: opset < 12 Dropout always (its `is_test`-era
semantics), opset >= 12 Dropout when its `training_mode` input is absent or a constant
False. Identity nodes (torch's legacy exporter emits one per repeated initializer) go
through onnx-ir's IdentityEliminationPass, which keeps graph output names.

Written by hand for Dropout: onnxscript's rewrite rules (0.7.2, `dropout_inference_rule`)
match `training_mode` as an attribute, which opset >= 12 graphs never have, so they
leave every Dropout of an opset 17 export in place.
"""

from __future__ import annotations

from .base import GraphPass, PassContext, bypass, const_array, register


@register
class EliminateDropoutIdentity(GraphPass):
    """Dropout(x[, ratio, training_mode=False]) -> x and Identity(x) -> x."""

    name = "eliminate-dropout-identity"
    idle = "no Dropout or Identity node (an eval-mode torch.onnx export has no Dropout)"

    def run(self, model, ctx: PassContext) -> list[str]:
        import onnx_ir as ir
        import onnx_ir.passes.common  # noqa: F401 - registers ir.passes.common

        notes = []
        graph = model.graph
        for node in [n for n in graph if n.op_type == "Dropout" and n.domain in ("", "ai.onnx")]:
            reason = _why_not_identity(node)
            if reason is None and len(node.outputs) > 1 and (node.outputs[1].uses() or node.outputs[1].is_graph_output()):
                reason = "its mask output is read"
            if reason is None and not bypass(node, node.inputs[0], node.outputs[0]):
                reason = "it connects a graph input straight to a graph output"
            if reason is not None:
                notes.append(f"kept Dropout '{node.name}': {reason}")
        identities = [n for n in graph if n.op_type == "Identity" and n.domain in ("", "ai.onnx")]
        ir.passes.common.IdentityEliminationPass()(model)
        kept = [n for n in identities if n.graph is graph]
        for node in kept:
            notes.append(f"kept Identity '{node.name}': it maps a graph input or initializer to a graph output")
        return notes


def _why_not_identity(node):
    """None when this Dropout is the identity at inference, else why not."""
    if len(node.inputs) < 3 or node.inputs[2] is None:
        return None  # no training_mode input: inference (and always so before opset 12)
    training = const_array(node.inputs[2])
    if training is None:
        return "its training_mode input is not a constant"
    if bool(training.reshape(-1)[0]):
        return "training_mode is True (the output is random); export the model in eval mode"
    return None
