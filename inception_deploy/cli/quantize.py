"""`inception-deploy quantize`: FP32 ONNX -> INT8 (explicit Q/DQ) or FP16 ONNX (stage: quantize)."""

from __future__ import annotations

import click

from ..precision.calibrators import METHODS
from .options import (FROM_RECIPE, artifact_path, common_options, echo, examples, output_option,
                      preprocessing_options, recipe_option, write_json)


@click.command("quantize", epilog=examples(
    "inception-deploy quantize out/googlenet.opt.onnx --int8 --calib-data imgs/ -o out/googlenet.int8.onnx",
    "inception-deploy quantize theirs.onnx --int8 --calib-data imgs/ --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225"))
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--int8", "precision", flag_value="int8", default=True, help="INT8 with Q/DQ (the default)")
@click.option("--fp16", "precision", flag_value="fp16", help="FP16 with FP32 inputs/outputs")
@recipe_option
@click.option("--calib-data", default=None, metavar="DIR|FILE", show_default=FROM_RECIPE,
              help="image folder, .npy/.npz (float arrays: already preprocessed), digits-train")
@click.option("--calib-count", type=int, default=None, show_default=f"{FROM_RECIPE}, 256", help="images to calibrate on")
@click.option("--calib-method", type=click.Choice(METHODS), default=None, show_default=f"{FROM_RECIPE}, entropy",
              help="calibrator")
@click.option("--calib-cache", default=None, type=click.Path(dir_okay=False),
              help="calibration cache: reused when it exists (without data), else written here")
@click.option("--accuracy-budget", type=float, default=None, metavar="POINTS",
              help="keep the most sensitive layers float until top-1 agreement loses at most this many points")
@click.option("--bias-correction/--no-bias-correction", default=None, show_default=f"{FROM_RECIPE}, on",
              help="fold the mean shift int8 rounding causes into float biases")
@click.option("--equalize/--no-equalize", default=None, show_default=f"{FROM_RECIPE}, on",
              help="rescale Conv channels to fill their shared int8 ranges first")
@click.option("--eval-data", default=None, metavar="DIR|FILE",
              show_default="the recipe's data.validation, else the calibration data (reported as in-sample)",
              help="held-out images for the FP32 comparison")
@click.option("--eval-images", type=click.IntRange(min=1), default=None, metavar="N",
              show_default="the recipe's data.max_images, else 128",
              help="compare on at most N of them (`validate` runs on all)")
@click.option("--for", "target", type=click.Choice(["tensorrt", "ort-cpu"]), default=None,
              show_default=f"{FROM_RECIPE}, tensorrt",
              help="INT8 graph for: tensorrt (symmetric int8, what build-engine takes) or ort-cpu (uint8, int32 "
                   "biases: ONNX Runtime CPU's fastest; TensorRT refuses it)")
@click.option("--allow-fewer", is_flag=True, help="calibrate on fewer images than asked when some are unreadable")
@preprocessing_options
@output_option("MODEL.int8.onnx / MODEL.fp16.onnx")
@common_options
def command(model, precision, recipe, calib_data, calib_count, calib_method, calib_cache, accuracy_budget,
            bias_correction, equalize, eval_data, eval_images, target, allow_fewer, preprocessing, output, json_path, quiet, verbose):
    """Make an INT8 or FP16 graph from an FP32 one and compare it with FP32 on the data at hand.

    A graph made elsewhere needs no recipe: its input and output names and size come from the
    graph, and with image data the preprocessing from --mean/--std (and --input-size, --resize,
    --channel-order); preprocessed .npy/.npz arrays need none."""
    from pathlib import Path

    from ..precision import quantize_onnx

    stem = Path(model).name.removesuffix(".onnx").removesuffix(".opt")
    output = artifact_path(output, f"{stem}.{precision}.onnx")
    result = quantize_onnx(model, output, recipe=recipe, precision=precision, calib_data=calib_data,
                           calib_count=calib_count, calib_method=calib_method, calib_cache=calib_cache,
                           accuracy_budget=accuracy_budget, progress=not quiet, allow_fewer=allow_fewer,
                           bias_correction=bias_correction, equalize=equalize, preprocessing=preprocessing,
                           eval_data=eval_data, eval_images=eval_images, target=target)
    for line in result.lines():
        echo(line)
    write_json(json_path, {
        "path": str(result.path), "precision": result.precision, "method": result.method,
        "calibration": result.calibration, "images": result.images,
        "cache": None if result.cache_path is None else str(result.cache_path),
        "quantized_layers": result.quantized_layers, "kept_float": [item.node for item in result.excluded],
        "kept_fp32": [item.node for item in result.kept_fp32], "lines": result.lines(),
    })
