"""FP32 vs reduced precision on ONNX Runtime CPU (stage: quantize, its self-check).

Runs the FP32 graph and the new graph on the same preprocessed batches and accumulates
compare.OutputComparison per output, plus top-1 accuracy of each when labels exist.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Optional

import numpy as np

from ..compare import OutputComparison


@dataclass
class Evaluation:
    source: str
    comparisons: dict[str, OutputComparison] = field(default_factory=dict)
    labelled: int = 0
    reference_correct: int = 0
    candidate_correct: int = 0

    @property
    def main(self) -> OutputComparison:
        return next(iter(self.comparisons.values()))

    @property
    def reference_top1(self) -> Optional[float]:
        return self.reference_correct / self.labelled if self.labelled else None

    @property
    def candidate_top1(self) -> Optional[float]:
        return self.candidate_correct / self.labelled if self.labelled else None

    def summary(self) -> dict:
        out = {"data": self.source, **self.main.summary()}
        if self.labelled:
            out.update(labelled=self.labelled, fp32_top1=self.reference_top1, top1=self.candidate_top1,
                       top1_delta_points=100 * (self.candidate_top1 - self.reference_top1))
        return out

    def lines(self, precision: str) -> list[str]:
        c = self.main
        lines = [f"FP32 vs {precision} on {c.count} images of {self.source}:",
                 f"  top-1 agreement {100 * c.top1_agreement:.2f}%   max abs logit error {c.max_abs_error:.4g}   "
                 f"cosine min {c.cosine_min:.6f}"]
        if self.labelled:
            lines.append(f"  top-1 accuracy FP32 {100 * self.reference_top1:.2f}%   {precision} "
                         f"{100 * self.candidate_top1:.2f}%   ({100 * (self.candidate_top1 - self.reference_top1):+.2f} points)")
        return lines


def evaluate(reference_model, candidate_model, batches: Iterable[tuple[np.ndarray, Optional[np.ndarray]]],
             source: str) -> Evaluation:
    from ..backends.onnxruntime_backend import create_session

    ref, cand = create_session(reference_model), create_session(candidate_model)
    names = [o.name for o in ref.get_outputs()]
    result = Evaluation(source, {name: OutputComparison(name) for name in names})
    ref_in, cand_in = ref.get_inputs()[0].name, cand.get_inputs()[0].name
    for inputs, labels in batches:
        ref_out = dict(zip(names, ref.run(names, {ref_in: inputs})))
        cand_out = dict(zip(names, cand.run(names, {cand_in: inputs})))
        for name in names:
            result.comparisons[name].update(ref_out[name], cand_out[name])
        if labels is not None:
            first = names[0]
            result.labelled += len(labels)
            result.reference_correct += int((ref_out[first].argmax(1) == labels).sum())
            result.candidate_correct += int((cand_out[first].argmax(1) == labels).sum())
    return result
