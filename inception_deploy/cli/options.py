"""Options shared by several commands, so one option means one thing everywhere (stage: CLI).

The rules every command follows (tests/test_cli_rules.py walks every `--help` to hold them):

- `-o/--output PATH` is the one artifact a command writes (a file; given an existing folder
  or a path ending in `/`, the artifact keeps its default name inside it). Commands that
  write several files take `--output-dir DIR` instead (`-o` stays a hidden alias there, so
  command lines written before this rule keep working).
- `--json FILE` writes the command's result as JSON; `--json -` (or `--json` alone) prints
  it on stdout, and everything else the command prints goes to stderr then.
- `-q/--quiet`: no progress and no informational log lines (results and errors still print);
  `-v/--verbose`: debug log lines too.
- `--backend` takes one vocabulary (backends.BACKEND_CHOICES); `auto` picks by artifact.
- defaults are shown by click (`show_default`); every option has help; every `--help`
  ends with examples (`examples(...)` as the command's epilog).
"""

from __future__ import annotations

import functools
import logging
import sys
from pathlib import Path
from typing import Any, Optional

import click

FROM_RECIPE = "the recipe's"  # show_default text for options whose default is the recipe's value

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
quiet_option = click.option("--quiet", "-q", is_flag=True,
                            help="no progress and no informational lines; results and errors still print")
verbose_option = click.option("--verbose", "-v", is_flag=True, help="also print debug log lines")
json_option = click.option(
    "--json", "json_path", default=None, is_flag=False, flag_value="-", metavar="FILE",
    type=click.Path(dir_okay=False, allow_dash=True),
    help="write the result as JSON to FILE ('-', or --json alone: stdout, other output then goes to stderr)",
)


def examples(*lines: str) -> str:
    """A command's epilog: its example command lines, kept as written (no re-wrapping)."""
    return "\b\nExamples:\n" + "\n".join(f"  {line}" for line in lines)


def output_option(default_help: str):
    """`-o/--output PATH`: the one artifact the command writes (a file, or a folder to put it in)."""
    return click.option("--output", "-o", default=None, type=click.Path(), show_default=default_help,
                        help="the artifact to write (a file; an existing folder or a path ending in / keeps "
                             "the default name inside it)")


def output_dir_option(help: str, default: Optional[str] = None):
    """`--output-dir DIR` for commands writing several files, with `-o/--output` as a hidden alias."""

    def decorate(f):
        @functools.wraps(f)
        def merged(*args, output_dir_alias=None, **kwargs):
            if output_dir_alias is not None:
                ctx = click.get_current_context()
                source = ctx.get_parameter_source("output_dir")
                if source not in (None, click.core.ParameterSource.DEFAULT) and kwargs["output_dir"] != output_dir_alias:
                    raise click.UsageError("give --output-dir once (-o is the same option)")
                kwargs["output_dir"] = output_dir_alias
            return f(*args, **kwargs)

        merged = click.option("--output", "-o", "output_dir_alias", default=None, hidden=True,
                              type=click.Path(file_okay=False), help="old spelling of --output-dir")(merged)
        merged = click.option("--output-dir", "output_dir", default=default, type=click.Path(file_okay=False),
                              show_default=default is not None, help=help)(merged)
        return merged

    return decorate


def common_options(f):
    """--json FILE, -q/--quiet and -v/--verbose, and the logging/progress set-up they imply."""

    @functools.wraps(f)
    def configured(*args, **kwargs):
        setup_logging(kwargs.get("quiet", False), kwargs.get("verbose", False), kwargs.get("json_path") == "-")
        return f(*args, **kwargs)

    for option in (verbose_option, quiet_option, json_option):
        configured = option(configured)
    return configured


def setup_logging(quiet: bool = False, verbose: bool = False, json_on_stdout: bool = False) -> None:
    from rich.console import Console
    from rich.logging import RichHandler

    from .. import progress

    progress.stream = sys.stderr if json_on_stdout else None
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(
        level=level, format="%(message)s", force=True,
        handlers=[RichHandler(show_time=False, show_path=False, markup=False, console=Console(stderr=True))],
    )


def echo(line: str = "", err: bool = False) -> None:
    """A human-readable line: on stdout, or on stderr while stdout carries JSON."""
    click.echo(line, err=err or _json_on_stdout())


def console(width: int = 160):
    """A rich console for tables, on stdout or (while stdout carries JSON) stderr."""
    from rich.console import Console

    return Console(width=width, soft_wrap=True, stderr=_json_on_stdout())


def _json_on_stdout() -> bool:
    ctx = click.get_current_context(silent=True)
    while ctx is not None:
        if ctx.params.get("json_path") == "-":
            return True
        ctx = ctx.parent
    return False


def write_json(json_path: Optional[str], data: Any) -> None:
    """--json: the result as JSON to a file (atomically) or, for '-', to stdout."""
    if not json_path:
        return
    import json

    if json_path == "-":
        click.echo(json.dumps(data, indent=2, default=str))
        return
    from ..fileio import write_json_atomic

    write_json_atomic(json_path, data)
    echo(f"wrote {json_path}")


def is_folder_output(output: str, file_suffixes: tuple[str, ...] = ()) -> bool:
    """-o names a folder: an existing one, a path ending in a separator, or (where the command
    has `file_suffixes`, as export's .onnx) a path without that suffix: `export -o out` kept
    meaning the folder out/ from before the one-artifact rule."""
    text = str(output)
    return (text.endswith(("/", "\\")) or Path(text).is_dir()
            or (bool(file_suffixes) and not text.endswith(file_suffixes)))


def artifact_path(output: Optional[str], default_name: str, file_suffixes: tuple[str, ...] = ()) -> Optional[Path]:
    """Resolve -o/--output: None stays None (the stage's default), a folder gets `default_name` inside."""
    if output is None:
        return None
    return Path(output) / default_name if is_folder_output(output, file_suffixes) else Path(output)


def _numbers(kind, count: Optional[tuple[int, ...]], name: str):
    def convert(ctx, param, value):
        if value is None:
            return None
        try:
            values = [kind(v) for v in value.replace(" ", "").split(",") if v]
        except ValueError:
            raise click.BadParameter(f"'{value}': give comma-separated numbers, e.g. {name}") from None
        if count is not None and len(values) not in count:
            raise click.BadParameter(f"'{value}': give {' or '.join(map(str, count))} values, e.g. {name}")
        return values
    return convert


def preprocessing_options(f):
    """The preprocessing a graph made elsewhere needs when no recipe gives it (recipe keys in `preprocessing`)."""
    from ..graph_recipe import preprocessing_overrides

    @functools.wraps(f)
    def collected(*args, input_size=None, mean=None, std=None, channel_order=None, resize=None, interpolation=None,
                  **kwargs):
        size = None if input_size is None else (input_size * 2 if len(input_size) == 1 else input_size)
        kwargs["preprocessing"] = preprocessing_overrides(size, mean, std, channel_order, resize, interpolation)
        return f(*args, **kwargs)

    for option in (
        click.option("--interpolation", type=click.Choice(["bilinear", "bicubic", "nearest"]), default=None,
                     show_default=f"{FROM_RECIPE}, bilinear", help="resize filter"),
        click.option("--resize", type=click.IntRange(min=1), default=None, show_default=f"{FROM_RECIPE}, none",
                     help="resize the shorter side to this, then centre-crop to --input-size"),
        click.option("--channel-order", type=click.Choice(["RGB", "BGR"]), default=None,
                     show_default=f"{FROM_RECIPE}, RGB", help="channel order the network expects"),
        click.option("--std", default=None, metavar="R,G,B", callback=_numbers(float, (3,), "0.229,0.224,0.225"),
                     show_default=FROM_RECIPE, help="per-channel std, after scaling pixels to 0..1"),
        click.option("--mean", default=None, metavar="R,G,B", callback=_numbers(float, (3,), "0.485,0.456,0.406"),
                     show_default=FROM_RECIPE, help="per-channel mean, after scaling pixels to 0..1"),
        click.option("--input-size", default=None, metavar="H[,W]", callback=_numbers(int, (1, 2), "224"),
                     show_default="the graph's", help="network input height and width"),
    ):
        collected = option(collected)
    return collected


# One backend vocabulary for every command that runs an artifact; `auto` picks by artifact.
ONNX_BACKENDS = ("ort-cpu", "ort-cuda", "ort-tensorrt")
PLAN_BACKENDS = ("tensorrt", "tensorrt-rtx")
SERVED_BACKENDS = ("triton",)
BACKEND_CHOICES = ("auto", *ONNX_BACKENDS, *PLAN_BACKENDS, *SERVED_BACKENDS)
BACKEND_HELP = ("runtime: auto picks TensorRT for a .plan (the builder its manifest names), Triton for a "
                "triton://HOST:PORT/MODEL and ONNX Runtime on the CPU for an .onnx; ort-cpu, ort-cuda, ort-tensorrt run "
                ".onnx graphs, tensorrt runs a plan with the TensorRT that built it (10/11 or RTX), tensorrt-rtx only "
                "TensorRT-RTX plans, triton a served model")


def resolve_backend(artifact, backend: str) -> str:
    """The runner name for `artifact` under --backend: 'auto' chosen by its kind; `tensorrt` runs
    any plan with the builder that made it (its manifest says which), `tensorrt-rtx` insists on
    a TensorRT-RTX plan."""
    from ..errors import UserError

    from ..serving.endpoint import is_endpoint

    served = artifact is not None and is_endpoint(str(artifact))
    if served or backend in SERVED_BACKENDS:
        if not served or backend not in ("auto", *SERVED_BACKENDS):
            raise UserError(f"{artifact}: --backend triton runs served models (triton://HOST:PORT/MODEL), and a served "
                            "model runs only there (--backend auto picks it)")
        return "triton"
    path = Path(str(artifact)) if artifact is not None else None
    is_plan = path is not None and path.suffix in (".plan", ".engine")
    if backend == "auto":
        return "tensorrt" if is_plan else "ort-cpu"
    if backend in PLAN_BACKENDS:
        if path is not None and path.suffix == ".onnx":
            raise UserError(f"--backend {backend} runs TensorRT plans and {path} is an ONNX graph; build one with "
                            f"`inception-deploy build-engine {path}`, or use --backend ort-tensorrt")
        if is_plan and path.is_file():
            from ..engine.environment import plan_flavour
            from ..engine.manifest import read_manifest

            built_by = plan_flavour(read_manifest(path)).name
            if backend == "tensorrt-rtx" and built_by != backend:  # tensorrt: any plan, run by its own builder
                raise UserError(f"{path} was built by {built_by}, not {backend}; use --backend {built_by} (or auto)")
        return "tensorrt"
    if backend in ONNX_BACKENDS and is_plan:
        raise UserError(f"{path} is a TensorRT plan and --backend {backend} runs ONNX graphs; use --backend auto "
                        "(or tensorrt / tensorrt-rtx)")
    return backend
