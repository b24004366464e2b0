"""`inception-deploy run`: the recipe's whole pipeline, stage by stage (stage: all)."""

from __future__ import annotations

import sys

import click

from .options import (common_options, console, echo, examples, output_dir_option, recipe_option, trust_option,
                      weights_option, write_json)


@click.command("run", epilog=examples(
    "inception-deploy run",
    "inception-deploy run --recipe googlenet --weights ckpt.pth --output-dir out/"))
@recipe_option
@weights_option
@trust_option
@output_dir_option("folder for every artifact and the validation reports", default="out")
@common_options
def command(recipe, weights, trust_checkpoint, output_dir, json_path, quiet, verbose):
    """Run every stage of a recipe. With no arguments: the bundled digits GoogLeNet on the CPU
    (trained on first use, then cached). Ends with a table of every artifact and its verdict."""
    from ..pipeline import STAGES, run_pipeline

    if not quiet:
        echo(f"run {recipe or 'googlenet-digits'}: {', '.join(name for name, _ in STAGES)} -> {output_dir}/")
    state = run_pipeline(recipe or "googlenet-digits", weights, output_dir, trust_checkpoint,
                         progress=not quiet, echo=echo)
    console().print(state.summary_table())
    echo(state.verdict_line())
    write_json(json_path, {
        "recipe": state.recipe.name, "exit_code": state.exit_code, "verdict": state.verdict_line(),
        "artifacts": [{"stage": stage, "path": str(path), "verdict": verdict}
                      for stage, path, verdict in state.artifact_verdicts()],
        "reports": {name: str(path) for name, path in getattr(state.validation, "files", {}).items()},
        "calibration_cache": None if state.calibration_cache is None else str(state.calibration_cache),
        "seconds": state.seconds, "lines": state.lines,
    })
    sys.exit(state.exit_code)
