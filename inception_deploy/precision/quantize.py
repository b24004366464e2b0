"""The quantize stage's entry (stage: quantize): FP32 ONNX in, INT8 (Q/DQ) or FP16 ONNX out.

Loads the artifact (artifact.load_onnx), resolves the recipe once and applies the user's
flags to it (Recipe.with_overrides), runs the precision's pipeline (int8.py, fp16.py),
compares the new graph with the FP32 one on the data at hand (evaluate.py) and writes it
with its manifest (artifact.save_onnx).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from ..errors import UserError
from .int8 import SENSITIVITY_IMAGES
from .result import QuantizeResult, default_output

PRECISIONS = ("int8", "fp16")
# The built-in comparison's image count: held-out data up to EVAL_MAX_IMAGES (eval_images, then
# the recipe's data.max_images, decide over it; `validate` runs on all); the calibration data
# itself (in-sample, a sanity check only) IN_SAMPLE_IMAGES and EVAL_BATCH_BYTES at most: each
# image goes through the FP32 graph and the exact Q/DQ mode (and the first ones through ORT's
# optimized mode too). On Inception v3 at 299 the 32 images of an old in-sample bound took
# 12.9 s of a 61 s quantize (64 images, a quiet machine); on the digits GoogLeNet (64
# calibration images, in-process) all 450 held-out images took 3.0 s, 256 of them 1.7-2.1 s,
# 128 of them 1.3-1.4 s. A quick check, not the gate: the largest error of a subset is a lower
# bound of the whole set's (64 calibration images: 0.252 on 128 and on 256, 1.178 on all 450;
# 256 of them: 0.151, 0.172, 0.172), which `validate` measures.
EVAL_MAX_IMAGES = 128
IN_SAMPLE_IMAGES = 32
EVAL_KEEP_BYTES = 64 << 20  # the comparison's preprocessed images are kept up to this size
# Input bytes of a comparison batch, and of the whole in-sample check: ORT's arena grows with
# the batch (Inception v3 at 299: 7 images).
EVAL_BATCH_BYTES = 8 << 20
# At most this many images a comparison batch. The Q/DQ graph's batches run two at a time
# (evaluate.py); on the digits GoogLeNet, 256 images, batches of 16 took the same time as 32
# (2.0-2.2 s) with 137-143 MB added to the peak RSS against 164-180. (When its two modes ran
# one after the other, 32 had been both faster and smaller than 64: 3.3 s and 380 MB against
# 4.2 s and 500 MB, on 450 images.)
EVAL_BATCH_MAX = 16
# The quantize flags, by the recipe key each one overrides.
FLAGS = {"calibration.data": "--calib-data", "calibration.count": "--calib-count",
         "calibration.method": "--calib-method", "precision.int8.accuracy_budget": "--accuracy-budget",
         "precision.int8.bias_correction": "--bias-correction", "precision.int8.equalize": "--equalize",
         "precision.int8.target": "--for"}


def quantize_onnx(input_path, output_path=None, recipe=None, precision: str = "int8", calib_data=None,
                  calib_count: Optional[int] = None, calib_method: Optional[str] = None, calib_cache=None,
                  accuracy_budget: Optional[float] = None, progress: bool = True,
                  allow_fewer: bool = False, sensitivity_images: int = SENSITIVITY_IMAGES,
                  bias_correction: Optional[bool] = None, equalize: Optional[bool] = None,
                  preprocessing: Optional[dict] = None, eval_data=None,
                  target: Optional[str] = None, eval_images: Optional[int] = None) -> QuantizeResult:
    """FP32 ONNX -> INT8 (Q/DQ) or FP16 ONNX, compared with the FP32 graph on the data at hand.

    recipe: a Recipe, a bundled name or a YAML path; None: the one the input's manifest names.
    The calib_*, accuracy_budget, bias_correction and equalize arguments override the recipe's
    calibration and precision.int8 keys (None: the recipe's value). `bias_correction`: subtract
    from each Conv/Gemm's float bias the mean output shift int8 rounding causes on the
    calibration images, measured depth by depth (bias.py; numbers in calibration/README.md).
    `equalize`: rescale Conv output channels so each fills more of its tensor's shared int8
    range (equalize.py). `target`: the runtime the INT8 graph is for, tensorrt or ort-cpu
    (precision.int8.target; targets.py). calib_cache: reused when it exists and no calib_data is given, else
    written there. preprocessing: recipe keys the preprocessing flags set
    (graph_recipe.preprocessing_overrides); for a graph with no recipe they and the graph make one.
    eval_data: the held-out images of the built-in comparison (default: the recipe's
    data.validation, else the calibration data, said to be in-sample); eval_images: at most that
    many of them (default: the recipe's data.max_images, else EVAL_MAX_IMAGES)."""
    from ..artifact import load_onnx, save_onnx
    from ..graph_recipe import recipe_for_graph

    if precision not in PRECISIONS:
        raise UserError(f"unknown precision '{precision}'; choose int8 or fp16")
    input_path = Path(input_path)
    artifact = load_onnx(input_path, missing="{path}: no such ONNX file; pass the FP32 model from "
                                             "`inception-deploy export` or `optimize`", require_float=True)
    # A graph made elsewhere needs no recipe: what it says, plus the preprocessing flags.
    recipe = recipe_for_graph(recipe, artifact.model, artifact.manifest, input_path, [calib_data], preprocessing)
    recipe = recipe.with_overrides({
        "calibration.data": None if calib_data is None else str(calib_data), "calibration.count": calib_count,
        "calibration.method": calib_method, "precision.int8.accuracy_budget": accuracy_budget,
        "precision.int8.bias_correction": bias_correction, "precision.int8.equalize": equalize,
        "precision.int8.target": target}, FLAGS)
    output_path = Path(output_path) if output_path is not None else default_output(input_path, precision)
    if output_path.resolve() == input_path.resolve():
        raise UserError(f"output {output_path} would overwrite the input; choose another -o")
    writes = []  # calibration caches: written only beside a written graph
    if precision == "fp16":
        result, inputs = _fp16(artifact.model, recipe, output_path, allow_fewer, progress), {}
        details = {"kept_fp32": [k.__dict__ for k in result.kept_fp32]}
    else:
        result, details, inputs, writes = _int8(artifact, recipe, output_path, calib_cache, allow_fewer,
                                                progress, sensitivity_images)
    _evaluate(result, input_path, recipe, eval_data, eval_images)  # the FP32 reference: the input file
    if result.evaluation is not None:
        details["comparison"] = result.evaluation.summary()
    result.manifest = _manifest(artifact, recipe, precision, inputs, details)
    _check_finite_weights(result.model, output_path)
    save_onnx(result.model, output_path, result.manifest, what=f"the {precision.upper()} graph")
    _write_beside(output_path, writes)
    result.model = None
    return result


def _check_finite_weights(model, output_path: Path) -> None:
    """The last boundary before writing: every scale and weight of the new graph is finite."""
    import numpy as np
    from onnx import numpy_helper

    from ..finite import describe, first_non_finite

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


def _fp16(model, recipe, output_path: Path, allow_fewer: bool, progress: bool) -> QuantizeResult:
    from .calibration_set import CalibrationSet
    from .fp16 import to_fp16

    source = recipe.calibration.data
    images = None if source is None else CalibrationSet(recipe, source, recipe.calibration.count, allow_fewer)
    graph = to_fp16(model, recipe, images, progress)
    result = QuantizeResult(output_path, "fp16", kept_fp32=graph.kept_fp32, notes=graph.notes)
    result.model = graph.model
    return result


def _int8(artifact, recipe, output_path: Path, calib_cache, allow_fewer: bool, progress: bool,
          sensitivity_images: int) -> tuple[QuantizeResult, dict, dict, list]:
    from ..fileio import sha256_json
    from .int8 import quantize_int8
    from .targets import MANIFEST_KEY

    # The job owns the input graph (no frame here keeps it): it lets it go once equalized.
    job = quantize_int8(artifact.release_model(), recipe, output_path, calib_cache, allow_fewer, progress,
                        sensitivity_images)
    cache = job.cache
    result = QuantizeResult(output_path, "int8", cache_path=job.cache_path, tensorrt_cache_path=job.tensorrt_cache_path,
                            method=cache.method, calibration=job.describe(), provenance=job.provenance,
                            images=cache.images, excluded=job.plan.excluded, quantized_layers=len(job.plan.layers),
                            sensitivity=job.sensitivity, notes=job.notes, bias_corrected=job.corrected,
                            equalized=job.equalized)
    result.model = job.quantized
    details = {"calibration": {"method": cache.method, "params": cache.params, "data": cache.data},
               "excluded": [e.__dict__ for e in job.plan.excluded], "bias_corrected_layers": len(job.corrected),
               "equalized_layers": job.equalized, MANIFEST_KEY: job.target.name,
               "accuracy_budget": job.sensitivity.summary() if job.sensitivity else None}
    return result, details, {"calibration_cache_sha256": sha256_json(cache.to_json())}, job.writes


def _evaluate(result: QuantizeResult, model, recipe, eval_data=None, eval_images: Optional[int] = None) -> None:
    """The FP32 graph (`model`: its file or proto) against the new one on `eval_data`, else the
    recipe's validation data, else the calibration data (marked in-sample, and on fewer images)."""
    from ..data import choose_indices, open_dataset
    from .evaluate import evaluate

    source = eval_data or recipe.data.validation or recipe.calibration.data
    if source is None:
        return
    source = str(source)
    in_sample = source == str(recipe.calibration.data)
    dataset = open_dataset(source, recipe.preprocessing)
    height, width = recipe.input_hw
    fit = max(1, EVAL_BATCH_BYTES // (3 * 4 * height * width))  # images in EVAL_BATCH_BYTES of input
    batch = min(EVAL_BATCH_MAX, fit)
    limit = min(IN_SAMPLE_IMAGES, fit) if in_sample else EVAL_MAX_IMAGES
    count = min(len(dataset), eval_images or recipe.data.max_images or limit)
    indices = choose_indices(dataset, count, seed=0)

    def batches():  # read once per session (evaluate runs them one after another)
        return ((x, y) for x, y, _ in dataset.batches(recipe.preprocessing, batch, indices))

    # Read and preprocessed once when they are small (450 digits: 22 MB, 0.2 s a reading).
    kept = batches if count * 3 * 4 * height * width > EVAL_KEEP_BYTES else list(batches())
    result.evaluation = evaluate(model, result.model, kept, source, in_sample=in_sample)


def _manifest(artifact, recipe, precision: str, inputs: dict, details: dict) -> dict:
    """The input's manifest (or a new one for a graph made elsewhere) with this stage appended,
    recording the settings actually used (the recipe's sections after the user's flags)."""
    from ..fileio import sha256_file
    from ..manifest import add_stage, new_manifest

    path = artifact.path
    base = artifact.manifest or new_manifest("external", recipe, inputs={"model": str(path)})
    settings = {"calibration": recipe.calibration.model_dump(mode="json"),
                precision: getattr(recipe.precision, precision).model_dump(mode="json")}
    return add_stage(base, "quantize", inputs={"model": str(path), "model_sha256": sha256_file(path), **inputs},
                     precision=precision, **details, settings=settings, recipe_overrides=dict(recipe.overrides))
