"""Verdicts (stage: validate): a target's precision, and its metrics judged by the recipe's tolerances.

The precision decides which `recipe.tolerances` entry applies: a Q/DQ graph is INT8, a
graph with FLOAT16 tensors is FP16, anything else FP32 (the same classification
build-engine uses, `engine.graph_precision.classify_graph`); a TensorRT plan's precision
is read from the manifest written beside it. Each tolerance field becomes one `Check`;
agreement and accuracy checks compare the measured value or, with the tolerance's
`judge: lower_bound`, the worst end of its 95% interval, and warn when the data set is too
small for the threshold (0.99 agreement needs 381 images even when every one agrees).
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
    warning: Optional[str] = None  # e.g. the data set is too small to show the threshold

    def fail_skipped(self) -> None:
        """--strict: a check that could not run fails (GPU CI must not go green on a CPU runner)."""
        if self.status == "SKIPPED":
            self.status = "FAILED"
            self.tolerance += " [skipped: fails under --strict]"

    @property
    def passed(self) -> bool:
        return self.status != "FAILED"

    def line(self, show_output: bool = False) -> str:
        metric = f"{self.output}: {self.metric}" if show_output else self.metric
        value = "n/a" if self.value is None else f"{self.value:.6g}"
        return f"{self.status} | {self.target} | {metric} | {value} | {self.tolerance}"

    def to_dict(self) -> dict:
        return {"target": self.target, "output": self.output, "metric": self.metric, "value": self.value,
                "tolerance": self.tolerance, "status": self.status, "precision": self.precision,
                **({"warning": self.warning} if self.warning else {})}


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
    """One Check per threshold set in `tolerance` (a recipes.Tolerance). Agreement and accuracy
    checks carry a warning when the data set is too small for the threshold asked."""
    from .metrics import agreement_images_needed, mcnemar_pvalue, paired_difference_interval, wilson_interval

    c, t = comparison, tolerance
    on_bound = getattr(t, "judge", "point") == "lower_bound"
    checks: list[Check] = []

    def add(metric: str, value: Optional[float], tol: str, ok: Optional[bool], warning: Optional[str] = None) -> None:
        status = "SKIPPED" if ok is None else ("PASSED" if ok else "FAILED")
        checks.append(Check(target, c.name, metric, value, tol, status, precision, warning))

    def agreement(metric: str, agreeing: int, threshold: float) -> None:
        n = c.count
        value = agreeing / n if n else 1.0
        low, high = wilson_interval(agreeing, n)
        # A threshold of 1 asks that every image agree: no interval's lower end ever reaches it.
        bounded = on_bound and threshold < 1.0
        text = f">= {threshold:g} (95% CI {low:.4f}-{high:.4f}{', judged on the lower bound' if bounded else ''})"
        needed = agreement_images_needed(threshold)
        warning = None
        if needed is not None and n < needed:
            warning = (f"{n} images cannot show {metric} >= {threshold:g} at 95% confidence: even {n}/{n} agreeing "
                       f"gives a lower bound of {wilson_interval(n, n)[0]:.4f}; that needs at least {needed} images")
        add(metric, value, text, (low if bounded else value) >= threshold, warning)

    if t.max_abs_error_rel is not None or t.max_abs_error is not None:
        rel, abs_ = t.max_abs_error_rel or 0.0, t.max_abs_error or 0.0
        allowed = rel * c.max_abs_reference + abs_
        text = (f"<= {rel:g} x {c.max_abs_reference:.4g} + {abs_:g} = {allowed:.3g}" if t.max_abs_error_rel is not None
                else f"<= {abs_:g}")
        add("max_abs_error", c.max_abs_error, text, c.max_abs_error <= allowed)
    if t.cosine_min is not None:
        add("cosine_min", c.cosine_min, f">= {t.cosine_min:g}", c.cosine_min >= t.cosine_min)
    if t.top1_agreement_min is not None:
        agreement("top1_agreement", c.top1_agree_count, t.top1_agreement_min)
    if t.top5_agreement_min is not None:
        agreement("top5_agreement", c.top5_agree_count, t.top5_agreement_min)
    if t.top1_accuracy_drop_max is not None:
        drop, allowed = c.top1_accuracy_drop, t.top1_accuracy_drop_max
        if drop is None:
            add("top1_accuracy_drop", None, f"<= {allowed:g} points (needs labels)", None)
        else:
            n = c.labelled
            low, high = (100 * v for v in paired_difference_interval(c.mcnemar_b, c.mcnemar_c, n))
            p = mcnemar_pvalue(c.mcnemar_b, c.mcnemar_c)
            text = (f"<= {allowed:g} points (95% CI {low:+.2f} to {high:+.2f}, McNemar p={p:.3g}"
                    f"{', judged on the upper bound' if on_bound else ''})")
            warning = None
            if 100 / n > allowed:
                warning = (f"{n} labelled images: one image is {100 / n:.3g} points of accuracy, coarser than the "
                           f"allowed top1_accuracy_drop of {allowed:g} points")
            add("top1_accuracy_drop", drop, text, (high if on_bound else drop) <= allowed, warning)
    return checks
