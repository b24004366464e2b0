"""`inception-deploy lint MODEL.onnx --target tensorrt-11` (stage: lint, CPU only).

Prints one line per finding (severity, node, what is wrong, rule id) and a PASSED/FAILED
summary. Exit 0 when clean (warnings allowed), 1 when there are errors, 2 when the input
cannot be read.
"""

from __future__ import annotations

import click

from .options import common_options, echo, examples, write_json


@click.command("lint", epilog=examples(
    "inception-deploy lint out/googlenet.int8.onnx --target tensorrt-11",
    "inception-deploy lint out/googlenet.int8.onnx --target tensorrt-rtx --json lint.json"))
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--target", default="tensorrt", show_default=True, metavar="tensorrt[-10|-11|-rtx]",
              help="TensorRT release whose ONNX parser to check against (tensorrt = 11; e.g. tensorrt-11.5; "
                   "tensorrt-rtx = TensorRT-RTX 1.7).")
@common_options
@click.pass_context
def command(ctx: click.Context, model: str, target: str, json_path, quiet: bool, verbose: bool) -> None:
    """Check MODEL.onnx against what TensorRT's ONNX parser accepts, without TensorRT or a GPU."""
    from ..lint import lint_model

    report = lint_model(model, target=target)
    if json_path != "-":
        for line in report.lines():
            echo(line)
    write_json(json_path, report.to_dict())
    ctx.exit(0 if report else 1)
