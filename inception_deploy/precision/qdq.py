"""INT8 Q/DQ insertion with TensorRT's placement rules (stage: quantize).

Written by hand on purpose: onnxruntime's quantize_static (and Model Optimizer) place Q/DQ
for ORT's own kernels or their own heuristics; none of them does all of what TensorRT's
explicit quantization wants from an Inception graph:

- Q/DQ on the data and weight inputs of Conv and Gemm only; nothing on their outputs
  (TensorRT fuses Conv+bias+Relu and the Q that follows), biases stay float.
- weights: symmetric int8 per output channel (Conv axis 0, Gemm the output-row axis),
  stored as int8 initializers behind a DequantizeLinear; activations: symmetric per tensor.
- the quantized region extends backwards through MaxPool / AveragePool / shape-only ops
  and Concat, so an Inception module's pool branch does not fall back to float.
- every Concat's inputs and the tensor after it share one scale (the max of their amax),
  so TensorRT can elide the Concat of the four branches.

`plan_quantization` decides where Q/DQ go (rules may exclude nodes, and say why);
`insert_qdq` writes them with the calibrated amax of each tensor.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Optional

import numpy as np

from .rules import Rule, first_match

QUANTIZED_OPS = ("Conv", "Gemm")
# Output has exactly the input's values, rearranged (or a max of them): same scale.
SAME_SCALE_OPS = {"MaxPool", "GlobalMaxPool", "Flatten", "Reshape", "Squeeze", "Unsqueeze", "Transpose"}
# Output averages the input: quantized on both sides with their own scales.
AVERAGING_OPS = {"AveragePool", "GlobalAveragePool"}
MIN_SCALE = 1e-8


@dataclass
class Exclusion:
    node: str
    op_type: str
    reason: str


@dataclass
class QuantPlan:
    """Where Q/DQ go. `activations[t]` = the (node name, input index) pairs that read t
    through a Q/DQ pair; tensors of one scale group share one scale."""

    layers: list[str] = field(default_factory=list)
    excluded: list[Exclusion] = field(default_factory=list)
    activations: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    groups: dict[str, str] = field(default_factory=dict)  # tensor -> group root tensor
    weights: dict[str, tuple[str, int]] = field(default_factory=dict)  # node -> (weight initializer, axis)

    def group_members(self) -> dict[str, list[str]]:
        members: dict[str, list[str]] = {}
        for tensor in self.activations:
            members.setdefault(self.groups.get(tensor, tensor), []).append(tensor)
        return members

    def report(self) -> dict:
        return {
            "quantized_layers": len(self.layers),
            "activation_tensors": len(self.activations),
            "excluded": [e.__dict__ for e in self.excluded],
        }


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[rb] = ra


def constant_source(model, tensor: str) -> Optional[str]:
    """The initializer behind `tensor`, looking through Identity nodes (the legacy exporter
    repeats shared initializers as Identity nodes); None for a computed tensor."""
    initializers = {i.name for i in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    seen = 0
    while tensor not in initializers and seen < 16:
        node = producers.get(tensor)
        if node is None or node.op_type != "Identity":
            return None
        tensor, seen = node.input[0], seen + 1
    return tensor if tensor in initializers else None


def _weight_axis(node) -> int:
    if node.op_type == "Gemm":
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return 0 if trans_b else 1
    return 0


def plan_quantization(model, rules: Iterable[Rule] = ()) -> QuantPlan:
    rules = list(rules)
    plan = QuantPlan()
    producers = {o: n for n in model.graph.node for o in n.output}
    initializers = {i.name for i in model.graph.initializer}
    uf = _UnionFind()
    pending: list[str] = []

    def read_through_qdq(tensor: str, consumer: str, index: int) -> None:
        if tensor in initializers:
            return
        if tensor not in plan.activations:
            plan.activations[tensor] = []
            pending.append(tensor)
        if (consumer, index) not in plan.activations[tensor]:
            plan.activations[tensor].append((consumer, index))

    for node in model.graph.node:
        if node.op_type not in QUANTIZED_OPS:
            continue
        reason = first_match(rules, node)
        weight = constant_source(model, node.input[1]) if len(node.input) > 1 else None
        if reason is None and weight is None:
            reason = "weight is computed at run time, not a constant"
        if reason is None and node.op_type == "Gemm" and any(a.name == "transA" and a.i for a in node.attribute):
            reason = "Gemm with transA"
        if reason:
            plan.excluded.append(Exclusion(node.name, node.op_type, reason))
            continue
        plan.layers.append(node.name)
        plan.weights[node.name] = (weight, _weight_axis(node))
        read_through_qdq(node.input[0], node.name, 0)

    # Extend the region backwards through pools, shape-only ops and Concat.
    while pending:
        tensor = pending.pop()
        producer = producers.get(tensor)
        if producer is None:
            continue
        if producer.op_type in SAME_SCALE_OPS:
            read_through_qdq(producer.input[0], producer.name, 0)
            uf.union(tensor, producer.input[0])
        elif producer.op_type in AVERAGING_OPS:
            read_through_qdq(producer.input[0], producer.name, 0)
        elif producer.op_type == "Concat":
            for index, source in enumerate(producer.input):
                if source and source not in initializers:
                    read_through_qdq(source, producer.name, index)
                    uf.union(tensor, source)
    plan.groups = {t: uf.find(t) for t in plan.activations}
    return plan


def group_amax(plan: QuantPlan, amax: dict[str, float]) -> dict[str, float]:
    """Each tensor's amax raised to its group's max (shared Concat / MaxPool scales)."""
    missing = [t for t in plan.activations if t not in amax]
    if missing:
        raise KeyError(missing[0])
    shared = {}
    for root, members in plan.group_members().items():
        top = max(amax[m] for m in members)
        for m in members:
            shared[m] = top
    return shared


def quantize_weight(weight: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-channel int8: scale = max |w| / 127 along every axis but `axis`."""
    moved = np.moveaxis(weight.astype(np.float32), axis, 0)
    amax = np.abs(moved.reshape(moved.shape[0], -1)).max(axis=1)
    scale = np.maximum(amax / 127.0, MIN_SCALE).astype(np.float32)
    shape = [1] * weight.ndim
    shape[axis] = -1
    q = np.clip(np.rint(weight / scale.reshape(shape)), -127, 127).astype(np.int8)
    return q, scale


def insert_qdq(model, plan: QuantPlan, amax: dict[str, float], unsigned: Optional[set] = None):
    """A copy of `model` with Q/DQ pairs per `plan` and int8 weights.

    `unsigned`: tensors to quantize as uint8 with zero point 0 and the same scale (for
    non-negative tensors after Relu; ORT CPU's kernels prefer u8 activations). The values an
    int8 pair reproduces are unchanged; only |x| > amax clips at 2 x amax instead of amax.
    """
    import onnx
    from onnx import helper, numpy_helper

    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    shared = group_amax(plan, amax)
    unsigned = unsigned or set()
    initializers = {i.name: i for i in graph.initializer}
    new_inits, new_nodes = [], {}

    # Activations: one Q/DQ pair per tensor, placed right after its producer.
    replacement: dict[tuple[str, int], str] = {}
    for tensor, readers in plan.activations.items():
        scale = max(shared[tensor] / 127.0, MIN_SCALE)
        base = tensor.replace("/", "_").strip("_") or "t"
        scale_name, zp_name = f"{base}_scale", f"{base}_zero_point"
        q_out, dq_out = f"{tensor}_quantized", f"{tensor}_dequantized"
        zp_type = np.uint8 if tensor in unsigned else np.int8
        new_inits += [numpy_helper.from_array(np.array(scale, dtype=np.float32), scale_name),
                      numpy_helper.from_array(np.array(0, dtype=zp_type), zp_name)]
        new_nodes.setdefault(tensor, []).extend([
            helper.make_node("QuantizeLinear", [tensor, scale_name, zp_name], [q_out], name=f"{base}_QuantizeLinear"),
            helper.make_node("DequantizeLinear", [q_out, scale_name, zp_name], [dq_out], name=f"{base}_DequantizeLinear"),
        ])
        for reader in readers:
            replacement[reader] = dq_out

    # Weights: int8 initializer + per-channel DQ, shared between nodes reading one weight.
    weight_dq: dict[str, str] = {}
    weight_nodes = []
    for node_name, (weight, axis) in plan.weights.items():
        if weight in weight_dq:
            continue
        array = numpy_helper.to_array(initializers[weight])
        q, scale = quantize_weight(array, axis)
        base = weight.replace("/", "_").replace(":", "_")
        names = (f"{base}_int8", f"{base}_wscale", f"{base}_wzero_point", f"{base}_dequantized")
        new_inits += [numpy_helper.from_array(q, names[0]), numpy_helper.from_array(scale, names[1]),
                      numpy_helper.from_array(np.zeros(scale.shape, dtype=np.int8), names[2])]
        weight_nodes.append(helper.make_node("DequantizeLinear", list(names[:3]), [names[3]], axis=axis,
                                             name=f"{base}_DequantizeLinear"))
        weight_dq[weight] = names[3]

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
        ordered += new_nodes.get(tensor, [])
    for node in nodes:
        ordered.append(node)
        for output in node.output:
            ordered += new_nodes.get(output, [])
    del graph.node[:]
    graph.node.extend(ordered)
    graph.initializer.extend(new_inits)
    # The float weights no DequantizeLinear replaced stay; the quantized ones go if unused.
    used = {i for n in graph.node for i in n.input}
    kept = [i for i in graph.initializer if i.name in used or i.name in {o.name for o in graph.output}]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    _ensure_opset(out, 13)
    return out


def _ensure_opset(model, minimum: int) -> None:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx") and entry.version < minimum:
            entry.version = minimum  # per-channel DequantizeLinear (axis) needs opset 13


# --------------------------------------------------------------------------- bias correction
def correct_bias(model, shifts: dict[str, np.ndarray]) -> list[str]:
    """Subtract each Conv/Gemm layer's shift (bias.measure_bias_corrections) from its float
    bias, in place on `model` (the Q/DQ graph); a layer without a bias gets one. Biases stay
    float (TensorRT adds them in float after the int8 convolution). Returns the layers
    corrected."""
    from onnx import numpy_helper

    from ..lint.graph import attribute

    initializers = {i.name: i for i in model.graph.initializer}
    corrected = []
    for node in model.graph.node:
        shift = shifts.get(node.name)
        if node.op_type not in QUANTIZED_OPS or shift is None:
            continue
        if len(node.input) > 2 and node.input[2]:
            source = constant_source(model, node.input[2])
            if source is None:
                continue  # a bias computed at run time: leave it
            bias = numpy_helper.to_array(initializers[source]).astype(np.float32)
        else:
            bias = np.zeros(shift.shape, dtype=np.float32)
        if node.op_type == "Gemm":
            beta = attribute(node, "beta", 1.0)
            if beta == 0.0:
                continue
            shift = shift / beta
        if bias.size == shift.size:
            new = bias - shift.reshape(bias.shape)
        elif bias.size == 1:  # a scalar Gemm C broadcast over the outputs
            new = bias.reshape(-1)[0] - shift
        else:
            continue  # broadcast in a way a per-channel shift cannot follow
        new = new.astype(np.float32)
        name = f"{node.name.replace('/', '_').strip('_')}_bias_corrected"
        tensor = numpy_helper.from_array(new, name)
        model.graph.initializer.append(tensor)
        initializers[name] = tensor
        while len(node.input) < 3:
            node.input.append("")
        node.input[2] = name
        corrected.append(node.name)
    used = {i for n in model.graph.node for i in n.input}
    kept = [i for i in model.graph.initializer if i.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    return corrected
