"""build-engine: ONNX graph -> TensorRT plan + manifest (stage: build-engine).

The order is the point: read and lint the graph, check that the requested precision is
the graph's own (TensorRT 11 has no precision flags, so --int8/--fp16 only assert what
the graph is), then demand TensorRT and a GPU, build, check the built layers' precisions,
and only then write the plan and its manifest (atomically: never a partial plan).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

from ..errors import UserError
from ..fileio import atomic_path, sha256_bytes, sha256_file
from ..lint import LintReport, lint_model, load_onnx, parse_target
from ..lint.targets import DEFAULT_TARGET
from ..recipes import BatchRange, EngineSection
from .environment import installed_tensorrt_version, require_tensorrt_and_gpu
from .graph_precision import GraphPrecision, check_requested_precision, classify_graph
from .inspector import (PrecisionNotMaterialized, PrecisionReport, check_precision, parse_layer_information,
                        precision_failure_message)
from .manifest import EngineManifest, manifest_path, write_manifest

PLAN_SUFFIXES = (".plan", ".engine")


@dataclass
class EngineBuildResult:
    plan_path: Path
    manifest_path: Path
    manifest: EngineManifest
    precision_report: PrecisionReport
    lint_report: LintReport
    warnings: list[str]


def default_lint_target() -> str:
    """The installed TensorRT's release (e.g. tensorrt-10.16), else tensorrt-11."""
    version = installed_tensorrt_version()
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


def _lineage(model, onnx_path: Path, precision: str) -> dict:
    """The ONNX artifact's manifest (recipe, preprocessing, history) with this stage appended."""
    from ..manifest import add_stage, new_manifest, read_manifest as read_onnx_manifest

    inputs = {str(onnx_path): sha256_file(onnx_path)}
    source = read_onnx_manifest(model)
    lineage = (add_stage(source, "build-engine", inputs=inputs, precision=precision) if source is not None
               else new_manifest("build-engine", inputs=inputs, precision=precision))
    lineage.pop("toolkit_version", None)  # EngineManifest sets its own
    return lineage


def build_engine(onnx_path: str | Path, output: str | Path | None = None, precision: Optional[str] = None,
                 batch: Optional[BatchRange] = None, workspace_mb: Optional[int] = None,
                 optimization_level: Optional[int] = None, timing_cache: str | Path | None = None,
                 target: Optional[str] = None, engine: Optional[EngineSection] = None,
                 verify_precision: bool = True) -> EngineBuildResult:
    """Build a TensorRT plan from `onnx_path`; precision None builds the graph as it is typed.

    Settings not given come from `engine` (a recipe's engine section), else its defaults.
    """
    section = engine or EngineSection()
    batch = batch or section.batch
    workspace_mb = workspace_mb if workspace_mb is not None else section.workspace_mb
    optimization_level = optimization_level if optimization_level is not None else section.optimization_level
    timing_cache = timing_cache if timing_cache is not None else section.timing_cache
    if not 0 <= optimization_level <= 5:
        raise UserError(f"optimization level {optimization_level} is outside 0..5")
    if workspace_mb < 16:
        raise UserError(f"workspace of {workspace_mb} MB is too small; give at least 16")

    onnx_path = Path(onnx_path)
    plan_path = Path(output) if output is not None else default_plan_path(onnx_path)
    if plan_path.suffix not in PLAN_SUFFIXES:
        raise UserError(f"{plan_path}: a TensorRT plan must end in .plan or .engine (validate and benchmark "
                        "pick the TensorRT runner by it)")
    if plan_path.resolve() == onnx_path.resolve():
        raise UserError(f"{plan_path}: the plan would overwrite its ONNX input; choose another -o")

    model, _ = load_onnx(onnx_path)
    lint_target = parse_target(target or default_lint_target())
    lint_report = lint_model(model, lint_target)
    if not lint_report:
        first = lint_report.errors[0]
        raise UserError(f"{onnx_path}: {len(lint_report.errors)} lint error(s) for {lint_target.name}, first: "
                        f"{first.node}: {first.message} [{first.rule}]; see all with "
                        f"`inception-deploy lint {onnx_path} --target tensorrt-{lint_target.major}`")
    graph: GraphPrecision = classify_graph(model)
    build_precision = check_requested_precision(onnx_path, precision, graph)
    shapes, dynamic = profile_shapes(model, batch)

    require_tensorrt_and_gpu("build-engine")
    from .cuda_memory import gpu_identity
    from .trt_build import BuildRequest, build_serialized_engine

    cache_path = Path(timing_cache) if timing_cache else None
    started = time.perf_counter()
    built = build_serialized_engine(BuildRequest(
        onnx_path=onnx_path,
        profile={name: tuple(tuple(shapes[name][k]) for k in ("min", "opt", "max")) for name in sorted(dynamic)},
        workspace_bytes=workspace_mb << 20,
        optimization_level=optimization_level,
        timing_cache=cache_path.read_bytes() if cache_path and cache_path.is_file() else None,
    ))
    build_seconds = time.perf_counter() - started
    if cache_path is not None:
        with atomic_path(cache_path) as tmp:  # the cache is valid even if the precision check fails
            tmp.write_bytes(built.timing_cache)

    report = check_precision(parse_layer_information(built.layer_information), build_precision,
                             graph.node_precisions)
    if verify_precision and not report:
        raise PrecisionNotMaterialized(precision_failure_message(str(plan_path), report), report)

    gpu_name, capability = gpu_identity()
    manifest = EngineManifest(
        **_lineage(model, onnx_path, build_precision),
        tensorrt_version=built.tensorrt_version, gpu_name=gpu_name, compute_capability=capability,
        precision=build_precision, onnx_path=str(onnx_path), onnx_sha256=sha256_file(onnx_path),
        plan_sha256=sha256_bytes(built.plan), inputs=list(shapes),
        outputs=[v.name for v in model.graph.output], profile=shapes, workspace_mb=workspace_mb,
        optimization_level=optimization_level, timing_cache=str(cache_path) if cache_path else None,
        lint_target=lint_target.name, build_seconds=round(build_seconds, 3),
        built_at=datetime.now(timezone.utc).isoformat(timespec="seconds"), layer_precisions=report.to_dict(),
    )
    write_manifest(plan_path, manifest)
    try:
        with atomic_path(plan_path) as tmp:
            tmp.write_bytes(built.plan)
    except BaseException:
        manifest_path(plan_path).unlink(missing_ok=True)  # no manifest for a plan that is not there
        raise
    return EngineBuildResult(plan_path, manifest_path(plan_path), manifest, report, lint_report, built.warnings)
