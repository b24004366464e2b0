"""Precision rules (stage: quantize): which nodes stay out of INT8 or out of FP16.

Each rule is a small object with `match(node) -> reason or None`; the first rule that
matches a node decides, and its reason goes into the report. Recipes list exclusions by
node name, op type or regex (precision.int8.exclude); the accuracy budget adds
`KeepLayers` rules for the layers it measured as most sensitive.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable, Optional, Protocol

from ..errors import UserError


class Rule(Protocol):
    def match(self, node) -> Optional[str]: ...


@dataclass(frozen=True)
class ByName:
    name: str
    reason: str = ""

    def match(self, node) -> Optional[str]:
        return (self.reason or f"name is {self.name}") if node.name == self.name else None


@dataclass(frozen=True)
class ByOpType:
    op_type: str
    reason: str = ""

    def match(self, node) -> Optional[str]:
        return (self.reason or f"op type {self.op_type} excluded") if node.op_type == self.op_type else None


@dataclass(frozen=True)
class ByRegex:
    pattern: str
    reason: str = ""

    def __post_init__(self) -> None:
        try:
            re.compile(self.pattern)
        except re.error as exc:
            raise UserError(f"precision.int8.exclude: regex {self.pattern!r} is invalid ({exc}); fix the pattern") from None

    def match(self, node) -> Optional[str]:
        return (self.reason or f"name matches /{self.pattern}/") if re.search(self.pattern, node.name) else None


@dataclass(frozen=True)
class KeepLayers:
    """Layers the accuracy budget keeps in higher precision."""

    names: frozenset = field(default_factory=frozenset)
    reason: str = "kept for the accuracy budget"

    def match(self, node) -> Optional[str]:
        return self.reason if node.name in self.names else None


@dataclass(frozen=True)
class OnlyLayers:
    """Everything but these layers stays float (used to measure one layer's sensitivity)."""

    names: frozenset = field(default_factory=frozenset)

    def match(self, node) -> Optional[str]:
        return None if node.name in self.names else "sensitivity probe"


@dataclass(frozen=True)
class SmallGemm:
    """A Gemm with fewer than `min_dim` outputs or inputs stays float: TensorRT's INT8 GEMM
    kernels need N and K >= 16 to gain anything, and on such a layer the int8 rounding of its
    input goes straight into the logits (Model Optimizer excludes these by the same rule).
    On the digits GoogLeNet this is the 1024 -> 10 classifier (0.01% of the MACs); measured
    on 450 held-out digits it takes the entropy INT8 max abs logit error from 0.39 to 0.26."""

    weights: dict = field(default_factory=dict, hash=False, compare=False)  # initializer name -> shape
    min_dim: int = 16

    def match(self, node) -> Optional[str]:
        if node.op_type != "Gemm" or len(node.input) < 2:
            return None
        shape = self.weights.get(node.input[1])
        if shape is None or len(shape) != 2:
            return None
        small = min(shape)
        if small < self.min_dim:
            return f"Gemm with a dimension of {small} < {self.min_dim}: no INT8 gain in TensorRT, error straight into the outputs"
        return None

    @classmethod
    def for_model(cls, model, min_dim: int = 16) -> "SmallGemm":
        return cls({i.name: tuple(i.dims) for i in model.graph.initializer}, min_dim)


def first_match(rules: Iterable[Rule], node) -> Optional[str]:
    for rule in rules:
        reason = rule.match(node)
        if reason:
            return reason
    return None


def rules_from_recipe(exclusions) -> list[Rule]:
    """recipe.precision.int8.exclude entries -> rule objects (one per given key)."""
    rules: list[Rule] = []
    for entry in exclusions:
        if entry.name:
            rules.append(ByName(entry.name, entry.reason))
        if entry.op_type:
            rules.append(ByOpType(entry.op_type, entry.reason))
        if entry.regex:
            rules.append(ByRegex(entry.regex, entry.reason))
    return rules


# --------------------------------------------------------------------------- FP16
FP16_MAX = 65504.0


@dataclass(frozen=True)
class KeepOpTypeFp32:
    op_type: str

    def match(self, node) -> Optional[str]:
        return f"op type {self.op_type} kept FP32 by the recipe" if node.op_type == self.op_type else None


@dataclass(frozen=True)
class RangeNearFp16Max:
    """A node reading or writing a tensor whose observed |x| passes margin * 65504 stays FP32:
    in FP16 that tensor would overflow to inf (or come within one rounding step of it)."""

    absmax: dict
    margin: float = 0.5

    def match(self, node) -> Optional[str]:
        limit = self.margin * FP16_MAX
        for tensor in [*node.output, *node.input]:
            value = self.absmax.get(tensor)
            if value is not None and value > limit:
                return f"'{tensor}' reaches |x| = {value:.4g} > {self.margin:g} x FP16 max ({limit:.4g})"
        return None
