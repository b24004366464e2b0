"""`inception-deploy build-engine MODEL.onnx [--fp16|--int8] -o model.plan` (stage: build-engine).

A thin layer over `inception_deploy.engine.build_engine`: lint, precision assertion, build
(TensorRT on a GPU machine, TensorRT-RTX anywhere), precision truth check on the engine's
layers, plan report, plan + manifest. Without any TensorRT it stops with one line (exit 2)
and writes nothing; a layer wider than the graph asks fails with exit 1 and no plan.
"""

from __future__ import annotations

import click

from ..engine.flavours import BUILDER_CHOICES, DEFAULT_COMPUTE_CAPABILITIES, HARDWARE_COMPATIBILITY
from .options import (FROM_RECIPE, artifact_path, common_options, console, echo, examples, output_option,
                      recipe_option, write_json)


@click.command("build-engine", epilog=examples(
    "inception-deploy build-engine out/googlenet.int8.onnx --int8 -o out/googlenet.int8.plan",
    "inception-deploy build-engine out/googlenet.fp16.onnx --fp16 --compute-capability sm86,sm89"))
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--fp16", is_flag=True, help="Assert MODEL is an FP16 graph and build it.")
@click.option("--int8", is_flag=True, help="Assert MODEL is a Q/DQ (INT8) graph and build it.")
@output_option("MODEL with .plan")
@recipe_option
@click.option("--builder", type=click.Choice(BUILDER_CHOICES), default="auto", show_default=True,
              help="auto: TensorRT where it imports and a GPU is here, else TensorRT-RTX (builds without a GPU).")
@click.option("--compute-capability", "compute_capability", metavar="sm86,sm89,...",
              show_default=",".join(DEFAULT_COMPUTE_CAPABILITIES),
              help="TensorRT-RTX target GPUs; one plan carries them all.")
@click.option("--hardware-compatibility", type=click.Choice(HARDWARE_COMPATIBILITY), default="none", show_default=True,
              help="TensorRT 10/11 plans for other GPUs than the building one: ampere-plus (any Ampere or newer GPU) "
                   "or same-compute-capability; slower kernels. TensorRT-RTX uses --compute-capability.")
@click.option("--min-batch", type=int, show_default=f"{FROM_RECIPE}, 1", help="Smallest batch of the optimization profile.")
@click.option("--opt-batch", type=int, show_default=f"{FROM_RECIPE}, 8", help="Batch TensorRT tunes kernels for.")
@click.option("--max-batch", type=int, show_default=f"{FROM_RECIPE}, 32", help="Largest batch of the optimization profile.")
@click.option("--workspace-mb", type=int, show_default=f"{FROM_RECIPE}, 4096", help="Workspace memory limit in MB.")
@click.option("--optimization-level", type=click.IntRange(0, 5), show_default=f"{FROM_RECIPE}, 3",
              help="Builder optimization level 0-5.")
@click.option("--timing-cache", type=click.Path(dir_okay=False),
              help="TensorRT timing cache file, read when present and rewritten after the build (TensorRT-RTX has none).")
@click.option("--target", show_default="the builder's: tensorrt-rtx, or the installed TensorRT", help="Lint target.")
@click.option("--show-layers", is_flag=True, help="Also print the per-layer table (engine layer, datatypes, ONNX nodes).")
@click.option("--no-precision-check", is_flag=True,
              help="Write the plan even when layers run wider than the graph asks (not recommended).")
@common_options
def command(model, fp16, int8, output, recipe, builder, compute_capability, hardware_compatibility, min_batch,
            opt_batch, max_batch, workspace_mb, optimization_level, timing_cache, target, show_layers,
            no_precision_check, json_path, quiet, verbose) -> None:
    """Build a TensorRT plan (plus MODEL.plan.json manifest) from an ONNX graph."""
    from pathlib import Path

    from pydantic import ValidationError

    from ..engine import PrecisionNotMaterialized, build_engine
    from ..errors import UserError
    from ..progress import working
    from ..recipes import BatchRange, EngineSection

    if fp16 and int8:
        raise UserError("give --fp16 or --int8, not both: the graph has one precision")
    precision = "fp16" if fp16 else "int8" if int8 else None
    section = _engine_section(recipe, model)
    batch = None
    if any(v is not None for v in (min_batch, opt_batch, max_batch)):
        given = {k: v for k, v in (("min", min_batch), ("opt", opt_batch), ("max", max_batch)) if v is not None}
        merged = {**section.batch.model_dump(), **given}  # flags not given keep the recipe's values
        try:
            batch = BatchRange(**merged)
        except ValidationError as exc:
            shown = " ".join(f"{k}={v}" for k, v in merged.items())
            reason = exc.errors()[0]["msg"].removeprefix("Value error, ")
            raise UserError(f"batch range {shown} (flags over recipe): {reason}; "
                            "set --min-batch/--opt-batch/--max-batch together") from None
    output = artifact_path(output, Path(model).with_suffix(".plan").name)
    try:
        with working(f"building the plan of {Path(model).name}", enabled=not quiet,
                     about="lint, build with NVIDIA's builder, truth check; usually seconds to a minute"):
            result = build_engine(model, output=output, precision=precision, batch=batch, workspace_mb=workspace_mb,
                                  optimization_level=optimization_level, timing_cache=timing_cache, target=target,
                                  engine=section, verify_precision=not no_precision_check, builder=builder,
                                  compute_capabilities=compute_capability,
                                  hardware_compatibility=hardware_compatibility)
    except PrecisionNotMaterialized as exc:
        for line in exc.report.lines():
            if not line.startswith("ok"):
                echo(line, err=True)
        raise
    for warning in result.warnings:
        echo(f"warning: {warning}", err=True)
    console().print(result.plan_report.table(title=f"{result.plan_path.name}"))
    if show_layers or verbose:
        for row in result.plan_report.layers:
            modules = f" | {', '.join(row['modules'])}" if row["modules"] else ""
            echo(f"{row['layer']} | {row['type']} | reads {row['reads']} | weights {row['weights'] or '-'} | "
                 f"writes {row['writes']} | {', '.join(row['onnx_nodes']) or '-'}{modules}")
    echo(result.precision_report.summary())
    manifest = result.manifest
    echo(f"wrote {result.plan_path} ({manifest.precision}, {result.plan_report.builder} for {manifest.targets}, "
         f"{manifest.build_seconds:.1f} s) and {result.manifest_path}")
    write_json(json_path, {"plan": str(result.plan_path), "manifest": str(result.manifest_path),
                           "precision": manifest.precision, "builder": result.plan_report.builder,
                           "targets": manifest.targets, "build_seconds": manifest.build_seconds,
                           "precision_check": result.precision_report.to_dict(),
                           "plan_report": result.plan_report.to_dict(), "warnings": result.warnings})


def _engine_section(recipe, model):
    """The engine section of the recipe resolved like every stage does (--recipe, else the one
    the graph's manifest names; checked against the graph's preprocessing), else the defaults.
    A manifest naming a recipe that is not at hand (a graph from another machine) is no error
    here: the flags and the defaults still build it."""
    from pathlib import Path

    from ..errors import UserError
    from ..manifest import read_manifest
    from ..recipes import EngineSection, resolve_recipe

    manifest = read_manifest(model) if Path(model).is_file() else None  # a missing file: build_engine says so
    if recipe is not None:
        return resolve_recipe(recipe, manifest, model).engine
    try:
        resolved = resolve_recipe(None, manifest, model)
    except UserError:
        resolved = None
    return resolved.engine if resolved is not None else EngineSection()
