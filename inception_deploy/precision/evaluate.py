"""FP32 vs reduced precision on ONNX Runtime CPU (stage: quantize, its self-check).

Runs the FP32 graph and the new graph on the same preprocessed batches and accumulates
compare.OutputComparison per output, plus top-1 accuracy of each when labels exist.

A Q/DQ graph is judged by the exact ONNX Q/DQ semantics, the arithmetic TensorRT implements
(int8 values times their scales, per-channel weight scales, float accumulation): ONNX Runtime
with its graph optimizations off, operator by operator as ONNX defines them (EXACT). Already
its basic level rewrites Q/DQ (QLinear kernels with an int32 bias and their own
requantization, signed-to-unsigned) and rounds differently; those numbers (OPTIMIZED) are
measured beside and shown where they differ. tests/test_qdq_semantics.py checks the modes
against a numpy reference. Measured and dropped: ORT_ENABLE_ALL with its Q/DQ transformers
off (session.disable_quant_qdq), faster and exact on the small test graph, moved the digits
GoogLeNet's INT8 logits by up to 0.067 from the operator-by-operator result.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from ..compare import OutputComparison

EXACT, OPTIMIZED = "exact", "ort-optimized"
# The ORT graph optimization level of each mode (backends.onnxruntime_backend.create_session).
MODE_LEVELS = {EXACT: "disable", OPTIMIZED: "all"}
MODE_TEXT = {EXACT: "exact Q/DQ semantics: ONNX Runtime with graph optimizations off",
             OPTIMIZED: "ONNX Runtime with its graph optimizations on"}


# The Q/DQ graph's two sessions run side by side only over several batches (one batch: the
# in-sample check) and for weights up to this size as float: the exact mode dequantizes every
# weight at run time, and on Inception v3 (95 MB) the second session raised quantize's peak
# RSS from 756 to 961 MB for 7 images.
SIDE_BY_SIDE_WEIGHT_BYTES = 64 << 20


def _float_weight_bytes(model) -> int:
    return sum(4 * int(np.prod(init.dims, dtype=np.int64)) for init in model.graph.initializer)


def has_qdq(model) -> bool:
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node)


def differs(a: OutputComparison, b: OutputComparison) -> bool:
    """Whether two modes' comparisons tell different stories (beyond float noise)."""
    return (abs(a.max_abs_error - b.max_abs_error) > 1e-5 * max(a.max_abs_reference, 1.0)
            or abs(a.mean_abs_error - b.mean_abs_error) > 1e-3 * max(a.mean_abs_error, 1e-6)
            or a.top1_agreement != b.top1_agreement)


@dataclass
class Evaluation:
    source: str
    comparisons: dict[str, OutputComparison] = field(default_factory=dict)
    labelled: int = 0
    reference_correct: int = 0
    candidate_correct: int = 0
    mode: str = OPTIMIZED  # how the new graph was run (MODE_TEXT)
    optimized: Optional[OutputComparison] = None  # a Q/DQ graph's main output under ORT's rewrites
    optimized_correct: int = 0
    in_sample: bool = False  # the data is the calibration data itself

    @property
    def main(self) -> OutputComparison:
        return next(iter(self.comparisons.values()))

    @property
    def reference_top1(self) -> Optional[float]:
        return self.reference_correct / self.labelled if self.labelled else None

    @property
    def candidate_top1(self) -> Optional[float]:
        return self.candidate_correct / self.labelled if self.labelled else None

    @property
    def optimized_differs(self) -> bool:
        return self.optimized is not None and differs(self.main, self.optimized)

    def summary(self) -> dict:
        out = {"data": self.source, "in_sample": self.in_sample, "mode": self.mode, **self.main.summary()}
        if self.labelled:
            out.update(labelled=self.labelled, fp32_top1=self.reference_top1, top1=self.candidate_top1,
                       top1_delta_points=100 * (self.candidate_top1 - self.reference_top1))
        if self.optimized is not None:
            out[OPTIMIZED] = {**self.optimized.summary(), "differs": self.optimized_differs}
            if self.labelled:
                out[OPTIMIZED]["top1"] = self.optimized_correct / self.labelled
        return out

    def lines(self, precision: str) -> list[str]:
        c = self.main
        lines = [f"FP32 vs {precision} on {c.count} images of {self.source} ({MODE_TEXT[self.mode]}):",
                 f"  top-1 agreement {100 * c.top1_agreement:.2f}%   max abs logit error {c.max_abs_error:.4g}   "
                 f"cosine min {c.cosine_min:.6f}"]
        if self.labelled:
            lines.append(f"  top-1 accuracy FP32 {100 * self.reference_top1:.2f}%   {precision} "
                         f"{100 * self.candidate_top1:.2f}%   ({100 * (self.candidate_top1 - self.reference_top1):+.2f} points)")
        if self.optimized is not None:
            o = self.optimized
            same = "differs" if self.optimized_differs else "same"
            text = (f"  {MODE_TEXT[OPTIMIZED]} ({same}; not what TensorRT computes): top-1 agreement "
                    f"{100 * o.top1_agreement:.2f}%   max abs logit error {o.max_abs_error:.4g}")
            if self.labelled:
                text += f"   top-1 {100 * self.optimized_correct / self.labelled:.2f}%"
            lines.append(text)
        if self.in_sample:
            lines.append(f"  warning: {self.source} is the calibration data itself (in-sample): these numbers are "
                         "optimistic; pass --eval-data with held-out images")
        return lines


def evaluate(reference_model, candidate_model, batches, source: str, in_sample: bool = False) -> Evaluation:
    """The FP32 graph against the new one; a Q/DQ graph in the EXACT mode, and OPTIMIZED beside it.

    `batches`: (inputs, labels or None) pairs, or a function that returns them afresh (read
    once per session). The FP32 session runs first and alone, holding only its outputs after:
    three sessions alive at once (two of them float copies of the weights) made the peak
    memory of quantize on Inception v3; the Q/DQ graph's two (int8 weights) then run together.
    Outputs are kept whole (logits: 4 KB an image at 1000 classes)."""
    from ..backends.onnxruntime_backend import create_session
    from ..cpu import release_free_memory

    release_free_memory()  # what quantize's earlier steps freed: this step is its peak otherwise
    again = batches if callable(batches) else (lambda listed=list(batches): listed)
    qdq = has_qdq(candidate_model)
    mode = EXACT if qdq else OPTIMIZED
    ref = create_session(reference_model)
    names = [o.name for o in ref.get_outputs()]
    ref_in = ref.get_inputs()[0].name
    references, labels_seen = [], []
    for inputs, labels in again():
        references.append(dict(zip(names, ref.run(names, {ref_in: inputs}))))
        labels_seen.append(labels)
    del ref
    release_free_memory()  # the FP32 session's arena, before the Q/DQ graph's sessions make theirs
    result = Evaluation(source, {name: OutputComparison(name) for name in names}, mode=mode, in_sample=in_sample,
                        optimized=OutputComparison(names[0]) if qdq else None)
    first = names[0]
    for labels, ref_out in zip(labels_seen, references):
        if labels is not None:
            result.labelled += len(labels)
            result.reference_correct += int((ref_out[first].argmax(1) == labels).sum())

    def run_candidate(level: str, wanted: list[str], threads: Optional[int] = None) -> list:
        session = create_session(candidate_model, optimization=level, threads=threads)
        feed = session.get_inputs()[0].name
        return [dict(zip(wanted, session.run(wanted, {feed: inputs}))) for inputs, _ in again()]

    def judge_main(outputs: list) -> None:
        for ref_out, out, labels in zip(references, outputs, labels_seen):
            for name in names:
                result.comparisons[name].update(ref_out[name], out[name])
            if labels is not None:
                result.candidate_correct += int((out[first].argmax(1) == labels).sum())

    def judge_optimized(outputs: list) -> None:
        for ref_out, out, labels in zip(references, outputs, labels_seen):
            result.optimized.update(ref_out[first], out[first])
            if labels is not None:
                result.optimized_correct += int((out[first].argmax(1) == labels).sum())

    if not qdq:
        judge_main(run_candidate(MODE_LEVELS[mode], names))
        return result
    if len(references) < 2 or _float_weight_bytes(candidate_model) > SIDE_BY_SIDE_WEIGHT_BYTES:
        judge_main(run_candidate(MODE_LEVELS[mode], names))
        judge_optimized(run_candidate(MODE_LEVELS[OPTIMIZED], [first]))
        return result
    # The two modes of a Q/DQ graph run side by side, one core each: ONNX Runtime's unoptimized
    # kernels scale poorly over cores (digits GoogLeNet, 450 images: 1.97 s + 1.96 s one after
    # the other on 2 cores, 2.4 s side by side). Only the small candidate outputs are kept.
    from concurrent.futures import ThreadPoolExecutor

    from ..cpu import cores

    share = max(1, cores() // 2)
    with ThreadPoolExecutor(max_workers=2) as pool:
        exact = pool.submit(run_candidate, MODE_LEVELS[mode], names, share)
        fast = pool.submit(run_candidate, MODE_LEVELS[OPTIMIZED], [first], share)
        judge_main(exact.result())
        judge_optimized(fast.result())
    return result
