"""Precision (stage: quantize): FP32 ONNX -> MODEL.int8.onnx (explicit Q/DQ) or MODEL.fp16.onnx.

TensorRT 11 builds strongly typed networks only, so precision is decided here, in the
ONNX graph, and measured on ONNX Runtime CPU before any engine exists.

    quantize_onnx(input_path, output_path=None, recipe=None, precision="int8"|"fp16",
                  calib_data=None, calib_count=None, calib_method=None, calib_cache=None,
                  accuracy_budget=None, progress=True, bias_correction=True) -> QuantizeResult

INT8: one streamed calibration pass (calibrate.py) -> amax per tensor (or a cache,
cache.py) -> Q/DQ placed by TensorRT's rules (qdq.py) minus the exclusions (rules.py),
optionally fewer layers quantized to meet an accuracy budget (sensitivity.py), and each
Conv/Gemm's float bias corrected, depth by depth, for the mean output shift int8 rounding
causes on the calibration images (bias.py; the corrections are kept in the cache). FP16:
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
    bias_corrected: list = field(default_factory=list)  # layers whose bias absorbs the int8 mean shift
    equalized: int = 0  # Conv layers whose output channels were rescaled (equalize.py)
    sensitivity: object = None  # sensitivity.SensitivityReport
    evaluation: object = None  # evaluate.Evaluation
    notes: list[str] = field(default_factory=list)
    manifest: dict = field(default_factory=dict)
    model: object = field(default=None, repr=False)  # the graph, until it is written
    pending_writes: list = field(default_factory=list, repr=False)  # caches, written only beside a written graph

    def lines(self) -> list[str]:
        label = self.precision.upper()
        lines = list(self.notes)
        if self.precision == "int8":
            lines.append(f"INT8: {self.quantized_layers} Conv/Gemm layers quantized, {len(self.excluded)} kept float, "
                         f"{self.equalized} equalized, {len(self.bias_corrected)} bias-corrected; "
                         f"calibration: {self.calibration}")
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
            lines.append(f"calibration cache {self.cache_path}" + (
                f" (TensorRT text: {self.tensorrt_cache_path})" if self.tensorrt_cache_path else
                " (no TensorRT text cache: its scales are the equalized graph's; --no-equalize makes one for "
                "implicit INT8 on TensorRT <= 10)" if self.equalized else ""))
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


def calibration_params(method: str, recipe) -> dict:
    """The cache's `params`: the calibrator's."""
    from .calibrate import make_calibrator

    return make_calibrator(method, recipe.calibration.percentile).params()


def calibrate_model(model, recipe, source: str, count: Optional[int], method: str, progress: bool = True,
                    allow_fewer: bool = False, tensors: Optional[list[str]] = None) -> dict:
    """Stream `count` images of `source` once and return the cache dict (tensor -> amax)."""
    from .cache import make_cache
    from .calibrate import BATCH_BYTES_BUDGET, collect_statistics, make_calibrator, per_image_bytes, stream_calibration_batches
    from .qdq import plan_quantization

    cfg = recipe.calibration
    calibrator = make_calibrator(method, cfg.percentile)
    tensors = tensors if tensors is not None else list(plan_quantization(model).activations)  # no exclusions: the cache serves any rule set
    per_image = max(per_image_bytes(model, tensors), 1)
    batch_size = max(1, min(cfg.batch_size, BATCH_BYTES_BUDGET // per_image))
    info, batches = stream_calibration_batches(recipe, source, count, batch_size, allow_fewer)
    stats = collect_statistics(model, tensors, batches, histogram=calibrator.needs_histogram,
                               bins=2 * cfg.bins, progress=progress, total=len(info.items))
    amax = {t: float(calibrator.amax(s)) for t, s in stats.items()}
    absmax = {t: s.absmax for t, s in stats.items()}
    cache = make_cache(model, recipe, method, calibration_params(method, recipe), amax, absmax, info)
    for name, s in stats.items():
        cache["tensors"][name]["min"] = s.min
    log.info("calibrated %d tensors on %d images of %s (%s)", len(tensors), info.used, source, method)
    return cache


def quantize_onnx(input_path, output_path=None, recipe=None, precision: str = "int8", calib_data=None,
                  calib_count: Optional[int] = None, calib_method: Optional[str] = None, calib_cache=None,
                  accuracy_budget: Optional[float] = None, progress: bool = True,
                  allow_fewer: bool = False, sensitivity_images: int = SENSITIVITY_IMAGES,
                  bias_correction: Optional[bool] = None, equalize: Optional[bool] = None) -> QuantizeResult:
    """FP32 ONNX -> INT8 (Q/DQ) or FP16 ONNX, compared with the FP32 graph on the data at hand.

    `bias_correction` (INT8; None: the recipe's precision.int8.bias_correction): subtract from
    each Conv/Gemm's float bias the mean output shift int8 rounding causes on the calibration
    images, measured depth by depth (bias.py; numbers in calibration/README.md).
    `equalize` (INT8; None: the recipe's precision.int8.equalize): rescale Conv output
    channels so each fills more of its tensor's shared int8 range (equalize.py)."""
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
    if equalize is None:
        equalize = recipe.precision.int8.equalize
    calib_source = str(calib_data) if calib_data is not None else recipe.calibration.data
    count = calib_count or recipe.calibration.count

    if precision == "fp16":
        result = _fp16(model, recipe, output_path, calib_source, count, progress, allow_fewer)
        details = {"precision": "fp16", "kept_fp32": [k.__dict__ for k in result.kept_fp32]}
    else:
        result, cache = _int8(model, recipe, output_path, calib_data, calib_source, count, calib_count,
                              calib_method, calib_cache, accuracy_budget, progress, allow_fewer,
                              sensitivity_images, bias_correction, equalize)
        inputs["calibration_cache_sha256"] = sha256_json(cache)
        details = {"precision": "int8", "calibration": {k: cache[k] for k in ("method", "params", "data")},
                   "excluded": [e.__dict__ for e in result.excluded],
                   "bias_corrected_layers": len(result.bias_corrected), "equalized_layers": result.equalized,
                   "accuracy_budget": result.sensitivity.summary() if result.sensitivity else None}
    source, batches = _eval_batches(recipe, calib_source)
    if batches is not None:
        from .evaluate import evaluate

        result.evaluation = evaluate(model, result.model, batches, source)
        details["comparison"] = result.evaluation.summary()
    result.manifest = add_stage(base, "quantize", inputs=inputs, **details)
    _check_finite_weights(result.model, output_path)
    _save(result.model, output_path, result.manifest)
    _write_beside(output_path, result.pending_writes)
    result.model, result.pending_writes = None, []
    return result


def _check_finite_weights(model, output_path: Path) -> None:
    """The last boundary before writing: every scale and weight of the new graph is finite."""
    from ..finite import describe, first_non_finite
    from onnx import numpy_helper

    for init in model.graph.initializer:
        if init.data_type in (1, 10, 11, 16):  # float, float16, double, bfloat16
            found = first_non_finite(numpy_helper.to_array(init).astype(np.float32))
            if found is not None:
                raise UserError(f"{output_path}: not written: its initializer '{init.name}' would hold "
                                f"{describe(found)}; the calibration statistics or weights are not finite: "
                                "recalibrate on finite data")


def _write_beside(graph_path: Path, writes) -> None:
    """Calibration caches appear only with their graph: none is written before the graph is,
    and a failure while writing them takes the graph back."""
    try:
        for write in writes:
            write()
    except BaseException:
        graph_path.unlink(missing_ok=True)
        raise


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
          accuracy_budget, progress, allow_fewer, sensitivity_images, bias_correction=True, equalize=True):
    from .cache import (amax_from_cache, bundled_cache, graph_sha256, mismatch, read_cache, write_cache,
                        write_tensorrt_cache)
    from .equalize import apply_equalization, equalization_scales
    from .calibrate import METHODS
    from .qdq import correct_bias, insert_qdq, plan_quantization
    from .rules import SmallGemm, rules_from_recipe

    if calib_method is not None and calib_method not in METHODS:
        raise UserError(f"unknown calibration method '{calib_method}'; choose one of {', '.join(METHODS)}")
    method = calib_method or recipe.calibration.method
    tensors = list(plan_quantization(model).activations)  # exclusion-independent, so caches are too
    int8_cfg = recipe.precision.int8
    eq_params = {"strength": int8_cfg.equalize_strength, "max_scale": int8_cfg.equalize_max_scale} if equalize else None
    images = _CalibrationImages(recipe, calib_source, allow_fewer)
    cache, how, notes, equalized = None, "", [], None
    if calib_cache is not None and Path(calib_cache).exists() and calib_data is None:
        cache = read_cache(calib_cache)
        why = mismatch(cache, model, recipe, calib_method, tensors) or _equalization_mismatch(cache, eq_params)
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
            why = mismatch(stored, model, recipe, method, tensors) or _equalization_mismatch(stored, eq_params)
            wanted = calibration_params(method, recipe)
            if why is None and stored.get("params") != wanted:
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
        scales = None
        if eq_params:
            scales = equalization_scales(model, images.batches(count), **eq_params)
        equalized = apply_equalization(model, scales) if scales else None
        cache = calibrate_model(equalized or model, recipe, calib_source, count, method, progress, allow_fewer,
                                tensors)
        cache["model_sha256"] = graph_sha256(model)  # it serves the input graph: the scales are stored with it
        if scales is not None:
            cache["equalization"] = {"params": eq_params,
                                     "scales": {k: [float(v) for v in s] for k, s in sorted(scales.items())}}
        how = f"{method} on {cache['data']['images']} images of {calib_source}"
    amax, absmax = amax_from_cache(cache, str(calib_source or calib_cache or "calibration"))
    stored_scales = (cache.get("equalization") or {}).get("scales") if eq_params else None
    if stored_scales:
        # The same FP32 function with rescaled channels; the cache's amax were measured on it
        # (just made above when calibrating now, else rebuilt from the cache's scales).
        model = equalized or apply_equalization(
            model, {k: np.asarray(v, dtype=np.float32) for k, v in stored_scales.items()})
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
        shifts, measured = _bias_corrections(model, quantized, plan, amax, unsigned, cache, images, progress)
        if measured:
            notes.append(f"bias correction measured on {cache['bias_correction']['images']} images of "
                         f"{calib_source} ({len(shifts)} layers)")
            if how.startswith("committed") or how.startswith("reused"):
                how += " + bias corrections measured now"
        corrected = correct_bias(quantized, shifts)
    cache_path = Path(calib_cache) if calib_cache is not None else default_cache_path(output_path)
    trt_path = cache_path.with_name(cache_path.name.removesuffix(".json") + ".trt.txt")
    writes = []  # done by quantize_onnx once the graph is written (_write_beside)
    if not how.startswith("reused") or how.endswith("measured now"):  # a reused cache is already where the user keeps it
        writes.append(lambda: write_cache(cache, cache_path))
    if stored_scales:
        # Its amax belong to the equalized graph, which only lives inside the Q/DQ graph; an
        # implicit-INT8 (TensorRT <= 10) build of the FP32 file would get wrong scales.
        trt_path = None
    else:
        writes.append(lambda: write_tensorrt_cache(cache, trt_path))
    result = QuantizeResult(output_path, "int8", cache_path=cache_path, tensorrt_cache_path=trt_path, method=cache["method"],
                            calibration=how, images=cache["data"]["images"], excluded=plan.excluded,
                            quantized_layers=len(plan.layers), sensitivity=report, notes=notes,
                            bias_corrected=corrected, equalized=len(stored_scales or {}))
    result.model, result.pending_writes = quantized, writes
    return result, cache


class _CalibrationImages:
    """The calibration images for equalization (one streamed pass) and bias correction (one
    pass per depth over a bounded number of images, kept in memory)."""

    def __init__(self, recipe, source, allow_fewer: bool):
        self.recipe, self.source, self.allow_fewer = recipe, source, allow_fewer

    def batches(self, count):
        """Streamed: the same source, count and seed as the calibration pass, so the same images."""
        from .calibrate import stream_calibration_batches

        if self.source is None:
            raise UserError("this needs the calibration images: pass --calib-data DIR|FILE.npz, or set "
                            f"calibration.data in recipe '{self.recipe.name}'")
        return stream_calibration_batches(self.recipe, self.source, count, self.recipe.calibration.batch_size,
                                          self.allow_fewer)[1]

    def get(self, count) -> np.ndarray:
        """In memory, for the passes that go over the images many times (bias correction:
        precision.int8.bias_correction_images bounds the count)."""
        return np.concatenate(list(self.batches(count)))


def _equalization_mismatch(cache: dict, params) -> Optional[str]:
    stored = (cache.get("equalization") or {}).get("params")
    if stored == params:
        return None
    if params is None:
        return "it was made for an equalized graph, and equalization is off"
    if stored is None:
        return "it was made without equalization, which is on"
    return f"it was made with equalization {stored}, the recipe asks for {params}"


def _bias_corrections(model, quantized, plan, amax, unsigned, cache, images, progress) -> tuple[dict, bool]:
    """The cache's bias corrections when they were measured for this plan (same int8 layers,
    unsigned tensors and scales), else measured now on the calibration images and stored in
    `cache`. Returns (layer -> shift, whether they were measured now)."""
    from .bias import bias_key, measure_bias_corrections

    key = bias_key(plan.layers, [e.node for e in plan.excluded], unsigned, amax)
    stored = cache.get("bias_correction")
    if isinstance(stored, dict) and stored.get("key") == key:
        return {layer: np.asarray(v, dtype=np.float32) for layer, v in stored["shifts"].items()}, False
    if images.source is None:
        raise UserError("bias correction needs the calibration images: the calibration cache holds corrections for "
                        "another set of int8 layers or scales; pass --calib-data, or --no-bias-correction")
    # A class-balanced choice from the calibration source, by the calibration seed (the same
    # images as calibration when the counts are equal).
    inputs = images.get(min(cache["data"]["images"], images.recipe.precision.int8.bias_correction_images))
    shifts = measure_bias_corrections(model, quantized, inputs, progress)
    cache["bias_correction"] = {"key": key, "images": len(inputs), "source": str(images.source),
                                "shifts": {layer: [float(v) for v in shift] for layer, shift in sorted(shifts.items())}}
    return shifts, True
