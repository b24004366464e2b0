"""Precision truth check: what the built engine really runs each Conv/Gemm in (stage: build-engine).

The ONNX graph says what it asks for (graph_precision.classify_graph: each Conv/Gemm INT8
where Q/DQ feed its data and weights, else the float type of its data). The engine's layer
report says what each engine layer reads. Every Conv/Gemm node of the graph must be computed
by engine layers (convolution or GEMM kernels naming the node in their Metadata) that read
data and weights no wider than asked: an INT8 node Int8 data and Int8 weights, an FP16 node
Half (or narrower). A wider layer, or a node no compute layer names, fails the check; the
failure names the engine layer, the ONNX nodes fused into it and the PyTorch module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Optional

from ..errors import InceptionDeployError
from .layer_report import EngineLayer, LayerReport

# Lower is narrower; a layer may run narrower than asked, never wider.
PRECISION_RANK = {"INT4": 0, "FP4": 0, "INT8": 1, "FP8": 1, "FP16": 2, "BF16": 2, "FP32": 3}


def _runs_within(datatype: Optional[str], expected: str) -> bool:
    rank = PRECISION_RANK.get(datatype or "UNKNOWN")
    return rank is not None and rank <= PRECISION_RANK.get(expected, 3)


@dataclass(frozen=True)
class NodeVerdict:
    node: str  # the ONNX Conv/Gemm, or '?' for a compute layer that names no graph node
    module: Optional[str]  # the PyTorch module, where the manifest allows
    expected: str  # what the graph asks: INT8 / FP16 / FP32
    layer: Optional[str]  # the engine layer that computes it (None: no compute layer names it)
    layer_type: str
    data: str  # datatype of the data it reads
    weights: Optional[str]
    fused: tuple[str, ...]  # ONNX nodes fused into that engine layer
    ok: bool

    def where(self) -> str:
        module = f" (PyTorch module {self.module})" if self.module else ""
        if self.layer is None:
            return f"ONNX {self.node}{module}: no convolution/GEMM engine layer names it"
        return (f"engine layer '{self.layer}' ({self.layer_type}) reads {self.data} data and {self.weights or 'no'} "
                f"weights, fusing ONNX {', '.join(self.fused) or '(none named)'}{module}")

    def line(self) -> str:
        mark = "ok  " if self.ok else "FAIL"
        module = f" | {self.module}" if self.module else ""
        return (f"{mark} | {self.node}{module} | {self.layer or '-'} | data {self.data} | weights "
                f"{self.weights or '-'} | asks {self.expected}")


@dataclass
class PrecisionReport:
    requested: str
    verdicts: list[NodeVerdict] = field(default_factory=list)
    problem: Optional[str] = None  # a failure not tied to one layer

    @property
    def failures(self) -> list[NodeVerdict]:
        return [v for v in self.verdicts if not v.ok]

    def __bool__(self) -> bool:
        return self.problem is None and not self.failures

    def counts(self) -> dict[str, int]:
        """Checked Conv/Gemm nodes by the precision their engine layer computes in."""
        found: dict[str, int] = {}
        for verdict in self.verdicts:
            precision = verdict.data if verdict.weights is None else max(
                (verdict.data, verdict.weights), key=lambda p: PRECISION_RANK.get(p, 9))
            found[precision] = found.get(precision, 0) + 1
        return dict(sorted(found.items()))

    def summary(self) -> str:
        counts = ", ".join(f"{n} {p}" for p, n in self.counts().items()) or "none"
        verdict = "PASSED" if self else "FAILED"
        return (f"{verdict} | precision {self.requested} | {len(self.verdicts)} Conv/Gemm checked in the engine: "
                f"{counts}" + (f" | {len(self.failures)} wider than the graph asks" if self.failures else "")
                + (f" | {self.problem}" if self.problem else ""))

    def lines(self) -> list[str]:
        return [v.line() for v in self.verdicts] + [self.summary()]

    def to_dict(self) -> dict:
        return {"requested": self.requested, "passed": bool(self), "counts": self.counts(), "problem": self.problem,
                "nodes": [{"node": v.node, "module": v.module, "expected": v.expected, "layer": v.layer,
                           "data": v.data, "weights": v.weights, "ok": v.ok} for v in self.verdicts]}


class PrecisionNotMaterialized(InceptionDeployError):
    """The engine runs layers wider than the graph asks for; no plan was written."""

    exit_code = 1

    def __init__(self, message: str, report: PrecisionReport):
        super().__init__(message)
        self.report = report


def _verdict(node: str, module: Optional[str], expected: str, layer: EngineLayer) -> NodeVerdict:
    weights = layer.weights_type
    if expected in ("INT8", "FP8", "INT4", "FP4"):
        # Quantized means both operands quantized: Int8 data AND Int8 weights.
        ok = layer.data_type == expected and weights == expected
    else:
        ok = _runs_within(layer.data_type, expected) and (weights is None or _runs_within(weights, expected))
    return NodeVerdict(node, module, expected, layer.name, layer.layer_type, layer.data_type, weights,
                       layer.onnx_nodes, ok)


def check_precision(report: LayerReport, requested: str, expected_by_node: Mapping[str, str],
                    modules: Optional[Mapping[str, str]] = None) -> PrecisionReport:
    """Check every Conv/Gemm of the graph against the engine layers that compute it.

    expected_by_node: ONNX Conv/Gemm name -> 'INT8'/'FP16'/'FP32' as the graph types it (a node
    kept float on purpose stays allowed). Compute layers that name no graph node are held to
    `requested`.
    """
    requested = requested.upper()
    modules = modules or {}
    result = PrecisionReport(requested)
    compute = [layer for layer in report.engine_layers if layer.is_compute]
    claimed: set[str] = set()
    for node, expected in expected_by_node.items():
        expected = expected.upper()
        layers = [layer for layer in compute if node in layer.onnx_nodes]
        if not layers:
            ok = expected == "FP32"  # nothing to confirm for a float node folded into another kernel
            result.verdicts.append(NodeVerdict(node, modules.get(node), expected, None, "", "UNKNOWN", None, (), ok))
            continue
        for layer in layers:
            claimed.add(layer.name)
            result.verdicts.append(_verdict(node, modules.get(node), expected, layer))
    for layer in compute:
        if layer.name not in claimed:
            result.verdicts.append(_verdict("?", None, requested, layer))
    if requested != "FP32" and not any(v.data in PRECISION_RANK for v in result.verdicts):
        result.problem = ("the layer report names no datatype for any convolution/GEMM layer, so "
                          f"{requested} cannot be confirmed")
    return result


def precision_failure_message(plan: str, report: PrecisionReport) -> str:
    if report.problem:
        return f"{plan} not written: {report.problem}"
    failures = report.failures
    first = failures[0]
    return (f"{plan} not written: {len(failures)} of {len(report.verdicts)} Conv/Gemm run wider than the graph asks "
            f"(first: ONNX {first.node} asks {first.expected}; {first.where()}); check the Q/DQ or FP16 casts "
            "around it with `inception-deploy lint`")
