"""Verdicts (stage: validate): a target's precision, and its metrics judged by the recipe's tolerances.

The precision decides which `recipe.tolerances` entry applies: a Q/DQ graph is INT8, a
graph with FLOAT16 tensors is FP16, anything else FP32 (the same classification
build-engine uses, `engine.graph_precision.classify_graph`); a TensorRT plan's precision
is read from the manifest written beside it. Each tolerance field becomes one `Check`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .metrics import ValidationComparison


@dataclass
class Check:
    target: str
    output: str
    metric: str
    value: Optional[float]
    tolerance: str
    status: str  # PASSED | FAILED | SKIPPED
    precision: str = "fp32"

    @property
    def passed(self) -> bool:
        return self.status != "FAILED"

    def line(self, show_output: bool = False) -> str:
        metric = f"{self.output}: {self.metric}" if show_output else self.metric
        value = "n/a" if self.value is None else f"{self.value:.6g}"
        return f"{self.status} | {self.target} | {metric} | {value} | {self.tolerance}"

    def to_dict(self) -> dict:
        return {"target": self.target, "output": self.output, "metric": self.metric, "value": self.value,
                "tolerance": self.tolerance, "status": self.status, "precision": self.precision}


def onnx_precision(model) -> str:
    """'int8' for a Q/DQ graph, 'fp16' for a graph with FP16 tensors, else 'fp32'."""
    from ..engine.graph_precision import classify_graph

    kind = classify_graph(model).kind
    return kind if kind in ("int8", "fp16") else ("fp16" if kind == "bf16" else "fp32")


def plan_precision(path: Path) -> str:
    """A plan's precision from its manifest (model.plan.json); FP32 when there is none."""
    for candidate in (path.with_name(path.name + ".json"), path.with_suffix(".json")):
        if candidate.is_file():
            try:
                precision = str(json.loads(candidate.read_text()).get("precision", "fp32")).lower()
            except (json.JSONDecodeError, AttributeError):
                continue
            return precision if precision in ("fp32", "fp16", "int8") else "fp32"
    return "fp32"


def judge(target: str, comparison: ValidationComparison, tolerance, precision: str) -> list[Check]:
    """One Check per threshold set in `tolerance` (a recipes.Tolerance)."""
    c, t = comparison, tolerance
    checks: list[Check] = []

    def add(metric: str, value: Optional[float], tol: str, ok: Optional[bool]) -> None:
        status = "SKIPPED" if ok is None else ("PASSED" if ok else "FAILED")
        checks.append(Check(target, c.name, metric, value, tol, status, precision))

    if t.max_abs_error_rel is not None or t.max_abs_error is not None:
        rel, abs_ = t.max_abs_error_rel or 0.0, t.max_abs_error or 0.0
        allowed = rel * c.max_abs_reference + abs_
        text = (f"<= {rel:g} x {c.max_abs_reference:.4g} + {abs_:g} = {allowed:.3g}" if t.max_abs_error_rel is not None
                else f"<= {abs_:g}")
        add("max_abs_error", c.max_abs_error, text, c.max_abs_error <= allowed)
    if t.cosine_min is not None:
        add("cosine_min", c.cosine_min, f">= {t.cosine_min:g}", c.cosine_min >= t.cosine_min)
    if t.top1_agreement_min is not None:
        low, high = _ci(c.top1_agree_count, c.count)
        add("top1_agreement", c.top1_agreement, f">= {t.top1_agreement_min:g} (95% CI {low:.4f}-{high:.4f})",
            c.top1_agreement >= t.top1_agreement_min)
    if t.top5_agreement_min is not None:
        add("top5_agreement", c.top5_agreement, f">= {t.top5_agreement_min:g}", c.top5_agreement >= t.top5_agreement_min)
    if t.top1_accuracy_drop_max is not None:
        drop = c.top1_accuracy_drop
        if drop is None:
            add("top1_accuracy_drop", None, f"<= {t.top1_accuracy_drop_max:g} points (needs labels)", None)
        else:
            from .metrics import mcnemar_pvalue

            p = mcnemar_pvalue(c.mcnemar_b, c.mcnemar_c)
            add("top1_accuracy_drop", drop, f"<= {t.top1_accuracy_drop_max:g} points (McNemar p={p:.3g})",
                drop <= t.top1_accuracy_drop_max)
    return checks


def _ci(successes: int, total: int) -> tuple[float, float]:
    from .metrics import wilson_interval

    return wilson_interval(successes, total)
