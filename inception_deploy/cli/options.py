"""Options shared by several commands (stage: CLI)."""

from __future__ import annotations

import logging

import click

recipe_option = click.option(
    "--recipe", "-r", default=None, metavar="NAME|PATH",
    help="bundled recipe name (googlenet, inception_v3, googlenet-digits, ...) or a recipe YAML file",
)
weights_option = click.option(
    "--weights", "-w", default=None, metavar="PATH|random",
    help="checkpoint (.pth/.pt state dict, .safetensors, TorchScript, .pt2), or 'random'; "
         "omitted for a recipe that trains its own model (googlenet-digits)",
)
trust_option = click.option(
    "--trust-checkpoint", is_flag=True,
    help="allow full unpickling of the checkpoint and load TorchScript/.pt2 graphs without the static operator "
         "check: this can run code from the file; only for files you trust",
)
quiet_option = click.option("--quiet", "-q", is_flag=True, help="no progress bars")


def setup_logging(quiet: bool = False) -> None:
    from rich.logging import RichHandler

    logging.basicConfig(
        level=logging.WARNING if quiet else logging.INFO, format="%(message)s",
        handlers=[RichHandler(show_time=False, show_path=False, markup=False)], force=True,
    )
