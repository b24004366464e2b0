"""What a built plan is, read from its layer report (stage: build-engine).

Per plan: engine layers by the datatype they read; convolutions and GEMMs by the datatype
their engine layer computes in; the layers the builder added (quantize, dequantize, cast and
reformat kernels: engine layers that implement no ONNX op of their own); for every Concat of
the graph whether it was removed (no engine layer of its own: its inputs are written into
one buffer, or it is fused into the kernel that computes them) and, in an INT8 graph,
whether the engine rescales its branches there (its Q/DQ survive into the engine because
the scales differ); weights and activation memory; plan size and build time. Printed as a
table by build-engine and stored in the plan's manifest with the per-layer table.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Optional

from .layer_report import EngineLayer, LayerReport
from .precision_check import PrecisionReport

_PASS_THROUGH_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "Cast", "CastLike", "Identity", "Reshape",
                               "Flatten", "Squeeze", "Unsqueeze", "Transpose"})


@dataclass(frozen=True)
class AddedLayer:
    name: str
    does: str  # "quantize FP32 -> INT8", "cast FP32 -> FP16", "reformat FP16", ...


@dataclass(frozen=True)
class ConcatStatus:
    node: str
    removed: bool
    layer: Optional[str]  # its own engine layer when it was kept
    rescaled: Optional[str]  # "requantized" when its Q/DQ survive into the engine (the scales differ), else None

    def describe(self) -> str:
        kept = "removed" if self.removed else f"kept as '{self.layer}'"
        return kept + (f", {self.rescaled} (its inputs' scales differ)" if self.rescaled else "")


@dataclass
class PlanReport:
    precision: str
    builder: str  # "TensorRT-RTX 1.7.1.116"
    targets: list[str]
    plan_bytes: int
    build_seconds: float
    weights_bytes: Optional[int]
    activation_bytes: Optional[int]
    engine_layers: int
    layers_by_datatype: dict[str, int] = field(default_factory=dict)
    convolutions: dict[str, int] = field(default_factory=dict)  # ONNX Conv nodes by the datatype they run in
    gemms: dict[str, int] = field(default_factory=dict)
    added: list[AddedLayer] = field(default_factory=list)
    concats: list[ConcatStatus] = field(default_factory=list)
    layers: list[dict] = field(default_factory=list)  # the per-layer table

    @property
    def concats_removed(self) -> int:
        return sum(c.removed for c in self.concats)

    @property
    def concats_rescaled(self) -> int:
        return sum(c.rescaled is not None for c in self.concats)

    def rows(self) -> list[tuple[str, str]]:
        added: dict[str, int] = {}
        for layer in self.added:
            added[layer.does] = added.get(layer.does, 0) + 1
        rows = [
            ("builder", f"{self.builder} for {', '.join(self.targets)}"),
            ("plan", f"{_mb(self.plan_bytes)}, built in {self.build_seconds:.1f} s"),
            ("weights memory", _mb(self.weights_bytes)),
            ("activation memory", _mb(self.activation_bytes)),
            ("engine layers by datatype read", f"{self.engine_layers}: {_counts(self.layers_by_datatype)}"),
            ("convolutions (ONNX Conv)", _counts(self.convolutions) or "none"),
            ("GEMMs (ONNX Gemm/MatMul)", _counts(self.gemms) or "none"),
            ("layers the builder added", f"{len(self.added)}" + (f": {_counts(added)}" if added else "")),
            ("Concats removed", f"{self.concats_removed} of {len(self.concats)}"
             + (f"; requantized at {self.concats_rescaled}" if self.precision == "INT8" or self.concats_rescaled
                else "")),
        ]
        rows += [(f"  {c.node}", c.describe()) for c in self.concats if not c.removed or c.rescaled]
        return rows

    def table(self, title: str = ""):
        from rich.table import Table

        table = Table(title=title or None, show_header=False, box=None, pad_edge=False)
        table.add_column(style="bold")
        table.add_column()
        for key, value in self.rows():
            table.add_row(key, value)
        return table

    def lines(self) -> list[str]:
        width = max(len(key) for key, _ in self.rows())
        return [f"{key.ljust(width)}  {value}" for key, value in self.rows()]

    def to_dict(self) -> dict:
        return asdict(self)


def _mb(value: Optional[int]) -> str:
    return "n/a" if value is None else f"{value / 1e6:.2f} MB"


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {k}" for k, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _added_what(layer: EngineLayer) -> str:
    src, dst = layer.data_type, layer.output_type
    if src == dst:
        return f"reformat {src}"
    if dst in ("INT8", "FP8", "INT4", "FP4"):
        return f"quantize {src} -> {dst}"
    if src in ("INT8", "FP8", "INT4", "FP4"):
        return f"dequantize {src} -> {dst}"
    return f"cast {src} -> {dst}"


def describe_plan(report: LayerReport, view, precision: PrecisionReport, *, builder: str, targets: list[str],
                  plan_bytes: int, build_seconds: float, modules: Optional[dict[str, str]] = None) -> PlanReport:
    """The plan report of an engine built from the graph in `view` (a lint GraphView)."""
    modules = modules or {}
    op_of = {node.name: node.op_type for node in view.nodes if node.name}
    layers = report.engine_layers
    kernels = [layer for layer in layers if layer.is_compute or layer.kind == "pooling"]
    computed = {node for layer in kernels for node in layer.onnx_nodes}

    by_type: dict[str, int] = {}
    added: list[AddedLayer] = []
    for layer in layers:
        by_type[layer.data_type] = by_type.get(layer.data_type, 0) + 1
        if layer in kernels:
            continue
        own = [n for n in layer.onnx_nodes if op_of.get(n, "?") not in _PASS_THROUGH_OPS and n not in computed]
        if not own:
            added.append(AddedLayer(layer.name, _added_what(layer)))

    convolutions: dict[str, int] = {}
    gemms: dict[str, int] = {}
    for verdict in precision.verdicts:
        op = op_of.get(verdict.node)
        bucket = convolutions if op in ("Conv", "ConvTranspose") else gemms if op in ("Gemm", "MatMul") else None
        if bucket is not None:
            bucket[verdict.data] = bucket.get(verdict.data, 0) + 1

    concats = []
    for node in view.nodes:
        if node.op_type != "Concat" or len(node.input) < 2:
            continue
        listed = report.layers_of(node.name)
        own = [l for l in listed if all(op_of.get(n, "?") in _PASS_THROUGH_OPS | {"Concat"} for n in l.onnx_nodes)]
        output_qs = [c.name for out in node.output for c in view.consumers.get(out, []) if c.op_type == "QuantizeLinear"]
        input_dqs = [p.name for p in (view.producer(i) for i in node.input) if p is not None and
                     p.op_type == "DequantizeLinear"]
        # With one scale on every input and on the Q after it, TensorRT folds DQ -> Concat -> Q away
        # and none of them is left in the engine; with different scales they stay (a requantization).
        # A Concat with no Q after it is dequantized on purpose (its output is float in the graph).
        survived = any(report.layers_of(n) for n in output_qs + input_dqs)
        rescaled = "requantized" if output_qs and survived else None
        concats.append(ConcatStatus(node.name, not own, own[0].name if own else None, rescaled))

    rows = [{"layer": l.name, "type": l.layer_type, "kind": l.kind, "reads": l.data_type, "weights": l.weights_type,
             "writes": l.output_type, "onnx_nodes": list(l.onnx_nodes),
             "modules": sorted({modules[n] for n in l.onnx_nodes if n in modules})} for l in layers]
    return PlanReport(precision.requested, builder, list(targets), plan_bytes, round(build_seconds, 3),
                      report.weights_bytes, report.activation_bytes, len(layers), dict(sorted(by_type.items())),
                      convolutions, gemms, added, concats, rows)
