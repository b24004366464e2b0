"""`inception-deploy run`: the recipe's whole pipeline, stage by stage (stage: all)."""

from __future__ import annotations

import sys

import click

from .options import quiet_option, recipe_option, setup_logging, trust_option, weights_option


@click.command("run")
@recipe_option
@weights_option
@trust_option
@click.option("--output-dir", "-o", default="out", show_default=True, type=click.Path(file_okay=False))
@quiet_option
def command(recipe, weights, trust_checkpoint, output_dir, quiet):
    """Run every stage of a recipe. With no arguments: the bundled digits GoogLeNet on the CPU
    (trained on first use, then cached)."""
    from ..pipeline import run_pipeline

    setup_logging(quiet)
    state = run_pipeline(recipe or "googlenet-digits", weights, output_dir, trust_checkpoint,
                         progress=not quiet, echo=click.echo)
    for stage, path in state.artifacts.items():
        click.echo(f"{stage}: {path}")
    sys.exit(state.exit_code)
