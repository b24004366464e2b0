"""The `inception-deploy` command line: a click group with one thin command per stage.

Each command module registers itself on `main`; user errors become one line on stderr and
exit code 2 (parity failures exit 1), never a traceback. Every command runs through `_guarded`:
its parameters are checked first (preflight.py), and library exceptions about the user's
input become UserError through the one table in translate.py; anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations

import functools
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
    "package": "package",
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
        return _guarded(module.command)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except InceptionDeployError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)


def _guarded(command: click.Command) -> click.Command:
    """Wrap the callbacks of a command (and of a group's subcommands) once."""
    if getattr(command, "_guarded", False):
        return command
    command._guarded = True
    if command.callback is not None:
        callback = command.callback

        @functools.wraps(callback)
        def run(*args, **kwargs):
            from ..translate import translate
            from .preflight import preflight

            params = click.get_current_context().params
            preflight(params, getattr(command, "output_suffixes", ()))
            try:
                return callback(*args, **kwargs)
            except (InceptionDeployError, click.exceptions.ClickException, click.exceptions.Exit):
                raise
            except Exception as exc:  # noqa: BLE001 - translated only when the table knows it
                error = translate(exc, params)
                if error is None:
                    raise
                raise error from None

        command.callback = run
    for sub in getattr(command, "commands", {}).values():
        _guarded(sub)
    return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]},
             epilog="\b\nExamples:\n  inception-deploy run\n  inception-deploy quantize --help")
@click.version_option(__version__, prog_name="inception-deploy")
def main() -> None:
    """Take trained Inception networks from PyTorch to ONNX and TensorRT, with proof that nothing was lost."""
