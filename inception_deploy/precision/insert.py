"""Writing INT8 Q/DQ into a graph (stage: quantize): the plan (placement.py) and the amax become
QuantizeLinear/DequantizeLinear pairs on activations and int8 weights behind a per-channel
DequantizeLinear, in topological order.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from .placement import QuantPlan, group_amax
from .targets import MIN_SCALE, TensorRTTarget


def quantize_weight(weight: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-channel int8: scale = max |w| / 127 along every axis but `axis`."""
    moved = np.moveaxis(weight.astype(np.float32), axis, 0)
    amax = np.abs(moved.reshape(moved.shape[0], -1)).max(axis=1)
    scale = np.maximum(amax / 127.0, MIN_SCALE).astype(np.float32)
    shape = [1] * weight.ndim
    shape[axis] = -1
    q = np.clip(np.rint(weight / scale.reshape(shape)), -127, 127).astype(np.int8)
    return q, scale


def insert_qdq(model, plan: QuantPlan, amax: dict[str, float], unsigned: Optional[set] = None,
               target=None, low: Optional[dict[str, float]] = None):
    """A copy of `model` with Q/DQ pairs per `plan` and int8 weights.

    `unsigned`: tensors to quantize as uint8 with zero point 0 and the same scale (for
    non-negative tensors after Relu; ORT CPU's kernels prefer u8 activations). The values an
    int8 pair reproduces are unchanged; only |x| > amax clips at 2 x amax instead of amax.
    `target` (targets.py) with `low` (tensor -> observed min): the target decides each
    activation's scale and zero point instead (ort-cpu: asymmetric uint8).
    """
    from ..graph_utils import copy_without_initializers

    # Without the float weights: the ones the int8 weights replace never enter the copy (a
    # protobuf arena would keep their bytes after a delete: 95 MB on Inception v3).
    out = copy_without_initializers(model)
    graph = out.graph
    if target is None:
        target, low = TensorRTTarget(unsigned_activations=True), {t: 0.0 for t in unsigned or ()}
    act_inits, act_nodes, replacement = _activation_pairs(plan, group_amax(plan, amax), group_low(plan, low or {}),
                                                          target)
    weight_inits, weight_nodes, weight_dq = _weight_dequantizers(plan, {i.name: i for i in model.graph.initializer})
    # Rewire readers, then rebuild the node list in topological order.
    nodes = list(graph.node)
    for node in nodes:
        for index, name in enumerate(node.input):
            if (node.name, index) in replacement:
                node.input[index] = replacement[(node.name, index)]
        if node.name in plan.weights:
            node.input[1] = weight_dq[plan.weights[node.name][0]]
    ordered = list(weight_nodes)
    for tensor in [i.name for i in graph.input]:
        ordered += act_nodes.get(tensor, [])
    for node in nodes:
        ordered.append(node)
        for output in node.output:
            ordered += act_nodes.get(output, [])
    del graph.node[:]
    graph.node.extend(ordered)
    # The float initializers still read stay (biases, float layers' weights), in their order.
    read = {name for node in ordered for name in node.input} | {o.name for o in graph.output}
    graph.initializer.extend(init for init in model.graph.initializer if init.name in read)
    graph.initializer.extend(act_inits + weight_inits)
    _ensure_opset(out, 13)
    return out


def group_low(plan: QuantPlan, low: dict[str, float]) -> dict[str, Optional[float]]:
    """Each tensor's observed min lowered to its group's (None where a member's is unknown)."""
    shared = {}
    for members in plan.group_members().values():
        lows = [low.get(m) for m in members]
        value = None if any(v is None for v in lows) else min(lows)
        shared.update(dict.fromkeys(members, value))
    return shared


def _activation_pairs(plan: QuantPlan, shared: dict[str, float], low: dict[str, Optional[float]], target):
    """One Q/DQ pair per activation tensor, to be placed right after its producer:
    (initializers, tensor -> [Q, DQ], (reader node, input index) -> the DQ output it reads)."""
    from onnx import helper, numpy_helper

    inits, nodes, replacement = [], {}, {}
    for tensor, readers in plan.activations.items():
        scale, zero_point = target.activation(shared[tensor], low[tensor])
        base = tensor.replace("/", "_").strip("_") or "t"
        scale_name, zp_name = f"{base}_scale", f"{base}_zero_point"
        q_out, dq_out = f"{tensor}_quantized", f"{tensor}_dequantized"
        inits += [numpy_helper.from_array(np.array(scale, dtype=np.float32), scale_name),
                  numpy_helper.from_array(zero_point, zp_name)]
        nodes.setdefault(tensor, []).extend([
            helper.make_node("QuantizeLinear", [tensor, scale_name, zp_name], [q_out], name=f"{base}_QuantizeLinear"),
            helper.make_node("DequantizeLinear", [q_out, scale_name, zp_name], [dq_out], name=f"{base}_DequantizeLinear"),
        ])
        for reader in readers:
            replacement[reader] = dq_out
    return inits, nodes, replacement


def _weight_dequantizers(plan: QuantPlan, initializers: dict):
    """Int8 weights behind a per-channel DQ, shared between nodes reading one weight:
    (initializers, DQ nodes, weight name -> the DQ output)."""
    from onnx import helper, numpy_helper

    inits, nodes, dq_of = [], [], {}
    for weight, axis in plan.weights.values():
        if weight in dq_of:
            continue
        q, scale = quantize_weight(numpy_helper.to_array(initializers[weight]), axis)
        base = weight.replace("/", "_").replace(":", "_")
        names = (f"{base}_int8", f"{base}_wscale", f"{base}_wzero_point", f"{base}_dequantized")
        inits += [numpy_helper.from_array(q, names[0]), numpy_helper.from_array(scale, names[1]),
                  numpy_helper.from_array(np.zeros(scale.shape, dtype=np.int8), names[2])]
        nodes.append(helper.make_node("DequantizeLinear", list(names[:3]), [names[3]], axis=axis,
                                      name=f"{base}_DequantizeLinear"))
        dq_of[weight] = names[3]
    return inits, nodes, dq_of


def _ensure_opset(model, minimum: int) -> None:
    from ..graph_utils import DEFAULT_DOMAINS

    for entry in model.opset_import:
        if entry.domain in DEFAULT_DOMAINS and entry.version < minimum:
            entry.version = minimum  # per-channel DequantizeLinear (axis) needs opset 13
