"""What a quantize run made and how (stage: quantize): the result object and its report lines."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional


@dataclass
class QuantizeResult:
    path: Path
    precision: str
    cache_path: Optional[Path] = None
    tensorrt_cache_path: Optional[Path] = None
    method: Optional[str] = None
    calibration: str = ""  # how amax was obtained, in words (cache.Provenance says which kind)
    provenance: object = None  # cache.Provenance (int8)
    images: int = 0
    excluded: list = field(default_factory=list)  # placement.Exclusion (int8)
    kept_fp32: list = field(default_factory=list)  # fp16.KeptFp32 (fp16)
    quantized_layers: int = 0
    bias_corrected: list = field(default_factory=list)  # layers whose bias absorbs the int8 mean shift
    equalized: int = 0  # Conv layers whose output channels were rescaled (equalize.py)
    sensitivity: object = None  # sensitivity.SensitivityReport
    evaluation: object = None  # evaluate.Evaluation
    notes: list[str] = field(default_factory=list)
    manifest: dict = field(default_factory=dict)
    model: object = field(default=None, repr=False)  # the graph, until it is written

    def lines(self) -> list[str]:
        label = self.precision.upper()
        lines = list(self.notes)
        if self.precision == "int8":
            lines.append(f"INT8: {self.quantized_layers} Conv/Gemm layers quantized, {len(self.excluded)} kept float, "
                         f"{self.equalized} equalized, {len(self.bias_corrected)} bias-corrected; "
                         f"calibration: {self.calibration}")
            for item in self.excluded:
                lines.append(f"  kept float: {item.node} ({item.op_type}): {item.reason}")
        else:
            lines.append(f"FP16: {len(self.kept_fp32)} node(s) kept FP32")
            for item in self.kept_fp32:
                lines.append(f"  kept FP32: {item.node} ({item.op_type}): {item.reason}")
        if self.sensitivity is not None:
            lines += self.sensitivity.lines()
        if self.evaluation is not None:
            lines += self.evaluation.lines(label)
        lines.append(f"wrote {self.path}")
        if self.cache_path:
            lines.append(f"calibration cache {self.cache_path}" + (
                f" (TensorRT text: {self.tensorrt_cache_path})" if self.tensorrt_cache_path else
                " (no TensorRT text cache: its scales are the equalized graph's; --no-equalize makes one for "
                "implicit INT8 on TensorRT <= 10)" if self.equalized else ""))
        return lines


def default_output(input_path: Path, precision: str) -> Path:
    """MODEL(.opt).onnx -> MODEL.<precision>.onnx beside it."""
    stem = input_path.name.removesuffix(".onnx").removesuffix(".opt")
    return input_path.with_name(f"{stem}.{precision}.onnx")


def default_cache_path(output_path: Path) -> Path:
    """MODEL.int8.onnx -> MODEL.calib.json beside it."""
    stem = output_path.name.removesuffix(".onnx")
    for suffix in (".int8", ".fp16"):
        stem = stem.removesuffix(suffix)
    return output_path.with_name(f"{stem}.calib.json")
