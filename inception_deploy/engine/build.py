"""build-engine: ONNX graph -> TensorRT plan + manifest (stage: build-engine).

The order is the point: read and lint the graph (or take the passing lint report of the same
file from an earlier stage), check that the requested precision is the graph's own
(strongly typed TensorRT has no precision flags, so --int8/--fp16 only assert what the graph
is), choose the builder (TensorRT 10/11 where it imports and a GPU is here, else
TensorRT-RTX, which builds on any machine), build, run the precision truth check on the
engine's layer report, describe the plan, and only then write the plan and its manifest
(atomically: never a partial plan, never a plan that failed its check).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional, Sequence

from ..errors import MissingDependency, UserError
from ..fileio import atomic_path, sha256_bytes, sha256_file
from ..artifact import load_onnx
from ..lint import MISSING_ONNX, LintReport, lint_model, parse_target
from ..lint.graph import GraphView
from ..lint.targets import DEFAULT_TARGET, RTX_TARGET
from ..recipes import BatchRange, EngineSection
from .flavours import TENSORRT_RTX, Flavour, choose_flavour, parse_compute_capabilities, parse_hardware_compatibility
from .graph_precision import GraphPrecision, check_requested_precision, classify_graph
from .manifest import EngineManifest, manifest_path, write_manifest
from .plan_files import PLAN_SUFFIXES
from .plan_report import PlanReport, describe_plan
from .precision_check import PrecisionNotMaterialized, PrecisionReport, check_precision, precision_failure_message


@dataclass
class EngineBuildResult:
    plan_path: Path
    manifest_path: Path
    manifest: EngineManifest
    precision_report: PrecisionReport
    plan_report: PlanReport
    lint_report: LintReport
    lint_reused: bool  # the caller's passing report for this very file was used, not a second lint
    warnings: list[str]


def default_lint_target(flavour: Optional[Flavour]) -> str:
    """The lint target for a builder: TensorRT-RTX's, the installed TensorRT's release (e.g.
    tensorrt-10.16), or tensorrt-11 when none is installed."""
    if flavour is TENSORRT_RTX:
        return RTX_TARGET
    version = flavour.version() if flavour is not None else None
    if not version:
        return DEFAULT_TARGET
    major, _, rest = version.partition(".")
    return f"tensorrt-{major}.{rest.partition('.')[0] or 0}"


def default_plan_path(onnx_path: str | Path) -> Path:
    return Path(onnx_path).with_suffix(".plan")


def profile_shapes(model, batch: BatchRange) -> tuple[dict[str, dict[str, list[int]]], set[str]]:
    """min/opt/max shape per graph input (batch axis from `batch`), and the inputs that are dynamic."""
    initializers = {t.name for t in model.graph.initializer}
    shapes, dynamic = {}, set()
    for value in model.graph.input:
        if value.name in initializers:
            continue
        dims = [d.dim_value if d.HasField("dim_value") else None for d in value.type.tensor_type.shape.dim]
        if any(d is None for d in dims[1:]):
            raise UserError(f"input '{value.name}' has dynamic dims beyond the batch axis ({dims}); "
                            "export with fixed channel/height/width")
        if dims and dims[0] is None:
            dynamic.add(value.name)
            shapes[value.name] = {key: [getattr(batch, key), *dims[1:]] for key in ("min", "opt", "max")}
        else:
            shapes[value.name] = {key: list(dims) for key in ("min", "opt", "max")}
    return shapes, dynamic


def _lineage(source: Optional[dict], onnx_path: Path, onnx_sha256: str, precision: str) -> dict:
    """The ONNX artifact's manifest (recipe, preprocessing, history) with this stage appended."""
    from ..manifest import add_stage, new_manifest

    inputs = {str(onnx_path): onnx_sha256}
    lineage = (add_stage(source, "build-engine", inputs=inputs, precision=precision) if source is not None
               else new_manifest("build-engine", inputs=inputs, precision=precision))
    lineage.pop("toolkit_version", None)  # EngineManifest sets its own
    return lineage


def module_names(view: GraphView, source: Optional[dict]) -> dict[str, str]:
    """ONNX node -> PyTorch module, where the manifest allows: graphs exported by
    inception-deploy carry torch's module scopes in their node names (validate's mapping)."""
    history = (source or {}).get("history") or []
    if not history or history[0].get("stage") != "export":
        return {}
    from ..validate.layerwise import module_path

    return {node.name: module_path(node.name) for node in view.nodes if node.name.startswith("/")}


def refuse_other_runtime(model, onnx_path: Path) -> None:
    """One line for a graph quantized for another runtime, before the lint lists its every zero point."""
    from ..lint.deployment_target import FIX, ort_cpu_reason

    reason = ort_cpu_reason(GraphView(model))
    if reason:
        raise UserError(f"{onnx_path}: not built: {reason}, which TensorRT rejects. {FIX}")


def _lint(model, onnx_path: Path, onnx_sha256: str, target: Optional[str], flavour: Optional[Flavour],
          given: Optional[LintReport]) -> tuple[LintReport, bool]:
    """The caller's passing report for this very file (same sha256, same or no asked target), else a fresh lint."""
    wanted = parse_target(target) if target else None
    if given is not None and given and given.sha256 == onnx_sha256 and (wanted is None or given.target == wanted.name):
        return given, True
    lint_target = wanted or parse_target(default_lint_target(flavour))
    report = lint_model(model, lint_target)
    report.source, report.sha256 = str(onnx_path), onnx_sha256
    if not report:
        first = report.errors[0]
        raise UserError(f"{onnx_path}: {len(report.errors)} lint error(s) for {lint_target.name}, first: "
                        f"{first.node}: {first.message} [{first.rule}]; see all with "
                        f"`inception-deploy lint {onnx_path} --target {lint_target.family}`")
    return report, False


def build_engine(onnx_path: str | Path, output: str | Path | None = None, precision: Optional[str] = None,
                 batch: Optional[BatchRange] = None, workspace_mb: Optional[int] = None,
                 optimization_level: Optional[int] = None, timing_cache: str | Path | None = None,
                 target: Optional[str] = None, engine: Optional[EngineSection] = None,
                 verify_precision: bool = True, builder: str = "auto",
                 compute_capabilities: str | Sequence[str] | None = None,
                 hardware_compatibility: Optional[str] = None,
                 lint_report: Optional[LintReport] = None) -> EngineBuildResult:
    """Build a TensorRT plan from `onnx_path`; precision None builds the graph as it is typed.

    builder: 'auto' (TensorRT where it imports and a GPU is here, else TensorRT-RTX), 'tensorrt'
    or 'tensorrt-rtx'. compute_capabilities: TensorRT-RTX targets ('sm86,sm89'; default
    flavours.DEFAULT_COMPUTE_CAPABILITIES). hardware_compatibility: TensorRT 10/11's level, 'none'
    (default: the plan runs on the GPU it was built on), 'ampere-plus' or 'same-compute-capability'.
    lint_report: a passing report of this very file
    (same sha256) from an earlier stage, used instead of linting again. Settings not given
    come from `engine` (a recipe's engine section), else its defaults.
    """
    from ..manifest import read_onnx_manifest

    section = engine or EngineSection()
    batch = batch or section.batch
    workspace_mb = workspace_mb if workspace_mb is not None else section.workspace_mb
    optimization_level = optimization_level if optimization_level is not None else section.optimization_level
    timing_cache = timing_cache if timing_cache is not None else section.timing_cache
    if not 0 <= optimization_level <= 5:
        raise UserError(f"optimization level {optimization_level} is outside 0..5")
    if workspace_mb < 16:
        raise UserError(f"workspace of {workspace_mb} MB is too small; give at least 16")
    asked_capabilities = (",".join(compute_capabilities) if compute_capabilities is not None
                          and not isinstance(compute_capabilities, str) else compute_capabilities)
    capabilities = parse_compute_capabilities(asked_capabilities)
    compatibility = parse_hardware_compatibility(hardware_compatibility)

    onnx_path = Path(onnx_path)
    plan_path = Path(output) if output is not None else default_plan_path(onnx_path)
    if plan_path.suffix not in PLAN_SUFFIXES:
        raise UserError(f"{plan_path}: a TensorRT plan must end in .plan or .engine (validate and benchmark "
                        "pick the TensorRT runner by it)")
    if plan_path.resolve() == onnx_path.resolve():
        raise UserError(f"{plan_path}: the plan would overwrite its ONNX input; choose another -o")

    model = load_onnx(onnx_path, missing=MISSING_ONNX, load_external_data=False).model
    onnx_sha256 = sha256_file(onnx_path)
    try:
        flavour: Optional[Flavour] = choose_flavour(builder, compute_capabilities=bool(asked_capabilities),
                                                    hardware_compatibility=compatibility != "none")
        missing = None
    except MissingDependency as exc:  # said after the checks that need no TensorRT
        flavour, missing = None, exc
    refuse_other_runtime(model, onnx_path)
    checked, reused = _lint(model, onnx_path, onnx_sha256, target, flavour, lint_report)
    view = GraphView(model)
    graph: GraphPrecision = classify_graph(view)
    build_precision = check_requested_precision(onnx_path, precision, graph)
    shapes, dynamic = profile_shapes(model, batch)
    if missing is not None:
        raise missing

    from .trt_build import BuildRequest, build_serialized_engine

    warnings: list[str] = []
    is_rtx = flavour is TENSORRT_RTX
    cache_path = Path(timing_cache) if timing_cache and not is_rtx else None
    if timing_cache and is_rtx:
        warnings.append(f"--timing-cache {timing_cache} is not used: TensorRT-RTX has no timing cache (its kernels "
                        "compile when the plan first runs; the runner keeps a runtime cache beside the plan)")
    started = time.perf_counter()
    built = build_serialized_engine(BuildRequest(
        onnx_path=onnx_path,
        profile={name: tuple(tuple(shapes[name][k]) for k in ("min", "opt", "max")) for name in sorted(dynamic)},
        workspace_bytes=workspace_mb << 20,
        optimization_level=optimization_level,
        timing_cache=cache_path.read_bytes() if cache_path and cache_path.is_file() else None,
        compute_capabilities=capabilities if is_rtx else (),
        hardware_compatibility="none" if is_rtx else compatibility,
    ), flavour)
    build_seconds = time.perf_counter() - started
    if cache_path is not None and built.timing_cache is not None:
        with atomic_path(cache_path) as tmp:  # the cache is valid even if the precision check fails
            tmp.write_bytes(built.timing_cache)

    source = read_onnx_manifest(model)
    modules = module_names(view, source)
    report = check_precision(built.layer_report, build_precision, graph.node_precisions, modules)
    if verify_precision and not report:
        raise PrecisionNotMaterialized(precision_failure_message(str(plan_path), report), report)
    plan_report = describe_plan(built.layer_report, view, report, builder=f"{flavour.title} {built.builder_version}",
                                targets=built.targets, plan_bytes=len(built.plan), build_seconds=build_seconds,
                                modules=modules)

    from ..serving.tensors import onnx_tensors

    graph_inputs, graph_outputs = onnx_tensors(model)  # a strongly typed plan's I/O types are the graph's
    gpu_name = capability = None
    if not is_rtx:
        from .cuda_memory import gpu_identity

        gpu_name, capability = gpu_identity()
    manifest = EngineManifest(
        **_lineage(source, onnx_path, onnx_sha256, build_precision),
        builder=flavour.name, tensorrt_version=built.builder_version, gpu_name=gpu_name,
        compute_capability=capability, compute_capabilities=list(capabilities) if is_rtx else [],
        hardware_compatibility="none" if is_rtx else compatibility,
        precision=build_precision, onnx_path=str(onnx_path), onnx_sha256=onnx_sha256,
        plan_sha256=sha256_bytes(built.plan), inputs=list(shapes),
        outputs=[v.name for v in model.graph.output], profile=shapes, workspace_mb=workspace_mb,
        tensors={t.name: {"dtype": t.dtype, "shape": t.shape} for t in graph_inputs + graph_outputs},
        optimization_level=optimization_level, timing_cache=str(cache_path) if cache_path else None,
        lint_target=checked.target, build_seconds=round(build_seconds, 3),
        built_at=datetime.now(timezone.utc).isoformat(timespec="seconds"), layer_precisions=report.to_dict(),
        plan_report=plan_report.to_dict(),
    )
    write_manifest(plan_path, manifest)
    try:
        with atomic_path(plan_path) as tmp:
            tmp.write_bytes(built.plan)
    except BaseException:
        manifest_path(plan_path).unlink(missing_ok=True)  # no manifest for a plan that is not there
        raise
    return EngineBuildResult(plan_path, manifest_path(plan_path), manifest, report, plan_report, checked, reused,
                             warnings + built.warnings)
