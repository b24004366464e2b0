"""`inception-deploy lint MODEL.onnx --target tensorrt-11` (stage: lint, CPU only).

Prints one line per finding (severity, node, what is wrong, rule id) and a PASSED/FAILED
summary. Exit 0 when clean (warnings allowed), 1 when there are errors, 2 when the input
cannot be read.
"""

from __future__ import annotations

import json

import click


@click.command("lint")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--target", default="tensorrt", show_default=True, metavar="tensorrt[-10|-11|-rtx]",
              help="TensorRT release whose ONNX parser to check against (tensorrt = 11; e.g. tensorrt-11.5; "
                   "tensorrt-rtx = TensorRT-RTX 1.7).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON instead of lines.")
@click.pass_context
def command(ctx: click.Context, model: str, target: str, as_json: bool) -> None:
    """Check MODEL.onnx against what TensorRT's ONNX parser accepts, without TensorRT or a GPU."""
    from ..lint import lint_model

    report = lint_model(model, target=target)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        for line in report.lines():
            click.echo(line)
    ctx.exit(0 if report else 1)
