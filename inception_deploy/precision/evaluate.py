"""FP32 vs reduced precision on ONNX Runtime CPU (stage: quantize, its self-check).

Runs the FP32 graph and the new graph on the same preprocessed batches and accumulates
compare.OutputComparison per output, plus top-1 accuracy of each when labels exist.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Optional

import numpy as np

from ..compare import OutputComparison


def session(model, threads: Optional[int] = None):
    """An ORT CPU session for an onnx.ModelProto, bytes or path."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    source = model.SerializeToString() if hasattr(model, "SerializeToString") else str(model) if not isinstance(model, bytes) else model
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def session_with_outputs(model, tensors: list[str]):
    """An ORT CPU session of `model` that also returns the intermediate `tensors`."""
    import onnx

    augmented = onnx.ModelProto()
    augmented.CopyFrom(model)
    existing = {o.name for o in augmented.graph.output}
    for name in tensors:
        if name not in existing:
            augmented.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    return session(augmented)


def run(sess, inputs: np.ndarray, batch_size: int = 64) -> dict[str, np.ndarray]:
    names = [o.name for o in sess.get_outputs()]
    input_name = sess.get_inputs()[0].name
    chunks = [sess.run(names, {input_name: inputs[i:i + batch_size]}) for i in range(0, len(inputs), batch_size)]
    return {name: np.concatenate([c[k] for c in chunks]) for k, name in enumerate(names)}


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
    ref, cand = session(reference_model), session(candidate_model)
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
