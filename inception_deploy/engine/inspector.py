"""Precision truth check: what the engine inspector says each layer runs in (stage: build-engine).

TensorRT's IEngineInspector (engines built with ProfilingVerbosity.DETAILED) describes each
layer as JSON: {"Layers": [{"Name", "LayerType", "ParameterType", "Inputs": [{"Name",
"Dimensions", "Format/Datatype"}], "Outputs": [...], "Weights": {"Type", "Count"},
"Metadata": "[ONNX Layer: /conv1/Conv]..."}], "Bindings" (10.x) | "I/O Tensors" (11.x)}.
Pure functions here turn that into per-layer precisions and check them against what the
ONNX graph asked for, so the check is unit-tested without TensorRT.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Mapping, Optional

from ..errors import InceptionDeployError, UserError

# Words in TensorRT's format strings ("Thirty-two wide channel vectorized row major Int8
# format", "Row major linear FP16 format (kLINEAR)", 11.x "DataType": "Half") and what they mean.
_PRECISION_WORDS = [
    (r"uint8", "UINT8"), (r"int8", "INT8"), (r"int4", "INT4"), (r"fp8|e4m3", "FP8"), (r"fp4|e2m1", "FP4"),
    (r"bfloat16|bf16", "BF16"), (r"fp16|half", "FP16"), (r"fp32|float", "FP32"),
    (r"int32", "INT32"), (r"int64", "INT64"), (r"bool", "BOOL"),
]
_PRECISION_PATTERNS = [(re.compile(rf"\b(?:{words})\b", re.IGNORECASE), name) for words, name in _PRECISION_WORDS]
_ONNX_ORIGIN = re.compile(r"\[ONNX Layer: ([^\]\x1e\x1f]+)\]")
_COMPUTE_KINDS = ("convolution", "deconvolution", "gemm", "matrixmultiply", "fullyconnected")

# Lower is narrower; a layer may run narrower than asked, never wider.
PRECISION_RANK = {"INT4": 0, "FP4": 0, "INT8": 1, "FP8": 1, "FP16": 2, "BF16": 2, "FP32": 3}


def precision_of(description: Optional[str]) -> str:
    """'INT8', 'FP16', 'FP32', ... from a format/datatype string; 'UNKNOWN' when none is named."""
    if not description:
        return "UNKNOWN"
    for pattern, name in _PRECISION_PATTERNS:
        if pattern.search(description):
            return name
    return "UNKNOWN"


def _tensor_precision(tensor: Mapping) -> str:
    for key in ("Format/Datatype", "DataType", "Format"):  # 10.x | 11.x spellings
        found = precision_of(tensor.get(key))
        if found != "UNKNOWN":
            return found
    return "UNKNOWN"


@dataclass(frozen=True)
class LayerPrecision:
    name: str
    layer_type: str
    precision: str  # of its first input, the precision its kernel computes in
    weights: Optional[str]
    onnx_nodes: tuple[str, ...]

    @property
    def is_compute(self) -> bool:
        return any(kind in self.layer_type.lower() for kind in _COMPUTE_KINDS)


def parse_layer_information(info: str | Mapping) -> list[LayerPrecision]:
    """Per-layer precisions from the inspector's JSON (engine-wide or a single layer)."""
    try:
        data = json.loads(info) if isinstance(info, (str, bytes)) else info
    except json.JSONDecodeError as exc:
        raise UserError(f"engine inspector output is not JSON ({exc.msg}); build with ProfilingVerbosity.DETAILED") from None
    raw_layers = data.get("Layers", [data]) if isinstance(data, Mapping) else data
    layers = []
    for raw in raw_layers:
        if not isinstance(raw, Mapping):
            # LAYER_NAMES_ONLY verbosity gives bare strings: nothing to check precision with.
            raise UserError("engine inspector lists layer names only; build with ProfilingVerbosity.DETAILED")
        if raw.get("LayerType") in ("signal", "wait"):
            continue
        name = str(raw.get("Name", "?"))
        inputs = raw.get("Inputs") or []
        weights = raw.get("Weights") or {}
        weights_precision = precision_of(weights.get("Type")) if weights else None
        precision = _tensor_precision(inputs[0]) if inputs else "UNKNOWN"
        if precision == "UNKNOWN" and weights_precision:
            precision = weights_precision
        origins = tuple(_ONNX_ORIGIN.findall(str(raw.get("Metadata", "")))) or tuple(
            part.strip() for part in re.split(r" \+ |\x1e|\x1f", name) if part.strip())
        layer_type = str(raw.get("ParameterType") or raw.get("LayerType") or "")
        layers.append(LayerPrecision(name, layer_type, precision, weights_precision, origins))
    return layers


@dataclass(frozen=True)
class LayerVerdict:
    layer: LayerPrecision
    expected: str
    ok: bool

    def line(self) -> str:
        mark = "ok  " if self.ok else "FAIL"
        return f"{mark} | {self.layer.name} | {self.layer.layer_type} | {self.layer.precision} | expected {self.expected}"


@dataclass
class PrecisionReport:
    requested: str
    verdicts: list[LayerVerdict] = field(default_factory=list)
    layers: list[LayerPrecision] = field(default_factory=list)
    problem: Optional[str] = None  # a failure not tied to one layer

    @property
    def failures(self) -> list[LayerVerdict]:
        return [v for v in self.verdicts if not v.ok]

    def __bool__(self) -> bool:
        return self.problem is None and not self.failures

    def counts(self) -> dict[str, int]:
        found: dict[str, int] = {}
        for verdict in self.verdicts:
            found[verdict.layer.precision] = found.get(verdict.layer.precision, 0) + 1
        return dict(sorted(found.items()))

    def summary(self) -> str:
        counts = ", ".join(f"{n} {p}" for p, n in self.counts().items()) or "none"
        verdict = "PASSED" if self else "FAILED"
        return (f"{verdict} | precision {self.requested} | {len(self.verdicts)} compute layers: {counts}"
                + (f" | {len(self.failures)} not in {self.requested}" if self.failures else "")
                + (f" | {self.problem}" if self.problem else ""))

    def lines(self) -> list[str]:
        return [v.line() for v in self.verdicts] + [self.summary()]

    def to_dict(self) -> dict:
        return {
            "requested": self.requested,
            "passed": bool(self),
            "counts": self.counts(),
            "layers": [{"name": l.name, "type": l.layer_type, "precision": l.precision, "weights": l.weights,
                        "onnx_nodes": list(l.onnx_nodes)} for l in self.layers],
            "compute_layers": [{"name": v.layer.name, "precision": v.layer.precision, "expected": v.expected,
                                "ok": v.ok} for v in self.verdicts],
        }


class PrecisionNotMaterialized(InceptionDeployError):
    """The engine runs layers wider than the graph asked for; no plan was written."""

    exit_code = 1

    def __init__(self, message: str, report: PrecisionReport):
        super().__init__(message)
        self.report = report


def check_precision(layers: list[LayerPrecision], requested: str,
                    expected_by_node: Mapping[str, str] | None = None) -> PrecisionReport:
    """Compare each compute layer's precision with what its ONNX nodes asked for.

    expected_by_node: ONNX Conv/Gemm node name -> 'INT8'/'FP16'/'FP32' as the graph types
    it (a node kept in FP32 on purpose stays allowed); layers that map to no known node
    are held to `requested`.
    """
    requested = requested.upper()
    expected_by_node = {k: v.upper() for k, v in (expected_by_node or {}).items()}
    report = PrecisionReport(requested=requested, layers=list(layers))
    for layer in layers:
        asked = [expected_by_node[n] for n in layer.onnx_nodes if n in expected_by_node]
        if not layer.is_compute and not asked:
            continue
        expected = min(asked, key=lambda p: PRECISION_RANK.get(p, 9)) if asked else requested
        actual_rank = PRECISION_RANK.get(layer.precision)
        ok = actual_rank is None or actual_rank <= PRECISION_RANK.get(expected, 3)
        report.verdicts.append(LayerVerdict(layer, expected, ok))
    known = [v for v in report.verdicts if v.layer.precision in PRECISION_RANK]
    if requested != "FP32" and not known:
        report.problem = ("the inspector names no precision for any convolution/GEMM layer, so "
                          f"{requested} cannot be confirmed")
    return report


def precision_failure_message(plan: str, report: PrecisionReport) -> str:
    if report.problem:
        return f"{plan} not written: {report.problem}"
    failures = report.failures
    first = failures[0]
    found = ", ".join(sorted({v.layer.precision for v in failures}))
    return (f"{plan} not written: {len(failures)} of {len(report.verdicts)} compute layers run in {found}, "
            f"not {report.requested} (first: '{first.layer.name}' in {first.layer.precision}); "
            "check the Q/DQ or FP16 casts around them with `inception-deploy lint`")
