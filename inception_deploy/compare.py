"""Output comparison between a reference and a candidate (stage: validation core).

The numbers every stage prints when it checks itself (export parity, pass safety,
quantization report) and that `validate` builds its verdicts on: max/mean absolute
error, the error relative to the logit scale, cosine similarity, top-k agreement.
Accumulates batch by batch, so nothing grows with the dataset but per-sample scalars.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import NonFiniteOutput, UserError
from .finite import describe, first_non_finite


@dataclass
class OutputComparison:
    """Streaming comparison of one output tensor (logits: [N, classes])."""

    name: str
    count: int = 0
    max_abs_error: float = 0.0
    sum_abs_error: float = 0.0
    elements: int = 0
    max_abs_reference: float = 0.0
    cosines: list = field(default_factory=list)
    top1_agree: list = field(default_factory=list)
    top5_agree: list = field(default_factory=list)

    def update(self, reference: np.ndarray, candidate: np.ndarray) -> None:
        """Add one batch. Different shapes and empty outputs are input errors; a NaN/Inf on
        either side fails the comparison (NaN slips through max/<=/argmax as 'no error')."""
        if reference.shape != candidate.shape:
            raise UserError(f"output '{self.name}': the target gives shape {list(candidate.shape)}, the reference "
                            f"{list(reference.shape)}; compare models with the same classes and output layout")
        if reference.ndim == 0 or reference.size == 0:
            raise UserError(f"output '{self.name}' has shape {list(reference.shape)}: no values per sample to compare "
                            "(a classifier needs logits [batch, classes] with at least one class)")
        for side, values in (("reference", reference), ("target", candidate)):
            found = first_non_finite(values)
            if found is not None:
                raise NonFiniteOutput(f"output '{self.name}' of the {side} holds {describe(found)} at sample "
                                      f"{self.count + found[0][0]} of the comparison: a NaN/Inf output never passes")
        ref = reference.astype(np.float64).reshape(len(reference), -1)
        cand = candidate.astype(np.float64).reshape(len(candidate), -1)
        diff = np.abs(ref - cand)
        self.count += len(ref)
        self.max_abs_error = max(self.max_abs_error, float(diff.max(initial=0.0)))
        self.sum_abs_error += float(diff.sum())
        self.elements += diff.size
        self.max_abs_reference = max(self.max_abs_reference, float(np.abs(ref).max(initial=0.0)))
        ref_norm, cand_norm = np.linalg.norm(ref, axis=1), np.linalg.norm(cand, axis=1)
        dots = (ref * cand).sum(axis=1)
        # Two zero vectors agree (1); a zero vector against a non-zero one does not (0).
        cosine = np.where((ref_norm > 0) & (cand_norm > 0), dots / np.maximum(ref_norm * cand_norm, 1e-300),
                          np.where((ref_norm > 0) | (cand_norm > 0), 0.0, 1.0))
        self.cosines.extend(cosine.tolist())
        self.top1_agree.extend((ref.argmax(1) == cand.argmax(1)).tolist())
        k = min(5, ref.shape[1])
        ref_top1 = ref.argmax(1)
        cand_topk = np.argsort(-cand, axis=1)[:, :k]
        self.top5_agree.extend((cand_topk == ref_top1[:, None]).any(1).tolist())

    @property
    def mean_abs_error(self) -> float:
        return self.sum_abs_error / max(self.elements, 1)

    @property
    def relative_error(self) -> float:
        """max |diff| / max |reference|: the error on the logit scale."""
        return self.max_abs_error / max(self.max_abs_reference, 1e-12)

    @property
    def cosine_min(self) -> float:
        return float(min(self.cosines)) if self.cosines else 1.0

    @property
    def cosine_mean(self) -> float:
        return float(np.mean(self.cosines)) if self.cosines else 1.0

    @property
    def top1_agreement(self) -> float:
        return float(np.mean(self.top1_agree)) if self.top1_agree else 1.0

    @property
    def top5_agreement(self) -> float:
        """Fraction of samples whose reference top-1 class is in the candidate's top 5."""
        return float(np.mean(self.top5_agree)) if self.top5_agree else 1.0

    def within(self, rel: float, abs_: float) -> bool:
        """max |diff| <= rel * max |reference| + abs."""
        return self.max_abs_error <= rel * self.max_abs_reference + abs_

    def summary(self) -> dict:
        return {
            "output": self.name,
            "samples": self.count,
            "max_abs_error": self.max_abs_error,
            "mean_abs_error": self.mean_abs_error,
            "max_abs_reference": self.max_abs_reference,
            "relative_error": self.relative_error,
            "cosine_min": self.cosine_min,
            "cosine_mean": self.cosine_mean,
            "top1_agreement": self.top1_agreement,
            "top5_agreement": self.top5_agreement,
        }


def compare_runners(reference, candidate, batches, output_names=None) -> dict[str, OutputComparison]:
    """Run both (entered) runners on each input batch and compare the named outputs."""
    names = list(output_names or reference.output_names)
    results = {name: OutputComparison(name) for name in names}
    input_name = reference.input_names[0]
    cand_input = candidate.input_names[0]
    for batch in batches:
        ref_out = reference.infer({input_name: batch})
        cand_out = candidate.infer({cand_input: batch})
        for name in names:
            results[name].update(ref_out[name], cand_out[name])
    return results
