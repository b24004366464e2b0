"""`inception-deploy export`: PyTorch checkpoint -> FP32 ONNX with a parity check (stage: export)."""

from __future__ import annotations

import click

from .options import quiet_option, recipe_option, setup_logging, trust_option, weights_option


@click.command("export")
@recipe_option
@weights_option
@trust_option
@click.option("--output-dir", "-o", default="out", show_default=True, type=click.Path(file_okay=False), help="folder for MODEL.onnx")
@click.option("--keep-aux", is_flag=True, help="export the aux classifiers as extra outputs")
@click.option("--opset", type=int, default=None, help="ONNX opset (default: the recipe's, 17)")
@quiet_option
def command(recipe, weights, trust_checkpoint, output_dir, keep_aux, opset, quiet):
    """Export a trained Inception model to ONNX and check it against PyTorch."""
    from ..export import export_onnx, parity_lines

    setup_logging(quiet)
    result = export_onnx(recipe or "googlenet-digits", weights, output_dir, trust_checkpoint=trust_checkpoint,
                         keep_aux=keep_aux or None, opset=opset, progress=not quiet)
    for line in parity_lines(result):
        click.echo(line)
    click.echo(f"wrote {result.path}")
