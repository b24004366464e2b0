"""`inception-deploy train-digits`: train (or find cached) the bundled digits model (stage: load)."""

from __future__ import annotations

import click

from .options import quiet_option, recipe_option, setup_logging


@click.command("train-digits")
@recipe_option
@quiet_option
def command(recipe, quiet):
    """Train the bundled test model on scikit-learn's digits; cached, so a second run is free."""
    from ..recipes import resolve_recipe
    from ..training import read_training_report, trained_weights

    setup_logging(quiet)
    path = trained_weights(resolve_recipe(recipe or "googlenet-digits"), progress=not quiet)
    report = read_training_report(path) or {}
    click.echo(f"weights: {path}")
    if report:
        click.echo(f"held-out top-1: {100 * report['holdout_top1']:.2f}% on {report['holdout_images']} images "
                   f"(trained in {report['seconds']} s)")
