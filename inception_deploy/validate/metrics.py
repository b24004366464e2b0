"""Validation metrics (stage: validate): compare.py's OutputComparison plus what a verdict needs.

`ValidationComparison` extends `OutputComparison` with labels (top-1/top-5 accuracy of
reference and candidate, per-class accuracy, McNemar's paired test), a fixed-bin
histogram of |logit error| for the report's plot, and confidence intervals. Everything is
kept as additive counters (`state()`), so shard reports merge exactly (`from_state`, `merge`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from ..compare import OutputComparison

# |error| histogram: one bin for exact zeros, then log-spaced bins from 1e-9 to 1e3
# (4 per decade); errors beyond fall into the last bin. Fixed bins keep shards mergeable.
HIST_EDGES = np.logspace(-9, 3, 12 * 4 + 1)
Z95 = 1.959963984540054


def wilson_interval(successes: int, total: int, z: float = Z95) -> tuple[float, float]:
    """95% Wilson score interval of a proportion: unlike the normal approximation it stays
    inside [0, 1] and is honest at 100% agreement, the usual case for FP32 targets."""
    if total == 0:
        return (0.0, 1.0)
    p = successes / total
    denom = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denom
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def paired_difference_interval(b: int, c: int, total: int, z: float = Z95) -> tuple[float, float]:
    """95% interval of a paired difference of proportions, (b - c) / total, with b and c the
    discordant counts (the Wald interval for matched pairs; b = c = 0 gives (0, 0), the best
    the data can say when reference and candidate never differ)."""
    if total == 0:
        return (-1.0, 1.0)
    d = (b - c) / total
    half = z * math.sqrt(max((b + c) / total - d * d, 0.0) / total)
    return (max(-1.0, d - half), min(1.0, d + half))


def agreement_images_needed(threshold: float, z: float = Z95) -> Optional[int]:
    """The fewest images on which even perfect agreement has a 95% Wilson lower bound at or
    above `threshold`: n >= z^2 t / (1 - t). None for a threshold of 1 (no sample shows it)."""
    if threshold >= 1.0:
        return None
    return math.ceil(z * z * threshold / (1.0 - threshold))


def mcnemar_pvalue(b: int, c: int) -> float:
    """Exact (binomial) McNemar test on the discordant pairs: b = reference right and
    candidate wrong, c = the opposite. Two-sided p-value of 'same accuracy'."""
    n = b + c
    if n == 0:
        return 1.0
    from scipy.stats import binomtest  # scipy comes with scikit-learn

    return float(binomtest(min(b, c), n, 0.5, alternative="two-sided").pvalue)


@dataclass
class ValidationComparison(OutputComparison):
    """One output of one target against the reference, over the whole (sharded) dataset."""

    cosine_sum: float = 0.0
    cosine_low: float = 1.0
    top1_agree_count: int = 0
    top5_agree_count: int = 0
    hist: list = field(default_factory=lambda: [0] * (len(HIST_EDGES) + 1))  # [zeros, bins...]
    labelled: int = 0
    ref_top1_correct: int = 0
    ref_top5_correct: int = 0
    cand_top1_correct: int = 0
    cand_top5_correct: int = 0
    mcnemar_b: int = 0  # reference right, candidate wrong
    mcnemar_c: int = 0  # candidate right, reference wrong
    per_class: dict = field(default_factory=dict)  # class -> [n, ref correct, candidate correct]
    keep_samples: bool = True  # per-sample lists of the base class; off for merged results

    def update(self, reference: np.ndarray, candidate: np.ndarray, labels: Optional[np.ndarray] = None) -> None:
        before = len(self.cosines)
        super().update(reference, candidate)
        cos = np.asarray(self.cosines[before:], dtype=np.float64)
        self.cosine_sum += float(cos.sum())
        self.cosine_low = min(self.cosine_low, float(cos.min(initial=1.0)))
        self.top1_agree_count += int(np.sum(self.top1_agree[before:]))
        self.top5_agree_count += int(np.sum(self.top5_agree[before:]))
        if not self.keep_samples:
            del self.cosines[before:], self.top1_agree[before:], self.top5_agree[before:]
        diff = np.abs(reference.astype(np.float64) - candidate.astype(np.float64)).ravel()
        zeros = int(np.count_nonzero(diff == 0))
        counts = np.bincount(np.searchsorted(HIST_EDGES, diff[diff > 0]), minlength=len(HIST_EDGES) + 1)
        self.hist[0] += zeros
        for i, n in enumerate(counts[: len(HIST_EDGES)], start=1):
            self.hist[i] += int(n)
        self.hist[-1] += int(counts[len(HIST_EDGES):].sum())
        if labels is not None:
            self._update_labels(reference.reshape(len(reference), -1), candidate.reshape(len(candidate), -1), labels)

    def _update_labels(self, ref: np.ndarray, cand: np.ndarray, labels: np.ndarray) -> None:
        k = min(5, ref.shape[1])
        ref_ok = ref.argmax(1) == labels
        cand_ok = cand.argmax(1) == labels
        self.labelled += len(labels)
        self.ref_top1_correct += int(ref_ok.sum())
        self.cand_top1_correct += int(cand_ok.sum())
        self.ref_top5_correct += int((np.argsort(-ref, 1)[:, :k] == labels[:, None]).any(1).sum())
        self.cand_top5_correct += int((np.argsort(-cand, 1)[:, :k] == labels[:, None]).any(1).sum())
        self.mcnemar_b += int((ref_ok & ~cand_ok).sum())
        self.mcnemar_c += int((~ref_ok & cand_ok).sum())
        for cls in np.unique(labels):
            mask = labels == cls
            entry = self.per_class.setdefault(str(int(cls)), [0, 0, 0])
            entry[0] += int(mask.sum())
            entry[1] += int(ref_ok[mask].sum())
            entry[2] += int(cand_ok[mask].sum())

    # Counter-based overrides: also valid for merged results that hold no per-sample lists.
    @property
    def cosine_min(self) -> float:
        return self.cosine_low if self.count else 1.0

    @property
    def cosine_mean(self) -> float:
        return self.cosine_sum / self.count if self.count else 1.0

    @property
    def top1_agreement(self) -> float:
        return self.top1_agree_count / self.count if self.count else 1.0

    @property
    def top5_agreement(self) -> float:
        return self.top5_agree_count / self.count if self.count else 1.0

    # ---- with labels
    def accuracy(self, which: str, k: int = 1) -> Optional[float]:
        if not self.labelled:
            return None
        correct = getattr(self, f"{which}_top{k}_correct")
        return correct / self.labelled

    @property
    def top1_accuracy_drop(self) -> Optional[float]:
        """Reference top-1 accuracy minus candidate's, in points (percent)."""
        if not self.labelled:
            return None
        return 100.0 * (self.ref_top1_correct - self.cand_top1_correct) / self.labelled

    def summary(self) -> dict:
        out = super().summary()
        out["top1_agreement_ci95"] = list(wilson_interval(self.top1_agree_count, self.count))
        out["top5_agreement_ci95"] = list(wilson_interval(self.top5_agree_count, self.count))
        out["error_histogram"] = {"edges": HIST_EDGES.tolist(), "zeros": self.hist[0], "counts": self.hist[1:]}
        if self.labelled:
            out["labels"] = {
                "samples": self.labelled,
                "reference_top1_accuracy": self.accuracy("ref", 1),
                "reference_top5_accuracy": self.accuracy("ref", 5),
                "target_top1_accuracy": self.accuracy("cand", 1),
                "target_top5_accuracy": self.accuracy("cand", 5),
                "reference_top1_accuracy_ci95": list(wilson_interval(self.ref_top1_correct, self.labelled)),
                "target_top1_accuracy_ci95": list(wilson_interval(self.cand_top1_correct, self.labelled)),
                "top1_accuracy_drop_points": self.top1_accuracy_drop,
                "top5_accuracy_drop_points": 100.0 * (self.ref_top5_correct - self.cand_top5_correct) / self.labelled,
                "mcnemar": {"reference_only_correct": self.mcnemar_b, "target_only_correct": self.mcnemar_c,
                            "p_value": mcnemar_pvalue(self.mcnemar_b, self.mcnemar_c)},
                "per_class": {cls: {"samples": n, "reference_accuracy": r / n, "target_accuracy": c / n}
                              for cls, (n, r, c) in sorted(self.per_class.items(), key=lambda kv: int(kv[0]))},
            }
        return out

    # ---- shards
    _STATE = ("name", "count", "max_abs_error", "sum_abs_error", "elements", "max_abs_reference", "cosine_sum",
              "cosine_low", "top1_agree_count", "top5_agree_count", "hist", "labelled", "ref_top1_correct",
              "ref_top5_correct", "cand_top1_correct", "cand_top5_correct", "mcnemar_b", "mcnemar_c", "per_class")

    def state(self) -> dict:
        """Additive counters from which every number of `summary()` follows (for merging shards)."""
        return {key: getattr(self, key) for key in self._STATE}

    @classmethod
    def from_state(cls, state: dict) -> "ValidationComparison":
        return cls(**{k: state[k] for k in cls._STATE}, keep_samples=False)

    def merge(self, other: "ValidationComparison") -> "ValidationComparison":
        merged = ValidationComparison(self.name, keep_samples=False)
        for key in ("count", "sum_abs_error", "elements", "cosine_sum", "top1_agree_count", "top5_agree_count",
                    "labelled", "ref_top1_correct", "ref_top5_correct", "cand_top1_correct", "cand_top5_correct",
                    "mcnemar_b", "mcnemar_c"):
            setattr(merged, key, getattr(self, key) + getattr(other, key))
        merged.max_abs_error = max(self.max_abs_error, other.max_abs_error)
        merged.max_abs_reference = max(self.max_abs_reference, other.max_abs_reference)
        merged.cosine_low = min(self.cosine_low, other.cosine_low)
        merged.hist = [a + b for a, b in zip(self.hist, other.hist)]
        for source in (self.per_class, other.per_class):
            for cls, counts in source.items():
                entry = merged.per_class.setdefault(cls, [0, 0, 0])
                for i in range(3):
                    entry[i] += counts[i]
        return merged
