"""The `run` pipeline: every stage of a recipe, in order, artifacts passed along (stage: all).

Each stage is a function from the pipeline's state (recipe, reference, artifacts so far)
to new artifacts; the pipeline only sequences them and reports. A stage raises on
failure, so a pipeline that returns has passed every check it ran. What a stage made is
handed on, not made again: the PyTorch reference loaded for export is the one validate
compares with, and the FP32 export is the graph layer-wise validation reads.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from .recipes import Recipe, resolve_recipe

log = logging.getLogger(__name__)


@dataclass
class PipelineState:
    recipe: Recipe
    weights: Optional[str]
    output_dir: Path
    trust_checkpoint: bool = False
    progress: bool = True
    reference: object = None
    artifacts: dict[str, Path] = field(default_factory=dict)  # stage name -> artifact
    plans: dict[str, Path] = field(default_factory=dict)  # precision -> plan built (runnable here or not)
    lint_reports: dict = field(default_factory=dict)  # artifact name -> its LintReport (build-engine reuses it)
    lines: list[str] = field(default_factory=list)  # what the user is shown
    seconds: dict[str, float] = field(default_factory=dict)
    exit_code: int = 0
    notes: dict[str, str] = field(default_factory=dict)  # artifact name -> why it has no validation verdict
    calibration_cache: Optional[Path] = None
    validation: object = None  # the ValidationReport

    def artifact_verdicts(self) -> list[tuple[str, Path, str]]:
        """(stage, artifact, verdict) per artifact: its validation checks' verdict, or why it has none."""
        checks = getattr(self.validation, "checks", [])
        rows = []
        made = {stage: path for stage, path in self.artifacts.items() if path.suffix}  # files first
        for precision, plan in self.plans.items():  # plans that could not run here are no validate target
            made.setdefault(f"{precision}-plan", plan)
        made.update(self.artifacts)  # then folders (the model repository)
        for stage, path in made.items():
            statuses = {c.status for c in checks if c.target in (path.name, str(path))}
            if "FAILED" in statuses:
                verdict = "FAILED"
            elif "PASSED" in statuses:
                verdict = "PASSED" + (" (some checks SKIPPED)" if "SKIPPED" in statuses else "")
            elif statuses:
                verdict = "SKIPPED"
            else:
                verdict = self.notes.get(stage, "not validated")
            rows.append((stage, path, verdict))
        return rows

    def summary_table(self):
        """The table `run` ends with: each artifact and its verdict, the reports, the calibration cache."""
        from rich.table import Table

        table = Table(title=f"run {self.recipe.name}: {self.output_dir}", title_justify="left")
        for column in ("artifact", "file", "verdict"):
            table.add_column(column)
        for stage, path, verdict in self.artifact_verdicts():
            table.add_row(stage, str(path), verdict)
        for name, path in getattr(self.validation, "files", {}).items():
            table.add_row(f"report ({name})", str(path), "")
        if self.calibration_cache is not None:
            table.add_row("calibration cache", str(self.calibration_cache), "")
        return table

    def verdict_line(self) -> str:
        rows = self.artifact_verdicts()
        failed = [stage for stage, _, verdict in rows if verdict.startswith("FAILED")]
        seconds = sum(self.seconds.values())
        if self.exit_code == 0:
            return f"run PASSED: {len(rows)} artifact(s), every check that ran passed ({seconds:.0f} s)"
        named = f" ({', '.join(failed)})" if failed else ""
        return f"run FAILED{named}: see the FAILED lines above (exit {self.exit_code}, {seconds:.0f} s)"


def _export(state: PipelineState) -> None:
    from .export import export_onnx, parity_lines
    from .reference import load_reference

    state.reference = load_reference(state.recipe, state.weights, state.trust_checkpoint, state.progress)
    result = export_onnx(state.recipe, output_dir=state.output_dir, reference=state.reference, progress=state.progress)
    state.artifacts["fp32"] = result.path
    state.lines += parity_lines(result)


def _optimize(state: PipelineState) -> None:
    from .passes import optimize_onnx

    result = optimize_onnx(state.artifacts["fp32"], recipe=state.recipe)
    state.artifacts["optimized"] = result.path
    removed = sum(result.counts_before.values()) - sum(result.counts_after.values())
    state.lines.append(f"PASSED | optimize | {', '.join(result.passes)} | {sum(result.counts_before.values())} -> "
                       f"{sum(result.counts_after.values())} nodes ({removed} removed), outputs equal within tolerance")


def _quantize(precision: str):
    def stage(state: PipelineState) -> None:
        from .precision import quantize_onnx

        if not getattr(state.recipe.precision, precision).enabled:
            state.lines.append(f"SKIPPED | quantize {precision} | precision.{precision}.enabled is false in recipe "
                               f"'{state.recipe.name}'")
            return
        source = state.artifacts.get("optimized", state.artifacts["fp32"])
        result = quantize_onnx(source, recipe=state.recipe, precision=precision, progress=state.progress)
        state.artifacts[precision] = result.path
        if getattr(result, "cache_path", None) is not None:
            state.calibration_cache = result.cache_path
        state.lines += result.lines()

    return stage


def _lint(state: PipelineState) -> None:
    """Every graph the engine builder would take must pass TensorRT's ONNX parser rules.

    TensorRT 11.0's rules, the strictest this project encodes (a pass there is a pass for
    TensorRT-RTX too); build-engine reuses these passing reports instead of linting again.
    """
    from .lint import lint_model

    for name in ("optimized", "fp16", "int8"):
        if name not in state.artifacts or _not_for_tensorrt(state, name, "lint tensorrt-11"):
            continue
        report = lint_model(state.artifacts[name], target="tensorrt-11")
        state.lint_reports[name] = report
        if not report:
            state.exit_code = 1
        verdict = "PASSED" if report else "FAILED"
        state.lines.append(f"{verdict} | lint tensorrt-11 | {state.artifacts[name].name} | "
                           f"{len(report.errors)} error(s), {len(report.warnings)} warning(s)")
        state.lines += [f"  {finding}" for finding in (report.errors + report.warnings)[:10]]


def _not_for_tensorrt(state: PipelineState, name: str, stage: str) -> bool:
    """An INT8 graph quantized for ONNX Runtime CPU (precision.int8.target: ort-cpu) is not a
    TensorRT graph: it is neither linted for TensorRT nor built, and a SKIPPED line says why."""
    target = state.recipe.precision.int8.target
    if name != "int8" or target == "tensorrt":
        return False
    state.lines.append(f"SKIPPED | {stage} | {state.artifacts[name].name} is quantized for {target} "
                       "(precision.int8.target); TensorRT takes the tensorrt target's graph")
    return True


def _build_engines(state: PipelineState) -> None:
    """FP16 and INT8 plans with their precision truth check and plan report: TensorRT where it
    and a GPU exist, else TensorRT-RTX (no GPU needed); without either a SKIPPED line says what
    is missing. A plan goes on to validate only where it can run (a GPU)."""
    from .engine.build import build_engine
    from .engine.environment import missing_to_run, plan_flavour
    from .engine.precision_check import PrecisionNotMaterialized
    from .errors import MissingDependency
    from .progress import working

    for precision in ("fp16", "int8"):
        if precision not in state.artifacts:
            continue
        if _not_for_tensorrt(state, precision, "build-engine"):
            continue
        graph = state.artifacts[precision]
        lint_report = state.lint_reports.get(precision)
        if lint_report is not None and not lint_report:
            state.lines.append(f"SKIPPED | build-engine | {graph.name} failed its lint above")
            continue
        try:
            with working(f"building the {precision.upper()} plan of {graph.name}", enabled=state.progress,
                         about="TensorRT's builder, usually seconds to a minute"):
                result = build_engine(graph, precision=precision, engine=state.recipe.engine, lint_report=lint_report)
        except MissingDependency as exc:
            state.lines.append(f"SKIPPED | build-engine | {exc}")
            return
        except PrecisionNotMaterialized as exc:
            state.exit_code = 1
            state.lines.append(f"FAILED | build-engine | {exc}")
            state.lines += [f"  {line}" for line in exc.report.lines() if line.startswith("FAIL ")][:10]
            continue
        state.plans[precision] = result.plan_path
        truth = result.precision_report.summary().split(" | ", 1)[1]  # "precision INT8 | 58 Conv/Gemm ..."
        state.lines.append(f"PASSED | build-engine | {result.plan_path.name} | {truth}")
        state.lines += [f"  {line}" for line in result.plan_report.lines()]
        missing = missing_to_run(plan_flavour(result.manifest))
        if missing:
            state.lines.append(f"  {result.plan_path.name} is not validated here: running a plan needs "
                               f"{' and '.join(missing)}")
            state.notes[f"{precision}-plan"] = f"built and truth-checked; not run here (needs {' and '.join(missing)})"
        else:
            state.artifacts[f"{precision}-plan"] = result.plan_path


def _validate(state: PipelineState) -> None:
    """Every artifact against the PyTorch reference; the verdict is the pipeline's exit code."""
    from .validate import validate

    targets = list(state.artifacts.values())
    report = validate(state.recipe, reference=state.reference, targets=targets,
                      output_dir=state.output_dir / "validation", progress=state.progress,
                      fp32_onnx=state.artifacts.get("fp32"))
    state.validation = report
    state.lines += report.lines()
    state.lines.append(f"reports: {state.output_dir / 'validation'}")
    state.exit_code = max(state.exit_code, report.exit_code)


def _package(state: PipelineState) -> None:
    """A Triton model repository (out/model_repository/) for what the run made: the optimized FP32
    graph (named after the recipe, with the preprocessing ensemble), the FP16 and INT8 graphs and
    the plans, each config read back with Triton's own schema. Without tritonclient: SKIPPED."""
    from .errors import MissingDependency

    try:
        from .serving import package_triton
        from .serving.model_config import read_config, schema

        schema()
    except MissingDependency as exc:
        state.lines.append(f"SKIPPED | package | {exc}")
        return
    repository = state.output_dir / "model_repository"
    jobs = [(state.artifacts.get("optimized", state.artifacts.get("fp32")),
             {"name": state.recipe.name, "with_preprocessing": True})]
    jobs += [(state.artifacts[p], {}) for p in ("fp16", "int8") if p in state.artifacts]
    jobs += [(plan, {}) for plan in state.plans.values()]
    models = 0
    for artifact, options in jobs:
        result = package_triton([artifact], repository, recipe=state.recipe, **options)
        for model in result.models:
            read_config(model.config_path)  # what Triton will parse, parsed with its schema
        models += len(result.models)
        state.lines += result.lines()
    state.lines.append(f"model repository: {repository} ({models} models; configs parse with Triton's schema)")
    state.artifacts["model-repository"] = repository
    state.notes["model-repository"] = f"{models} models, configs parsed with Triton's schema"


STAGES: list[tuple[str, Callable[[PipelineState], None]]] = [
    ("export", _export),
    ("optimize", _optimize),
    ("quantize-fp16", _quantize("fp16")),
    ("quantize-int8", _quantize("int8")),
    ("lint", _lint),
    ("build-engine", _build_engines),
    ("validate", _validate),
    ("package", _package),
]


def run_pipeline(recipe: Recipe | str = "googlenet-digits", weights: Optional[str] = None,
                 output_dir: str | Path = "out", trust_checkpoint: bool = False, progress: bool = True,
                 echo: Callable[[str], None] = print) -> PipelineState:
    recipe = resolve_recipe(recipe)
    state = PipelineState(recipe, weights, Path(output_dir), trust_checkpoint, progress)
    for name, stage in STAGES:
        started = time.perf_counter()
        shown = len(state.lines)
        stage(state)
        state.seconds[name] = round(time.perf_counter() - started, 2)
        for line in state.lines[shown:]:
            echo(line)
        echo(f"[{name}] done in {state.seconds[name]:.1f} s")
    return state
