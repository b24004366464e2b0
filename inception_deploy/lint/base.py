"""The rule shape every lint check has (stage: lint).

A rule is a small object with an id, a one-line description and a `check` that yields
findings; node rules say which op types they look at. Rules are listed in
`inception_deploy.lint.RULES`; adding one is adding an object, not another `if`.
"""

from __future__ import annotations

from typing import ClassVar, Iterable, Iterator

import onnx

from .graph import GraphView
from .report import Finding
from .targets import Target


class Rule:
    id: ClassVar[str]
    description: ClassVar[str]

    def check(self, view: GraphView, target: Target) -> Iterable[Finding]:
        raise NotImplementedError

    def error(self, where: str, message: str) -> Finding:
        return Finding("error", self.id, where, message)

    def warning(self, where: str, message: str) -> Finding:
        return Finding("warning", self.id, where, message)

    def info(self, where: str, message: str) -> Finding:
        return Finding("info", self.id, where, message)


class NodeRule(Rule):
    """A rule that looks at nodes one at a time; `op_types` None: every node."""

    op_types: ClassVar[frozenset[str] | None] = None

    def check(self, view: GraphView, target: Target) -> Iterator[Finding]:
        for node in view.nodes:
            if self.op_types is None or node.op_type in self.op_types:
                yield from self.check_node(view, target, node)

    def check_node(self, view: GraphView, target: Target, node: onnx.NodeProto) -> Iterable[Finding]:
        raise NotImplementedError
