"""The `inception-deploy` command line: a click group with one thin command per stage.

Each command module registers itself on `main`; user errors become one line on stderr and
exit code 2 (parity failures exit 1), never a traceback.
"""

from __future__ import annotations

import importlib
import sys

import click

from .. import __version__
from ..errors import InceptionDeployError

# Command modules, imported lazily so `inception-deploy --help` stays fast.
COMMAND_MODULES = {
    "run": "run",
    "export": "export",
    "optimize": "optimize",
    "quantize": "quantize",
    "build-engine": "build_engine",
    "lint": "lint",
    "validate": "validate",
    "benchmark": "benchmark",
    "inspect": "inspect_cmd",
    "train-digits": "train",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return sorted(COMMAND_MODULES)

    def get_command(self, ctx, name):
        module_name = COMMAND_MODULES.get(name)
        if module_name is None:
            return None
        try:
            module = importlib.import_module(f"{__name__}.{module_name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"{__name__}.{module_name}":
                return None  # stage not built yet
            raise
        return module.command

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except InceptionDeployError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="inception-deploy")
def main() -> None:
    """Take trained Inception networks from PyTorch to ONNX and TensorRT, with proof that nothing was lost."""
