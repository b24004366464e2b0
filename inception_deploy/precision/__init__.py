"""Precision (stage: quantize): FP32 ONNX -> MODEL.int8.onnx (explicit Q/DQ) or MODEL.fp16.onnx.

TensorRT 11 builds strongly typed networks only, so precision is decided here, in the
ONNX graph, and measured on ONNX Runtime CPU before any engine exists.

    quantize_onnx(input_path, output_path=None, recipe=None, precision="int8"|"fp16",
                  calib_data=None, calib_count=None, calib_method=None, calib_cache=None,
                  accuracy_budget=None, progress=True, bias_correction=True) -> QuantizeResult

INT8: one streamed calibration pass (calibrate.py) -> amax per tensor (or a cache,
cache.py) -> Q/DQ placed by TensorRT's rules (qdq.py) minus the exclusions (rules.py),
optionally fewer layers quantized to meet an accuracy budget (sensitivity.py), and each
quantized layer's float bias corrected for the mean shift its weight rounding causes
(qdq.bias_shifts, from the per-tensor mean maps of the same calibration pass). FP16:
fp16.py. Both are compared with the FP32 graph on the data at hand (evaluate.py) and carry
the manifest with this stage appended.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import UserError

log = logging.getLogger(__name__)

PRECISIONS = ("int8", "fp16")
EVAL_MAX_IMAGES = 1000
SENSITIVITY_IMAGES = 256


@dataclass
class QuantizeResult:
    path: Path
    precision: str
    cache_path: Optional[Path] = None
    tensorrt_cache_path: Optional[Path] = None
    method: Optional[str] = None
    calibration: str = ""  # how amax was obtained: calibrated / reused cache / committed cache
    images: int = 0
    excluded: list = field(default_factory=list)  # qdq.Exclusion (int8)
    kept_fp32: list = field(default_factory=list)  # fp16.KeptFp32 (fp16)
    quantized_layers: int = 0
    bias_corrected: list = field(default_factory=list)  # layers whose bias absorbs their weight-rounding shift
    sensitivity: object = None  # sensitivity.SensitivityReport
    evaluation: object = None  # evaluate.Evaluation
    notes: list[str] = field(default_factory=list)
    manifest: dict = field(default_factory=dict)
    model: object = field(default=None, repr=False)  # the graph, until it is written

    def lines(self) -> list[str]:
        label = self.precision.upper()
        lines = list(self.notes)
        if self.precision == "int8":
            lines.append(f"INT8: {self.quantized_layers} Conv/Gemm layers quantized, {len(self.excluded)} kept float, "
                         f"{len(self.bias_corrected)} bias-corrected; calibration: {self.calibration}")
            for item in self.excluded:
                lines.append(f"  kept float: {item.node} ({item.op_type}): {item.reason}")
        else:
            lines.append(f"FP16: {len(self.kept_fp32)} node(s) kept FP32")
            for item in self.kept_fp32:
                lines.append(f"  kept FP32: {item.node} ({item.op_type}): {item.reason}")
        if self.sensitivity is not None:
            lines += self.sensitivity.lines()
        if self.evaluation is not None:
            lines += self.evaluation.lines(label)
        lines.append(f"wrote {self.path}")
        if self.cache_path:
            lines.append(f"calibration cache {self.cache_path}" + (f" (TensorRT text: {self.tensorrt_cache_path})"
                                                                  if self.tensorrt_cache_path else ""))
        return lines


def default_output(input_path: Path, precision: str) -> Path:
    """MODEL(.opt).onnx -> MODEL.<precision>.onnx beside it."""
    stem = input_path.name.removesuffix(".onnx").removesuffix(".opt")
    return input_path.with_name(f"{stem}.{precision}.onnx")


def default_cache_path(output_path: Path) -> Path:
    stem = output_path.name.removesuffix(".onnx")
    for suffix in (".int8", ".fp16"):
        stem = stem.removesuffix(suffix)
    return output_path.with_name(f"{stem}.calib.json")


def _load_float_model(path: Path):
    import onnx

    if not path.is_file():
        raise UserError(f"{path}: no such ONNX file; pass the FP32 model from `inception-deploy export` or `optimize`")
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # protobuf's DecodeError and friends
        raise UserError(f"{path}: not a readable ONNX model ({type(exc).__name__})") from None
    ops = {n.op_type for n in model.graph.node}
    if ops & {"QuantizeLinear", "DequantizeLinear"}:
        raise UserError(f"{path}: the graph is already quantized (it has Q/DQ nodes); quantize the FP32 model")
    float16 = any(i.data_type == onnx.TensorProto.FLOAT16 for i in model.graph.initializer)
    if float16:
        raise UserError(f"{path}: the graph already holds FP16 weights; quantize the FP32 model")
    return model


def _resolve_recipe(recipe, manifest, path: Path):
    from ..manifest import recipe_for_artifact

    resolved = recipe_for_artifact(recipe, manifest, path)
    if resolved is None:
        raise UserError(f"{path} carries no recipe in its manifest; pass --recipe NAME|FILE")
    return resolved


def _eval_batches(recipe, calib_source: Optional[str]):
    """The data to compare on: the recipe's validation data, else the calibration data."""
    from ..data import choose_indices, open_dataset

    source = recipe.data.validation or calib_source
    if source is None:
        return None, None
    dataset = open_dataset(source, recipe.preprocessing)
    count = min(len(dataset), recipe.data.max_images or EVAL_MAX_IMAGES)
    indices = choose_indices(dataset, count, seed=0)
    return source, ((x, y) for x, y, _ in dataset.batches(recipe.preprocessing, 64, indices))


def _probe_inputs(recipe, source: str, count: int) -> np.ndarray:
    from ..data import choose_indices, open_dataset

    dataset = open_dataset(source, recipe.preprocessing)
    indices = choose_indices(dataset, min(count, len(dataset)), seed=recipe.calibration.seed + 1)
    return np.concatenate([x for x, _, _ in dataset.batches(recipe.preprocessing, 64, indices)])


def _save(model, path: Path, manifest: dict) -> None:
    import onnx

    from ..fileio import atomic_path
    from ..manifest import write_manifest

    write_manifest(model, manifest)
    with atomic_path(path) as tmp:
        onnx.save_model(model, str(tmp))
        onnx.checker.check_model(str(tmp))


def calibration_params(method: str, recipe, bias_correction: bool) -> dict:
    """The cache's `params`: the calibrator's, plus whether bias shifts were measured (a cache
    without them cannot serve a bias-corrected graph)."""
    from .calibrate import make_calibrator

    return {**make_calibrator(method, recipe.calibration.percentile).params(), "bias_correction": bool(bias_correction)}


def calibrate_model(model, recipe, source: str, count: Optional[int], method: str, progress: bool = True,
                    allow_fewer: bool = False, tensors: Optional[list[str]] = None,
                    bias_correction: bool = True) -> dict:
    """Stream `count` images of `source` once and return the cache dict (tensor -> amax, and
    with `bias_correction` layer -> bias shift of every Conv/Gemm that can be quantized)."""
    from .cache import make_cache
    from .calibrate import BATCH_BYTES_BUDGET, collect_statistics, make_calibrator, per_image_bytes, stream_calibration_batches
    from .qdq import bias_shifts, plan_quantization

    cfg = recipe.calibration
    calibrator = make_calibrator(method, cfg.percentile)
    full_plan = plan_quantization(model)  # no exclusions: the cache serves any rule set
    tensors = tensors if tensors is not None else list(full_plan.activations)
    nodes = {n.name: n for n in model.graph.node}
    means = {nodes[layer].input[0] for layer in full_plan.layers} & set(tensors) if bias_correction else set()
    per_image = max(per_image_bytes(model, tensors), 1)
    batch_size = max(1, min(cfg.batch_size, BATCH_BYTES_BUDGET // per_image))
    info, batches = stream_calibration_batches(recipe, source, count, batch_size, allow_fewer)
    stats = collect_statistics(model, tensors, batches, histogram=calibrator.needs_histogram,
                               bins=2 * cfg.bins, progress=progress, total=len(info.items), means=means)
    amax = {t: float(calibrator.amax(s)) for t, s in stats.items()}
    absmax = {t: s.absmax for t, s in stats.items()}
    params = calibration_params(method, recipe, bias_correction)
    cache = make_cache(model, recipe, method, params, amax, absmax, info)
    for name, s in stats.items():
        cache["tensors"][name]["min"] = s.min
    if bias_correction:
        shifts = bias_shifts(model, full_plan, {t: stats[t].mean_map for t in means})
        cache["bias_shift"] = {layer: [float(v) for v in shift] for layer, shift in sorted(shifts.items())}
    log.info("calibrated %d tensors on %d images of %s (%s)", len(tensors), info.used, source, method)
    return cache


def quantize_onnx(input_path, output_path=None, recipe=None, precision: str = "int8", calib_data=None,
                  calib_count: Optional[int] = None, calib_method: Optional[str] = None, calib_cache=None,
                  accuracy_budget: Optional[float] = None, progress: bool = True,
                  allow_fewer: bool = False, sensitivity_images: int = SENSITIVITY_IMAGES,
                  bias_correction: Optional[bool] = None) -> QuantizeResult:
    """FP32 ONNX -> INT8 (Q/DQ) or FP16 ONNX, compared with the FP32 graph on the data at hand.

    `bias_correction` (INT8; None: the recipe's precision.int8.bias_correction): subtract from
    each quantized layer's float bias the mean output shift its int8 weights cause on the
    calibration data (numbers in calibration/README.md)."""
    from ..manifest import add_stage, new_manifest, read_manifest
    from ..fileio import sha256_file, sha256_json

    if precision not in PRECISIONS:
        raise UserError(f"unknown precision '{precision}'; choose int8 or fp16")
    input_path = Path(input_path)
    model = _load_float_model(input_path)
    manifest = read_manifest(model)
    recipe = _resolve_recipe(recipe, manifest, input_path)
    output_path = Path(output_path) if output_path is not None else default_output(input_path, precision)
    if output_path.resolve() == input_path.resolve():
        raise UserError(f"output {output_path} would overwrite the input; choose another -o")
    if calib_count is not None and calib_count < 1:
        raise UserError(f"--calib-count must be at least 1, got {calib_count}")
    base = manifest or new_manifest("external", recipe, inputs={"model": str(input_path)})
    inputs = {"model": str(input_path), "model_sha256": sha256_file(input_path)}
    if bias_correction is None:
        bias_correction = recipe.precision.int8.bias_correction
    calib_source = str(calib_data) if calib_data is not None else recipe.calibration.data
    count = calib_count or recipe.calibration.count

    if precision == "fp16":
        result = _fp16(model, recipe, output_path, calib_source, count, progress, allow_fewer)
        details = {"precision": "fp16", "kept_fp32": [k.__dict__ for k in result.kept_fp32]}
    else:
        result, cache = _int8(model, recipe, output_path, calib_data, calib_source, count, calib_count,
                              calib_method, calib_cache, accuracy_budget, progress, allow_fewer,
                              sensitivity_images, bias_correction)
        inputs["calibration_cache_sha256"] = sha256_json(cache)
        details = {"precision": "int8", "calibration": {k: cache[k] for k in ("method", "params", "data")},
                   "excluded": [e.__dict__ for e in result.excluded],
                   "bias_corrected_layers": len(result.bias_corrected),
                   "accuracy_budget": result.sensitivity.summary() if result.sensitivity else None}
    source, batches = _eval_batches(recipe, calib_source)
    if batches is not None:
        from .evaluate import evaluate

        result.evaluation = evaluate(model, result.model, batches, source)
        details["comparison"] = result.evaluation.summary()
    result.manifest = add_stage(base, "quantize", inputs=inputs, **details)
    _save(result.model, output_path, result.manifest)
    result.model = None
    return result


def _fp16(model, recipe, output_path, calib_source, count, progress, allow_fewer) -> QuantizeResult:
    from .calibrate import collect_statistics, stream_calibration_batches
    from .fp16 import convert_fp16, float_tensors, fp16_rules

    cfg = recipe.precision.fp16
    absmax = None
    notes = []
    if calib_source is not None:
        tensors = float_tensors(model)
        info, batches = stream_calibration_batches(recipe, calib_source, count, recipe.calibration.batch_size,
                                                   allow_fewer)
        stats = collect_statistics(model, tensors, batches, histogram=False, progress=progress, total=len(info.items))
        absmax = {t: s.absmax for t, s in stats.items()}
        notes.append(f"FP16 ranges checked on {info.used} images of {calib_source}")
    else:
        notes.append("FP16 ranges not checked (no calibration data)")
    converted, kept = convert_fp16(model, fp16_rules(cfg.keep_fp32_ops, absmax, cfg.range_margin), cfg.keep_io_types)
    result = QuantizeResult(output_path, "fp16", kept_fp32=kept, notes=notes)
    result.model = converted
    return result


def _int8(model, recipe, output_path, calib_data, calib_source, count, calib_count, calib_method, calib_cache,
          accuracy_budget, progress, allow_fewer, sensitivity_images, bias_correction=True):
    from .cache import (amax_from_cache, bundled_cache, mismatch, read_cache, write_cache,
                        write_tensorrt_cache)
    from .calibrate import METHODS
    from .qdq import correct_bias, insert_qdq, plan_quantization
    from .rules import SmallGemm, rules_from_recipe

    if calib_method is not None and calib_method not in METHODS:
        raise UserError(f"unknown calibration method '{calib_method}'; choose one of {', '.join(METHODS)}")
    method = calib_method or recipe.calibration.method
    tensors = list(plan_quantization(model).activations)  # exclusion-independent, so caches are too
    cache, how, notes = None, "", []
    if calib_cache is not None and Path(calib_cache).exists() and calib_data is None:
        cache = read_cache(calib_cache)
        why = mismatch(cache, model, recipe, calib_method, tensors)
        if why is None and bias_correction and "bias_shift" not in cache:
            why = "it was made without bias correction (no bias shifts), which is on"
        if why:
            raise UserError(f"{calib_cache}: cannot reuse this calibration cache: {why}; "
                            "recalibrate with --calib-data (and a new --calib-cache path)")
        how = f"reused {calib_cache}"
    elif calib_cache is None and calib_data is None:
        candidates = []
        if recipe.calibration.cache:
            base = Path(recipe.source).parent if recipe.source and Path(recipe.source).exists() else Path.cwd()
            candidates.append(base / recipe.calibration.cache)
        bundled = bundled_cache(recipe.name)
        if bundled is not None:
            candidates.append(bundled)
        for path in candidates:
            if not path.is_file():
                continue
            stored = read_cache(path)
            why = mismatch(stored, model, recipe, method, tensors)
            wanted = calibration_params(method, recipe, bias_correction)
            if why is None and {"bias_correction": False, **stored.get("params", {})} != wanted:
                why = f"it was made with {method} parameters {stored.get('params')}, the recipe asks for {wanted}"
            if why is None and calib_count is not None and stored["data"]["images"] != calib_count:
                why = f"it was made on {stored['data']['images']} images, {calib_count} were asked for"
            if why is None:
                cache, how = stored, f"committed cache {path}"
                break
            notes.append(f"recalibrating: the calibration cache {path} does not match: {why}")
    if cache is None:
        if calib_source is None:
            raise UserError("no calibration data: pass --calib-data DIR|FILE.npz (or --calib-cache FILE), "
                            f"or set calibration.data in recipe '{recipe.name}'")
        cache = calibrate_model(model, recipe, calib_source, count, method, progress, allow_fewer, tensors,
                                bias_correction)
        how = f"{method} on {cache['data']['images']} images of {calib_source}"
    amax, absmax = amax_from_cache(cache)
    int8_cfg = recipe.precision.int8
    unsigned = None
    if int8_cfg.unsigned_activations:
        unsigned = {t for t, v in cache["tensors"].items() if v.get("min", -1.0) >= 0.0}
    # The recipe's rules first (their reasons win), then the TensorRT defaults.
    rules = [*rules_from_recipe(int8_cfg.exclude), SmallGemm.for_model(model)]
    budget = accuracy_budget if accuracy_budget is not None else int8_cfg.accuracy_budget
    report = None
    if budget is not None:
        from .sensitivity import fit_budget

        probe_source = calib_source or recipe.data.validation
        if probe_source is None:
            raise UserError("--accuracy-budget needs images to measure on: pass --calib-data or set "
                            f"data.validation in recipe '{recipe.name}'")
        inputs = _probe_inputs(recipe, probe_source, sensitivity_images)
        report, rules = fit_budget(model, rules, amax, inputs, budget, unsigned)
    plan = plan_quantization(model, rules)
    quantized = insert_qdq(model, plan, amax, unsigned)
    corrected = []
    if bias_correction:
        shifts = {layer: np.asarray(v, dtype=np.float32) for layer, v in cache.get("bias_shift", {}).items()}
        corrected = correct_bias(quantized, plan, shifts)
    cache_path = Path(calib_cache) if calib_cache is not None else default_cache_path(output_path)
    trt_path = cache_path.with_name(cache_path.name.removesuffix(".json") + ".trt.txt")
    if not how.startswith("reused"):  # a reused cache is already where the user keeps it
        write_cache(cache, cache_path)
    write_tensorrt_cache(cache, trt_path)
    result = QuantizeResult(output_path, "int8", cache_path=cache_path, tensorrt_cache_path=trt_path, method=cache["method"],
                            calibration=how, images=cache["data"]["images"], excluded=plan.excluded,
                            quantized_layers=len(plan.layers), sensitivity=report, notes=notes,
                            bias_corrected=corrected)
    result.model = quantized
    return result, cache
