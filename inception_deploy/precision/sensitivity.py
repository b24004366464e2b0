"""Sensitivity and mixed precision (stage: quantize --accuracy-budget).

Each quantized layer is measured alone: a graph where only that layer (and the region
feeding it: pools, Concat inputs) is quantized, run against FP32 on the same images; its
score is the mean abs logit error it causes. Then the most sensitive layers are kept in
float, as few as found by a search over their count, until the full INT8 graph's top-1 agreement loss (in points) fits the
budget. The report lists each kept layer, its score, and the share of weights left float.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from ..backends.onnxruntime_backend import create_session, run_batched
from .insert import insert_qdq
from .placement import plan_quantization
from .rules import KeepLayers, OnlyLayers

log = logging.getLogger(__name__)


@dataclass
class SensitivityReport:
    budget_points: float
    scores: dict[str, float] = field(default_factory=dict)  # layer -> mean abs logit error alone
    kept: list[str] = field(default_factory=list)
    loss_points: float = 0.0  # agreement loss of the final graph on the probe images
    loss_before_points: float = 0.0
    weights_kept_fraction: float = 0.0
    met: bool = True
    images: int = 0

    def lines(self) -> list[str]:
        lines = [f"accuracy budget {self.budget_points:g} points of top-1 agreement on {self.images} images: "
                 f"all-INT8 loses {self.loss_before_points:.2f}, with {len(self.kept)} layer(s) kept float "
                 f"{self.loss_points:.2f}{'' if self.met else ' (budget NOT met)'}"]
        for name in self.kept:
            lines.append(f"  kept float: {name} (alone: mean abs logit error {self.scores[name]:.4g})")
        if self.kept:
            lines.append(f"  cost: {100 * self.weights_kept_fraction:.1f}% of the weights stay float")
        return lines

    def summary(self) -> dict:
        return {k: getattr(self, k) for k in ("budget_points", "kept", "loss_points", "loss_before_points",
                                              "weights_kept_fraction", "met", "images", "scores")}


def probe_inputs(recipe, source: str, count: int) -> np.ndarray:
    """The images sensitivity is measured on, in memory: a choice of its own from `source`
    (the calibration seed + 1, so not simply the calibration images)."""
    from ..data import choose_indices, open_dataset

    dataset = open_dataset(source, recipe.preprocessing)
    indices = choose_indices(dataset, min(count, len(dataset)), seed=recipe.calibration.seed + 1)
    return np.concatenate([x for x, _, _ in dataset.batches(recipe.preprocessing, 64, indices)])


def _agreement_loss(reference: np.ndarray, candidate: np.ndarray) -> float:
    return 100.0 * float(np.mean(reference.argmax(1) != candidate.argmax(1)))


def _outputs(model, inputs: np.ndarray) -> np.ndarray:
    return next(iter(run_batched(create_session(model), inputs).values()))


def fit_budget(model, rules: list, amax: dict, inputs: np.ndarray, budget_points: float,
               unsigned: set | None = None) -> tuple[SensitivityReport, list]:
    """(report, the rules to quantize with: `rules` plus a KeepLayers for the kept layers)."""
    report = SensitivityReport(budget_points, images=len(inputs))
    reference = _outputs(model, inputs)
    base_plan = plan_quantization(model, rules)
    full = _outputs(insert_qdq(model, base_plan, amax, unsigned), inputs)
    report.loss_before_points = report.loss_points = _agreement_loss(reference, full)
    if report.loss_points <= budget_points:
        return report, list(rules)
    for layer in base_plan.layers:
        probe = plan_quantization(model, [*rules, OnlyLayers(frozenset({layer}))])
        out = _outputs(insert_qdq(model, probe, amax, unsigned), inputs)
        report.scores[layer] = float(np.mean(np.abs(out - reference)))
    order = sorted(report.scores, key=report.scores.get, reverse=True)

    def loss_keeping(k: int) -> float:
        keep = KeepLayers(frozenset(order[:k]))
        out = _outputs(insert_qdq(model, plan_quantization(model, [*rules, keep]), amax, unsigned), inputs)
        loss = _agreement_loss(reference, out)
        log.info("accuracy budget: %d layer(s) kept float, agreement loss %.2f points", k, loss)
        return loss

    # Fewest layers: exponential then binary search over k, taking the loss as non-increasing
    # in k (each step keeps one more of the most sensitive layers float).
    losses = {0: report.loss_before_points}
    hi = 1
    while hi < len(order) and losses.setdefault(hi, loss_keeping(hi)) > budget_points:
        hi *= 2
    hi = min(hi, len(order))
    if hi not in losses:
        losses[hi] = loss_keeping(hi)
    lo = hi // 2  # known (or taken) to miss the budget
    while hi - lo > 1:
        mid = (lo + hi) // 2
        losses[mid] = loss_keeping(mid)
        lo, hi = (lo, mid) if losses[mid] <= budget_points else (mid, hi)
    report.kept, report.loss_points = order[:hi], losses[hi]
    chosen = [*rules, KeepLayers(frozenset(report.kept))]
    report.met = report.loss_points <= budget_points
    sizes = {i.name: int(np.prod(i.dims)) for i in model.graph.initializer}
    total = sum(sizes.get(w, 0) for w, _ in base_plan.weights.values())
    kept_w = sum(sizes.get(base_plan.weights[n][0], 0) for n in report.kept)
    report.weights_kept_fraction = kept_w / max(total, 1)
    return report, chosen
