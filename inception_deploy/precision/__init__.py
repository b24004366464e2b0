"""Precision (stage: quantize): FP32 ONNX -> MODEL.int8.onnx (explicit Q/DQ) or MODEL.fp16.onnx.

TensorRT 11 builds strongly typed networks only, so precision is decided here, in the
ONNX graph, and measured on ONNX Runtime CPU before any engine exists.

    quantize_onnx(input_path, output_path=None, recipe=None, precision="int8"|"fp16", ...) -> QuantizeResult

Where things are:
    quantize.py          the stage's entry: load, resolve the recipe, run a pipeline, compare, save
    int8.py              INT8 as named steps: find_cache, equalize, calibrate, choose_rules,
                         fit_budget, insert, bias_correct, write_cache
    fp16.py              FP16 (onnxconverter-common, FP32 kept where rules say)
    calibration_set.py   the calibration images: chosen and preprocessed once, streamed to every step
    collect.py           one streamed ORT pass -> per-tensor statistics (statistics.py) -> cache
    calibrators/         max, percentile, entropy, mse: a registry by method name
    cache.py             CalibrationCache (JSON), Provenance, TensorRT's text cache
    placement.py         where Q/DQ go (TensorRT's rules); insert.py writes them
    rules.py             exclusion rules (recipe, small Gemm, accuracy budget, FP16 ranges)
    equalize.py, bias.py, sensitivity.py, evaluate.py   the INT8 refinements and the self-check
"""

from __future__ import annotations

from .quantize import PRECISIONS, quantize_onnx
from .result import QuantizeResult, default_cache_path, default_output


def calibrate_model(model, recipe, source: str, count=None, method: str = "entropy", progress: bool = True,
                    allow_fewer: bool = False, tensors=None):
    """Stream `count` images of `source` once through `model` and return its CalibrationCache
    (every tensor the default Q/DQ placement reads, unless `tensors` names them)."""
    from .calibration_set import CalibrationSet
    from .collect import calibrate
    from .placement import plan_quantization

    tensors = tensors if tensors is not None else list(plan_quantization(model).activations)
    with CalibrationSet(recipe, source, count, allow_fewer) as images:
        return calibrate(model, recipe, images, method, tensors, progress)


__all__ = ["PRECISIONS", "QuantizeResult", "calibrate_model", "default_cache_path", "default_output", "quantize_onnx"]
