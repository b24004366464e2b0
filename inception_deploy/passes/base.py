"""Graph passes: the pass interface, the registry and graph helpers (stage: optimize).

A pass is a small class with a registered `name` and a docstring whose first line names
the pattern it rewrites. It edits an onnx-ir model in place and returns notes (what it
kept and why); the runner (passes/__init__.py) does the cleanup and the bookkeeping
(node counts by op type before/after) and the safety check does the proving.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Optional

import numpy as np

from ..errors import UserError

if TYPE_CHECKING:  # onnx_ir is light, but keep the registry importable without it
    import onnx_ir as ir


@dataclass
class PassContext:
    """What a pass may know beyond the graph: the recipe, the input's manifest, the user's choices."""

    recipe: object = None  # recipes.Recipe or None for a graph made elsewhere
    manifest: Optional[dict] = None
    keep_outputs: Optional[list[str]] = None
    aux_output_names: tuple[str, ...] = ()  # declared by the recipe's architecture
    main_output: Optional[str] = None  # declared by the recipe (export.output_name)


class GraphPass:
    """Base of all passes. Subclasses set `name` and implement `run`."""

    name: ClassVar[str] = ""
    # What it means when the pass changed nothing, said to the user ("nothing to do: ...").
    idle: ClassVar[str] = "nothing matched its pattern"

    @classmethod
    def description(cls) -> str:
        return (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""

    def run(self, model: "ir.Model", ctx: PassContext) -> list[str]:
        """Rewrite `model` in place; return notes (kept patterns with their reason)."""
        raise NotImplementedError


REGISTRY: dict[str, type[GraphPass]] = {}


def register(cls: type[GraphPass]) -> type[GraphPass]:
    """Class decorator: make a pass available by its name (recipes, --passes)."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    REGISTRY[cls.name] = cls
    return cls


def unregister(name: str) -> None:
    REGISTRY.pop(name, None)


def get_pass(name: str, where: str = "--passes") -> type[GraphPass]:
    cls = REGISTRY.get(name)
    if cls is None:
        close = difflib.get_close_matches(name, sorted(REGISTRY), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise UserError(f"{where}: unknown pass '{name}'{hint}; known: {', '.join(sorted(REGISTRY))}")
    return cls


# --------------------------------------------------------------------------- graph helpers
def const_array(value) -> Optional[np.ndarray]:
    """The constant behind a value (initializer, Constant node, Identity of either), or None.

    An initializer that is also a graph input can be overridden at run time: not constant."""
    if value is None or value.is_graph_input():
        return None
    if value.const_value is not None:
        return value.const_value.numpy()
    producer = value.producer()
    if producer is not None and producer.op_type == "Identity" and producer.domain == "":
        return const_array(producer.inputs[0])  # torch's legacy exporter: Identity over a repeated initializer
    if producer is not None and producer.op_type == "Constant" and producer.domain == "":
        attr = producer.attributes.get("value")
        if attr is not None:
            return attr.as_tensor().numpy()
    return None


def int_attr(node, name: str, default: int) -> int:
    attr = node.attributes.get(name)
    return default if attr is None else attr.as_int()


def float_attr(node, name: str, default: float) -> float:
    attr = node.attributes.get(name)
    return default if attr is None else attr.as_float()


def ints_attr(node, name: str, default=None):
    attr = node.attributes.get(name)
    return default if attr is None else list(attr.as_ints())


def unique_name(graph, base: str) -> str:
    taken = set(graph.initializers)
    taken.update(v.name for v in graph.inputs)
    taken.update(o.name for n in graph for o in n.outputs)
    if base not in taken:
        return base
    i = 1
    while f"{base}_{i}" in taken:
        i += 1
    return f"{base}_{i}"


def add_initializer(graph, base_name: str, array: np.ndarray):
    import onnx_ir as ir

    name = unique_name(graph, base_name)
    value = ir.Value(name=name, const_value=ir.tensor(np.ascontiguousarray(array), name=name))
    value.shape = ir.Shape(array.shape)
    value.type = ir.TensorType(ir.DataType.from_numpy(array.dtype))
    graph.register_initializer(value)
    return value


def replace_weight(graph, node, index: int, array: np.ndarray, suffix: str):
    """Give `node` a new constant at input `index`, in place when no other node reads the old one.

    Rewriting a shared initializer in place would change the other readers too (the bug
    behind several BN-folding reports): shared weights get a copy under a new name."""
    import onnx_ir as ir

    old = node.inputs[index] if index < len(node.inputs) else None
    exclusive = old is not None and old.is_initializer() and not old.is_graph_output() and \
        all(user is node for user, _ in old.uses())
    if exclusive:
        old.const_value = ir.tensor(np.ascontiguousarray(array), name=old.name)
        old.shape = ir.Shape(array.shape)
        return old
    base = (old.name if old is not None and old.name else (node.name or node.op_type).strip("/").replace("/", ".")) + suffix
    value = add_initializer(graph, base, array)
    if index < len(node.inputs):
        node.replace_input_with(index, value)
    else:
        node.resize_inputs(index + 1)
        node.replace_input_with(index, value)
    return value


def bypass(node, source, target) -> bool:
    """Make readers of `target` (an output of `node`) read `source`, then drop `node`.

    Graph outputs keep their names: `source` takes `target`'s name when `target` is a
    graph output, unless `source` is itself a graph input, initializer or output, in which
    case the node stays (returns False)."""
    graph = node.graph
    if target.is_graph_output():
        if source.is_graph_input() or source.is_initializer() or source.is_graph_output():
            return False
        if any(o is not target and o.uses() for o in node.outputs):
            return False
        name = target.name
        target.replace_all_uses_with(source, replace_graph_outputs=True)
        graph.remove(node, safe=True)
        source.name = name
        return True
    if any(o is not target and (o.uses() or o.is_graph_output()) for o in node.outputs):
        return False
    target.replace_all_uses_with(source)
    graph.remove(node, safe=True)
    return True


def op_counts(graph) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in graph:
        key = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


def ancestors(values) -> set:
    """All nodes the given values depend on (their backward cone)."""
    seen: set = set()
    stack = [v.producer() for v in values if v is not None and v.producer() is not None]
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        stack.extend(v.producer() for v in node.inputs if v is not None and v.producer() is not None)
    return seen


@dataclass
class PassRecord:
    """What one pass changed: node counts by op type and the pass's notes."""

    name: str
    removed: dict[str, int] = field(default_factory=dict)
    added: dict[str, int] = field(default_factory=dict)
    nodes_before: int = 0
    nodes_after: int = 0
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    check: Optional[dict] = None  # output -> comparison summary (check="each")
    idle: str = ""  # the pass's `idle` text, when it changed nothing

    @property
    def changed(self) -> bool:
        return bool(self.removed or self.added) or self.nodes_before != self.nodes_after

    def to_dict(self) -> dict:
        return {
            "pass": self.name, "nodes_before": self.nodes_before, "nodes_after": self.nodes_after,
            "removed": self.removed, "added": self.added, "notes": self.notes,
            "seconds": round(self.seconds, 3), **({"check": self.check} if self.check else {}),
            **({} if self.changed else {"nothing_to_do": self.idle}),
        }
