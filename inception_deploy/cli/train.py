"""`inception-deploy train-digits`: train (or find cached) the bundled digits model (stage: load)."""

from __future__ import annotations

import click

from .options import common_options, echo, examples, recipe_option, write_json


@click.command("train-digits", epilog=examples("inception-deploy train-digits",
                                               "INCEPTION_DEPLOY_CACHE=/tmp/cache inception-deploy train-digits -q"))
@recipe_option
@common_options
def command(recipe, json_path, quiet, verbose):
    """Train the bundled test model on scikit-learn's digits; cached, so a second run is free."""
    from ..recipes import resolve_recipe
    from ..training import read_training_report, trained_weights

    path = trained_weights(resolve_recipe(recipe or "googlenet-digits"), progress=not quiet)
    report = read_training_report(path) or {}
    echo(f"weights: {path}")
    if report:
        echo(f"held-out top-1: {100 * report['holdout_top1']:.2f}% on {report['holdout_images']} images "
             f"(trained in {report['seconds']} s)")
    write_json(json_path, {"weights": str(path), "training": report})
