"""Where INT8 Q/DQ go, by TensorRT's placement rules (stage: quantize).

Written by hand on purpose: onnxruntime's quantize_static (and Model Optimizer) place Q/DQ
for ORT's own kernels or their own heuristics; none of them does all of what TensorRT's
explicit quantization wants from an Inception graph:

- Q/DQ on the data and weight inputs of Conv and Gemm only; nothing on their outputs
  (TensorRT fuses Conv+bias+Relu and the Q that follows), biases stay float.
- weights: symmetric int8 per output channel (Conv axis 0, Gemm the output-row axis);
  activations: symmetric per tensor.
- the quantized region extends backwards through MaxPool / AveragePool / shape-only ops
  and Concat, so an Inception module's pool branch does not fall back to float.
- every Concat's inputs and the tensor after it share one scale (the max of their amax),
  so TensorRT can elide the Concat of the four branches.

`plan_quantization` decides where Q/DQ go (rules may exclude nodes, and say why);
insert.insert_qdq writes them with the calibrated amax of each tensor.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

from ..graph_utils import GraphIndex, attribute, constant_source
from .rules import Rule, first_match

QUANTIZED_OPS = ("Conv", "Gemm")
# Output has exactly the input's values, rearranged (or a max of them): same scale.
SAME_SCALE_OPS = {"MaxPool", "GlobalMaxPool", "Flatten", "Reshape", "Squeeze", "Unsqueeze", "Transpose"}
# Output averages the input: quantized on both sides with their own scales.
AVERAGING_OPS = {"AveragePool", "GlobalAveragePool"}


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


def _weight_axis(node) -> int:
    """The output-channel axis of a Conv or Gemm weight."""
    if node.op_type == "Gemm":
        return 0 if attribute(node, "transB", 0) else 1
    return 0


def plan_quantization(model, rules: Iterable[Rule] = (), read_quantized: Iterable[str] = ()) -> QuantPlan:
    """`read_quantized`: op types (without weights) whose data input is read through a Q/DQ
    too, so a target's runtime can fuse the op before them (ort-cpu: Flatten, so that the
    Concat and GlobalAveragePool before a float classifier run as QLinear kernels)."""
    rules, read_quantized = list(rules), set(read_quantized)
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

    lookup = GraphIndex(model)
    for node in model.graph.node:
        if node.op_type not in QUANTIZED_OPS:
            continue
        reason = first_match(rules, node)
        weight = constant_source(model, node.input[1], lookup) if len(node.input) > 1 else None
        if reason is None and weight is None:
            reason = "weight is computed at run time, not a constant"
        if reason is None and node.op_type == "Gemm" and attribute(node, "transA", 0):
            reason = "Gemm with transA"
        if reason:
            plan.excluded.append(Exclusion(node.name, node.op_type, reason))
            continue
        plan.layers.append(node.name)
        plan.weights[node.name] = (weight, _weight_axis(node))
        read_through_qdq(node.input[0], node.name, 0)

    for node in model.graph.node:
        if node.op_type in read_quantized and node.input and not first_match(rules, node):
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
