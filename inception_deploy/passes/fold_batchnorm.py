"""Pass `fold-batchnorm`: inference BatchNormalization folded into the producer's weights (stage: optimize).

BN(y) = y * s + t with s = gamma / sqrt(var + epsilon), t = beta - mean * s, per channel
(axis 1). Folded into:
  - Conv (any group count, depthwise included; with or without bias): W[m] *= s[m],
    b' = b * s + t. Conv weights are [M, C/group, k...], so output channel m is axis 0
    of W whatever the group count.
  - Gemm: the output columns' weights (axis 0 of B with transB, else axis 1), C' =
    beta * C * s + t with beta set to 1.
  - MatMul with a constant 2-D weight and a rank-2 output: B[:, m] *= s[m] and an Add of t.
A BN with nothing to fold into (its producer is another op, or its input is read
elsewhere too) becomes one per-channel Mul + Add; it stays, with the reason in the
report, in training mode, with non-constant statistics, or with an unknown input rank.

Written by hand rather than with onnxscript's `fuse_batchnorm_into_*` rules (0.7.2):
those re-emit the Conv under a generated name (node_Conv_0), losing the PyTorch module
path that layer-wise validation maps back; they do not look at `training_mode`; and they
cover neither MatMul nor a BN without a producer to fold into. s and t are computed in
float64 and rounded once to the weights' dtype.
"""

from __future__ import annotations

import numpy as np

from .base import GraphPass, PassContext, add_initializer, bypass, const_array, float_attr, int_attr, register, replace_weight


@register
class FoldBatchNorm(GraphPass):
    """BatchNormalization(Conv|Gemm|MatMul(x, W)) -> Conv|Gemm|MatMul with scaled weights; else Mul+Add."""

    name = "fold-batchnorm"
    idle = "no BatchNormalization node (torch.onnx folds BatchNorm into the Conv weights when it exports in eval mode)"

    def run(self, model, ctx: PassContext) -> list[str]:
        notes = []
        graph = model.graph
        for bn in [n for n in graph if n.op_type == "BatchNormalization" and n.domain in ("", "ai.onnx")]:
            reason = _fold_one(graph, bn)
            if reason is not None:
                notes.append(f"kept BatchNormalization '{bn.name}': {reason}")
        return notes


def _fold_one(graph, bn):
    """Fold `bn`; None when done, else the reason it stays."""
    if int_attr(bn, "training_mode", 0):
        return "training_mode=1 (it normalizes by batch statistics); export the model in eval mode"
    if any(o.uses() or o.is_graph_output() for o in bn.outputs[1:]):
        return "its running mean/var outputs are read"
    params = [const_array(v) for v in bn.inputs[1:5]]
    if len(params) < 4 or any(p is None for p in params):
        return "scale, bias, mean or var is not a constant"
    gamma, beta, mean, var = (p.astype(np.float64).reshape(-1) for p in params)
    scale = gamma / np.sqrt(var + float_attr(bn, "epsilon", 1e-5))
    shift = beta - mean * scale
    x, y = bn.inputs[0], bn.outputs[0]
    producer = x.producer()
    exclusive = producer is not None and len(x.uses()) == 1 and not x.is_graph_output() and not x.is_graph_input()
    if exclusive and producer.domain in ("", "ai.onnx"):
        fold = {"Conv": _into_conv, "Gemm": _into_gemm, "MatMul": _into_matmul}.get(producer.op_type)
        if fold is not None and fold(graph, producer, scale, shift, bn):
            if bypass(bn, bn.inputs[0], y):  # MatMul's fold put an Add between them
                return None
            return "its producer's output is also a graph output"  # unreachable: exclusive
    return _to_mul_add(graph, bn, scale, shift)


def _into_conv(graph, conv, scale, shift, bn) -> bool:
    weight = const_array(conv.inputs[1])
    bias = const_array(conv.inputs[2]) if len(conv.inputs) > 2 and conv.inputs[2] is not None else None
    if weight is None or weight.shape[0] != scale.size or (len(conv.inputs) > 2 and conv.inputs[2] is not None and bias is None):
        return False
    dtype = weight.dtype
    shape = (-1,) + (1,) * (weight.ndim - 1)
    new_weight = (weight.astype(np.float64) * scale.reshape(shape)).astype(dtype)
    old_bias = np.zeros(scale.size) if bias is None else bias.astype(np.float64).reshape(-1)
    new_bias = (old_bias * scale + shift).astype(dtype)
    replace_weight(graph, conv, 1, new_weight, "_bnfold")
    replace_weight(graph, conv, 2, new_bias, "_bnfold_bias" if bias is None else "_bnfold")
    return True


def _into_gemm(graph, gemm, scale, shift, bn) -> bool:
    b = const_array(gemm.inputs[1])
    has_c = len(gemm.inputs) > 2 and gemm.inputs[2] is not None
    c = const_array(gemm.inputs[2]) if has_c else None
    if b is None or b.ndim != 2 or (has_c and c is None):
        return False
    trans_b = int_attr(gemm, "transB", 0)
    if b.shape[0 if trans_b else 1] != scale.size:
        return False
    dtype = b.dtype
    new_b = b.astype(np.float64) * (scale[:, None] if trans_b else scale[None, :])
    beta = float_attr(gemm, "beta", 1.0)
    new_c = shift if c is None else beta * c.astype(np.float64) * scale + shift  # broadcasts over [M], [1, M], [N, M]
    replace_weight(graph, gemm, 1, new_b.astype(dtype), "_bnfold")
    replace_weight(graph, gemm, 2, np.asarray(new_c).astype(dtype), "_bnfold_bias" if c is None else "_bnfold")
    if "beta" in gemm.attributes:
        import onnx_ir as ir

        gemm.attributes["beta"] = ir.AttrFloat32("beta", 1.0)
    return True


def _into_matmul(graph, matmul, scale, shift, bn) -> bool:
    import onnx_ir as ir

    w = const_array(matmul.inputs[1])
    a = matmul.inputs[0]
    # BN normalizes axis 1; MatMul's output channels are its last axis: equal only at rank 2.
    if w is None or w.ndim != 2 or w.shape[1] != scale.size or a.shape is None or len(a.shape) != 2:
        return False
    dtype = w.dtype
    replace_weight(graph, matmul, 1, (w.astype(np.float64) * scale[None, :]).astype(dtype), "_bnfold")
    shift_value = add_initializer(graph, f"{bn.name.strip('/').replace('/', '.') or 'bn'}.shift", shift.astype(dtype))
    add = ir.node("Add", [matmul.outputs[0], shift_value], name=f"{bn.name}_add")
    graph.insert_after(matmul, add)
    matmul.outputs[0].replace_all_uses_with(add.outputs[0])
    add.replace_input_with(0, matmul.outputs[0])  # the line above redirected the Add's own input too
    return True


def _to_mul_add(graph, bn, scale, shift):
    import onnx_ir as ir

    x, y = bn.inputs[0], bn.outputs[0]
    shape = x.shape if x.shape is not None else y.shape
    if shape is None:
        return "no producer to fold into and the input rank is unknown"
    dtype = (x.dtype.numpy() if x.dtype is not None else np.dtype(np.float32))
    broadcast = (-1,) + (1,) * (len(shape) - 2)
    base = bn.name.strip("/").replace("/", ".") or "bn"
    s = add_initializer(graph, f"{base}.scale", scale.reshape(broadcast).astype(dtype))
    t = add_initializer(graph, f"{base}.shift", shift.reshape(broadcast).astype(dtype))
    mul = ir.node("Mul", [x, s], name=f"{bn.name}_mul")
    add = ir.node("Add", [mul.outputs[0], t], name=f"{bn.name}_add")
    graph.insert_before(bn, [mul, add])
    if not bypass(bn, add.outputs[0], y):
        graph.remove([mul, add], safe=True)
        return "it maps a graph input straight to a graph output"
    return None
