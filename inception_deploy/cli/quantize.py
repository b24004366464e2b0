"""`inception-deploy quantize`: FP32 ONNX -> INT8 (explicit Q/DQ) or FP16 ONNX (stage: quantize)."""

from __future__ import annotations

import click

from ..precision.calibrators import METHODS
from .options import quiet_option, recipe_option, setup_logging


@click.command("quantize")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--int8", "precision", flag_value="int8", default=True, help="INT8 with Q/DQ (default)")
@click.option("--fp16", "precision", flag_value="fp16", help="FP16 with FP32 inputs/outputs")
@recipe_option
@click.option("--calib-data", default=None, metavar="DIR|FILE", help="image folder, .npy/.npz, digits-train (default: the recipe's)")
@click.option("--calib-count", type=int, default=None, help="images to calibrate on (default: the recipe's, 256)")
@click.option("--calib-method", type=click.Choice(METHODS), default=None,
              help="calibrator (default: the recipe's, entropy)")
@click.option("--calib-cache", default=None, type=click.Path(dir_okay=False),
              help="calibration cache: reused when it exists (without data), else written here")
@click.option("--accuracy-budget", type=float, default=None, metavar="POINTS",
              help="keep the most sensitive layers float until top-1 agreement loses at most this many points")
@click.option("--bias-correction/--no-bias-correction", default=None,
              help="fold the mean shift int8 rounding causes into float biases (default: the recipe's, on)")
@click.option("--equalize/--no-equalize", default=None,
              help="rescale Conv channels to fill their shared int8 ranges first (default: the recipe's, on)")
@click.option("--allow-fewer", is_flag=True, help="calibrate on fewer images than asked when some are unreadable")
@click.option("--output", "-o", default=None, type=click.Path(dir_okay=False), help="default: MODEL.int8.onnx / MODEL.fp16.onnx")
@quiet_option
def command(model, precision, recipe, calib_data, calib_count, calib_method, calib_cache, accuracy_budget,
            bias_correction, equalize, allow_fewer, output, quiet):
    """Make an INT8 or FP16 graph from an FP32 one and compare it with FP32 on the data at hand."""
    from ..precision import quantize_onnx

    setup_logging(quiet)
    result = quantize_onnx(model, output, recipe=recipe, precision=precision, calib_data=calib_data,
                           calib_count=calib_count, calib_method=calib_method, calib_cache=calib_cache,
                           accuracy_budget=accuracy_budget, progress=not quiet, allow_fewer=allow_fewer,
                           bias_correction=bias_correction, equalize=equalize)
    for line in result.lines():
        click.echo(line)
