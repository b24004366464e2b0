"""FP32 vs reduced precision on ONNX Runtime CPU (stage: quantize, its self-check).

Runs the FP32 graph and the new graph on the same preprocessed batches and accumulates
compare.OutputComparison per output, plus top-1 accuracy of each when labels exist.

A Q/DQ graph is judged by the exact ONNX Q/DQ semantics, the arithmetic TensorRT implements
(int8 values times their scales, per-channel weight scales, float accumulation): ONNX Runtime
with its graph optimizations off, operator by operator as ONNX defines them (EXACT). Already
its basic level rewrites Q/DQ (QLinear kernels with an int32 bias and their own
requantization, signed-to-unsigned) and rounds differently; those numbers (OPTIMIZED) are
measured beside, on the first OPTIMIZED_IMAGES, and shown with the exact mode's numbers on
those same images, where they differ. tests/test_qdq_semantics.py checks the modes
against a numpy reference. Measured and dropped: ORT_ENABLE_ALL with its Q/DQ transformers
off (session.disable_quant_qdq), faster and exact on the small test graph, moved the digits
GoogLeNet's INT8 logits by up to 0.067 from the operator-by-operator result.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from ..compare import OutputComparison

EXACT, OPTIMIZED = "exact", "ort-optimized"
# The ORT graph optimization level of each mode (backends.onnxruntime_backend.create_session).
MODE_LEVELS = {EXACT: "disable", OPTIMIZED: "all"}
MODE_TEXT = {EXACT: "exact Q/DQ semantics: ONNX Runtime with graph optimizations off",
             OPTIMIZED: "ONNX Runtime with its graph optimizations on"}


# ORT's optimized numbers (informational, never judged) are measured on the first images, at
# least this many (whole batches), and the exact mode's numbers on the same images stand beside
# them. Over all 450 held-out digits the optimized session cost as much as the exact one
# (2.7 s of one core each), the largest part of quantize's time on the digits GoogLeNet; on 64
# it costs 0.25 s.
OPTIMIZED_IMAGES = 64


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
    optimized_labelled: int = 0
    # The exact mode's main output on the images the optimized numbers come from (the first
    # OPTIMIZED_IMAGES): what `optimized` is set beside; the main comparison when they are all.
    exact_on_optimized: Optional[OutputComparison] = None
    exact_correct_on_optimized: int = 0
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
    def optimized_subset(self) -> bool:
        """Whether ORT's optimized numbers cover fewer images than the main comparison."""
        return self.optimized is not None and self.optimized.count < self.main.count

    @property
    def optimized_differs(self) -> bool:
        if self.optimized is None:
            return False
        return differs(self.exact_on_optimized or self.main, self.optimized)

    def summary(self) -> dict:
        out = {"data": self.source, "in_sample": self.in_sample, "mode": self.mode, **self.main.summary()}
        if self.labelled:
            out.update(labelled=self.labelled, fp32_top1=self.reference_top1, top1=self.candidate_top1,
                       top1_delta_points=100 * (self.candidate_top1 - self.reference_top1))
        if self.optimized is not None:
            out[OPTIMIZED] = {**self.optimized.summary(), "differs": self.optimized_differs}
            if self.optimized_labelled:
                out[OPTIMIZED]["top1"] = self.optimized_correct / self.optimized_labelled
            if self.optimized_subset:
                same = self.exact_on_optimized
                out[OPTIMIZED]["exact_on_same_images"] = {**same.summary(), **(
                    {"top1": self.exact_correct_on_optimized / self.optimized_labelled}
                    if self.optimized_labelled else {})}
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
            where = f", first {o.count} images" if self.optimized_subset else ""
            text = (f"  {MODE_TEXT[OPTIMIZED]} ({same}{where}; not what TensorRT computes): top-1 agreement "
                    f"{100 * o.top1_agreement:.2f}%   max abs logit error {o.max_abs_error:.4g}")
            if self.optimized_labelled:
                text += f"   top-1 {100 * self.optimized_correct / self.optimized_labelled:.2f}%"
            if self.optimized_subset:
                e = self.exact_on_optimized
                text += (f"   (exact on those images: agreement {100 * e.top1_agreement:.2f}%, "
                         f"max {e.max_abs_error:.4g})")
            lines.append(text)
        if self.in_sample:
            lines.append(f"  warning: {self.source} is the calibration data itself (in-sample): these numbers are "
                         "optimistic; pass --eval-data with held-out images")
        return lines


def evaluate(reference_model, candidate_model, batches, source: str, in_sample: bool = False,
             optimized_images: Optional[int] = OPTIMIZED_IMAGES) -> Evaluation:
    """The FP32 graph against the new one; a Q/DQ graph in the EXACT mode, and OPTIMIZED beside
    it on the first `optimized_images` (whole batches; None: all).

    `batches`: (inputs, labels or None) pairs, or a function that returns them afresh (read
    once per session). The FP32 session runs first and alone, holding only its outputs after:
    three sessions alive at once (two of them float copies of the weights) made the peak
    memory of quantize on Inception v3. Over several batches the Q/DQ graph's sessions are
    single-threaded and run a batch on each core (onnxruntime_backend.run_concurrently); one
    batch (the in-sample check) runs on all cores at once. Outputs are kept whole (logits:
    4 KB an image at 1000 classes)."""
    from itertools import islice

    from ..backends.onnxruntime_backend import create_session, run_concurrently
    from ..cpu import cores, release_free_memory

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
    result = Evaluation(source, {name: OutputComparison(name) for name in names}, mode=mode, in_sample=in_sample)
    first = names[0]
    for labels, ref_out in zip(labels_seen, references):
        if labels is not None:
            result.labelled += len(labels)
            result.reference_correct += int((ref_out[first].argmax(1) == labels).sum())
    # One batch: one session at a time on every core; several: single-threaded sessions, a
    # batch on each core (onnxruntime_backend.run_concurrently).
    many = len(references) > 1
    workers = cores() if many else 1

    def session_for(level: str):
        return create_session(candidate_model, optimization=level, threads=1 if many else None)

    if not qdq:
        outputs = list(run_concurrently(session_for(MODE_LEVELS[mode]), names, (x for x, _ in again()), workers))
        _judge(result, references, labels_seen, outputs, names)
        return result
    # The optimized numbers' images: the first batches up to optimized_images.
    taken, subset = 0, 0
    for ref_out in references:
        if optimized_images is not None and taken >= optimized_images:
            break
        taken, subset = taken + len(ref_out[first]), subset + 1
    result.optimized = OutputComparison(first)
    result.exact_on_optimized = OutputComparison(first) if subset < len(references) else None
    # One session at a time: the exact mode dequantizes every weight at run time, and on
    # Inception v3 (95 MB) a second session alive beside it raised quantize's peak RSS from 756
    # to 961 MB for 7 images.
    exact = list(run_concurrently(session_for(MODE_LEVELS[EXACT]), names, (x for x, _ in again()), workers))
    fast = list(run_concurrently(session_for(MODE_LEVELS[OPTIMIZED]), [first],
                                 (x for x, _ in islice(again(), subset)), workers))
    _judge(result, references, labels_seen, exact, names)
    for ref_out, out, exact_out, labels in zip(references, fast, exact, labels_seen):
        result.optimized.update(ref_out[first], out[0])
        if result.exact_on_optimized is not None:
            result.exact_on_optimized.update(ref_out[first], exact_out[0])
        if labels is not None:
            result.optimized_labelled += len(labels)
            result.optimized_correct += int((out[0].argmax(1) == labels).sum())
            result.exact_correct_on_optimized += int((exact_out[0].argmax(1) == labels).sum())
    return result


def _judge(result: Evaluation, references: list, labels_seen: list, outputs: list, names: list[str]) -> None:
    """The main comparison: each batch's outputs (in `names` order) against the FP32 ones."""
    first = names[0]
    for ref_out, out, labels in zip(references, outputs, labels_seen):
        out = dict(zip(names, out))
        for name in names:
            result.comparisons[name].update(ref_out[name], out[name])
        if labels is not None:
            result.candidate_correct += int((out[first].argmax(1) == labels).sum())
