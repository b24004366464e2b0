"""Layer-wise validation (stage: validate --layerwise): where does a target start to differ?

Runs the FP32 reference graph and the target graph on ONNX Runtime with the outputs of
their compute layers (Conv, Gemm) added as graph outputs, compares each layer present in
both, in the reference's topological order, and names the first layer whose relative
error (max |diff| / max |reference|) exceeds the precision's threshold, by its PyTorch
module: the exporter names nodes after the module path (/inception4c/branch2/branch2.1/
conv/Conv -> inception4c.branch2.1). Layers are matched by node name, then by output
tensor name, so Q/DQ and FP16 graphs (whose Conv nodes keep their names) compare at the
Conv outputs that exist in both. Polygraphy's `--validate --onnx-outputs mark all` does
the same for all tensors; here only compute layers, so the curve reads per layer.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from ..graph_utils import module_path, with_outputs

__all__ = ["LayerError", "LayerwiseResult", "compare_layers", "module_path"]

# Relative error above which a layer counts as diverged, per precision. Measured on the
# digits GoogLeNet (16 held-out images): an unchanged FP32 layer 0 to 1e-6 (same ORT kernels);
# FP16 at most 8e-4 over all 58 layers; INT8 (per-channel weights, per-tensor
# activations) at most 2.2e-2. A conv whose weights are off by 5% shows 4.9e-2.
LAYER_THRESHOLDS = {"fp32": 1e-4, "fp16": 1e-2, "int8": 0.1}
COMPUTE_OPS = ("Conv", "Gemm", "MatMul", "ConvTranspose")


@dataclass
class LayerError:
    node: str
    module: str
    op_type: str
    tensor: str
    rel_error: float
    max_abs_error: float
    cosine: float


@dataclass
class LayerwiseResult:
    target: str
    precision: str
    threshold: float
    images: int
    layers: list[LayerError] = field(default_factory=list)
    unmatched: int = 0  # reference compute layers the target graph has no counterpart for

    @property
    def first_divergence(self) -> Optional[LayerError]:
        return next((layer for layer in self.layers if layer.rel_error > self.threshold), None)

    @property
    def biggest_jump(self) -> Optional[LayerError]:
        """The layer whose error grows most over the worst error of all layers before it."""
        best, best_ratio, worst = None, 0.0, 0.0
        for layer in self.layers:
            ratio = layer.rel_error / max(worst, 1e-12)
            if ratio > best_ratio:
                best, best_ratio = layer, ratio
            worst = max(worst, layer.rel_error)
        return best

    def line(self) -> str:
        first = self.first_divergence
        if first is None:
            return (f"layerwise | {self.target} | no layer above {self.threshold:g} relative error "
                    f"({len(self.layers)} layers compared)")
        return (f"layerwise | {self.target} | first divergence at {first.module} ({first.node}): relative error "
                f"{first.rel_error:.3g} > {self.threshold:g}")

    def to_dict(self) -> dict:
        first, jump = self.first_divergence, self.biggest_jump
        return {"target": self.target, "precision": self.precision, "threshold": self.threshold, "images": self.images,
                "unmatched_reference_layers": self.unmatched,
                "first_divergence": None if first is None else asdict(first),
                "biggest_jump": None if jump is None else asdict(jump),
                "layers": [asdict(layer) for layer in self.layers]}

    @classmethod
    def from_dict(cls, data: dict) -> "LayerwiseResult":
        return cls(data["target"], data["precision"], data["threshold"], data["images"],
                   [LayerError(**layer) for layer in data["layers"]], data.get("unmatched_reference_layers", 0))


def _compute_nodes(model) -> list:
    return [node for node in model.graph.node if node.op_type in COMPUTE_OPS and node.output]


def compare_layers(reference_onnx: str | Path, target_onnx: str | Path, inputs: np.ndarray, precision: str = "fp32",
                   target_name: Optional[str] = None, threshold: Optional[float] = None) -> LayerwiseResult:
    """Compare the compute layers of two graphs on the same `inputs` (one batch)."""
    from ..artifact import load_onnx
    from ..backends.onnxruntime_backend import OnnxRuntimeRunner

    ref_model, cand_model = load_onnx(reference_onnx).model, load_onnx(target_onnx).model
    cand_by_name = {n.name: n for n in _compute_nodes(cand_model) if n.name}
    cand_by_output = {n.output[0]: n for n in _compute_nodes(cand_model)}
    pairs = []  # (reference node, reference tensor, target tensor)
    unmatched = 0
    for node in _compute_nodes(ref_model):
        match = cand_by_name.get(node.name) or cand_by_output.get(node.output[0])
        if match is None:
            unmatched += 1
            continue
        pairs.append((node, node.output[0], match.output[0]))
    result = LayerwiseResult(target_name or str(target_onnx), precision,
                             LAYER_THRESHOLDS.get(precision, 1e-4) if threshold is None else threshold,
                             len(inputs), unmatched=unmatched)
    if not pairs:
        return result
    ref_graph = with_outputs(ref_model, [p[1] for p in pairs], infer_types=True)
    cand_graph = with_outputs(cand_model, [p[2] for p in pairs], infer_types=True)
    del ref_model, cand_model
    with OnnxRuntimeRunner(ref_graph.SerializeToString()) as ref_runner:
        ref_out = ref_runner.infer({ref_runner.input_names[0]: inputs})
    with OnnxRuntimeRunner(cand_graph.SerializeToString()) as cand_runner:
        cand_out = cand_runner.infer({cand_runner.input_names[0]: inputs})
    for node, ref_tensor, cand_tensor in pairs:
        a = ref_out[ref_tensor].astype(np.float64)
        b = cand_out[cand_tensor].astype(np.float64)
        if a.shape != b.shape:
            result.unmatched += 1
            continue
        diff = float(np.abs(a - b).max(initial=0.0))
        scale = float(np.abs(a).max(initial=0.0))
        fa, fb = a.ravel(), b.ravel()
        norm = float(np.linalg.norm(fa) * np.linalg.norm(fb))
        result.layers.append(LayerError(
            node=node.name or ref_tensor, module=module_path(node.name) if node.name else ref_tensor,
            op_type=node.op_type, tensor=ref_tensor, rel_error=diff / max(scale, 1e-12), max_abs_error=diff,
            cosine=float(fa @ fb / norm) if norm > 0 else 1.0))
    return result
