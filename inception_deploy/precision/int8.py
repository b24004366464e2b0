"""INT8 (stage: quantize --int8): a pipeline of named steps over one Int8Job.

    find_cache -> equalize -> calibrate -> choose_rules -> fit_budget -> insert -> bias_correct -> finish_target
    -> write_cache

Each step reads and fills the job and returns at once when it has nothing to do. The
calibration images are one CalibrationSet, opened when a step first needs them and read
back from its spill file by the steps after. A new step: `def step(job: Int8Job) -> None`, in STEPS.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ..errors import UserError
from .cache import BiasCorrections, CalibrationCache, Equalization, Provenance, committed_caches

SENSITIVITY_IMAGES = 256
NO_DATA = ("no calibration data: pass --calib-data DIR|FILE.npz (or --calib-cache FILE), "
           "or set calibration.data in recipe '{recipe}'")


@dataclass
class Int8Job:
    model: object  # the FP32 input graph (onnx.ModelProto); let go once its equalized twin is made
    recipe: object  # resolved, with the user's flags applied (Recipe.with_overrides)
    output_path: Path
    calib_cache: Optional[Path] = None  # --calib-cache: reused when it exists (without data), else written
    allow_fewer: bool = False
    progress: bool = True
    sensitivity_images: int = SENSITIVITY_IMAGES
    tensors: list[str] = field(default_factory=list)  # activations to calibrate, whatever the exclusions
    cache: Optional[CalibrationCache] = None
    provenance: Optional[Provenance] = None
    cache_source: Optional[Path] = None  # the file a reused or committed cache came from
    notes: list[str] = field(default_factory=list)
    graph: object = None  # the FP32 graph the Q/DQ go into: the input, or its equalized twin
    scales: Optional[dict] = None  # equalization scales measured now
    equalized: int = 0  # Conv layers rescaled
    equalize_images: Optional[int] = None  # the images the scales measured now came from
    input_means: object = None  # collect.InputMeans: layer-input means gathered while calibrating
    pass_session: object = None  # the input graph's session, shared by equalization's pass and calibration's
    pass_scales: Optional[dict] = None  # tensor -> channel factors turning its values into the equalized graph's
    pass_batch: int = 0  # images a run of pass_session
    recorded: object = None  # recorded.RecordedOutputs: equalization's outputs, read back by calibration
    rules: list = field(default_factory=list)
    sensitivity: object = None  # sensitivity.SensitivityReport
    plan: object = None  # placement.QuantPlan
    quantized: object = None  # the Q/DQ graph
    corrected: list[str] = field(default_factory=list)
    bias_measured: bool = False
    cache_path: Optional[Path] = None  # where the cache is written (or lives, when reused)
    tensorrt_cache_path: Optional[Path] = None
    writes: list = field(default_factory=list)  # the cache files, written only once the graph is
    _images: object = None  # the CalibrationSet, opened by images()
    model_sha256: str = ""  # the input graph's (cache.graph_sha256): what a cache made now serves

    def close_recorded(self) -> None:
        if self.recorded is not None:
            self.recorded.close()
            self.recorded = None

    def explicit(self, key: str) -> bool:
        """Whether the user set this recipe key by a flag (it then decides over stored caches)."""
        return key in self.recipe.overrides

    @property
    def int8(self):
        return self.recipe.precision.int8

    @property
    def equalization(self) -> Optional[dict]:
        """The equalization parameters in force, None when equalization is off."""
        if not self.int8.equalize:
            return None
        return {"strength": self.int8.equalize_strength, "max_scale": self.int8.equalize_max_scale}

    @property
    def unsigned(self) -> Optional[set]:  # tensors quantized as uint8 (an ORT-only option)
        return self.cache.unsigned_tensors() if self.int8.unsigned_activations else None

    @property
    def target(self):  # the runtime the graph is typed for (targets.py)
        from .targets import make_target

        return make_target(self.int8.target, self.int8.unsigned_activations)

    def images(self, why: str):
        """The calibration images (a CalibrationSet), or a UserError saying `why` they are needed."""
        from .calibration_set import CalibrationSet

        if self._images is None:
            source = self.recipe.calibration.data
            if source is None:
                raise UserError(why)
            keep = self.int8.equalize or self.int8.bias_correction  # read more than once: spill them
            self._images = CalibrationSet(self.recipe, source, self.recipe.calibration.count, self.allow_fewer, keep)
        return self._images

    def describe(self) -> str:
        """How the amax were obtained, in words."""
        if self.provenance is Provenance.CALIBRATED:
            return f"{self.recipe.calibration.method} on {self.cache.images} images of {self.recipe.calibration.data}"
        where = f"reused {self.cache_source}" if self.provenance is Provenance.REUSED else \
            f"committed cache {self.cache_source}"
        return where + (" + bias corrections measured now" if self.bias_measured else "")


def find_cache(job: Int8Job) -> None:
    """Without new data: reuse the user's --calib-cache (refused, saying why, when it does not
    fit), or else the first committed cache that fits (said so when one does not)."""
    from .calibrators import make_calibrator

    if job.explicit("calibration.data"):
        return
    method = job.recipe.calibration.method
    if job.calib_cache is not None:
        if job.calib_cache.exists():
            cache = CalibrationCache.load(job.calib_cache)
            asked = method if job.explicit("calibration.method") else None
            why = cache.mismatch(job.model, job.recipe, asked, job.tensors, job.equalization)
            if why:
                raise UserError(f"{job.calib_cache}: cannot reuse this calibration cache: {why}; "
                                "recalibrate with --calib-data (and a new --calib-cache path)")
            job.cache, job.provenance, job.cache_source = cache, Provenance.REUSED, job.calib_cache
        return
    # A committed cache must also have the recipe's calibrator parameters (and the count, when asked).
    params = make_calibrator(method, job.recipe.calibration).params()
    count = job.recipe.calibration.count if job.explicit("calibration.count") else None
    for path in committed_caches(job.recipe):
        if not path.is_file():
            continue
        stored = CalibrationCache.load(path)
        why = stored.mismatch(job.model, job.recipe, method, job.tensors, job.equalization, params, count)
        if why is None:
            job.cache, job.provenance, job.cache_source = stored, Provenance.COMMITTED, path
            return
        job.notes.append(f"recalibrating: the calibration cache {path} does not match: {why}")


def equalize(job: Int8Job) -> None:
    """With equalization on: the input graph with its Conv channels rescaled, by the cache's
    scales, or by scales measured now on the calibration images (one streamed pass)."""
    from ..backends.onnxruntime_backend import create_session
    from ..cpu import cores
    from .bias import layer_inputs
    from .collect import calibration_batch_size, fetched_outputs
    from .equalize import apply_equalization, equalization_scales, measured_tensors, tensor_scales
    from .image_counts import images_for_channel_statistics
    from .recorded import RecordedOutputs

    job.graph = job.model
    params = job.equalization
    if params is None:
        return
    if job.cache is None:
        images = job.images(NO_DATA.format(recipe=job.recipe.name))
        # One session of the input graph serves this pass and calibration's (which scales the
        # values it reads: equalize.tensor_scales): it returns what both read. Making a second
        # session of the equalized graph cost 0.75 s on Inception v3 (95 MB to serialize and
        # load). Batches capped by the bytes returned (at 299, batches of 32 held 4 GB).
        returned = list(dict.fromkeys(measured_tensors(job.model) + job.tensors +
                                      (list(layer_inputs(job.model).values()) if job.int8.bias_correction else [])))
        inputs = {i.name for i in job.model.graph.input}
        returned = [t for t in returned if t not in inputs]
        job.pass_batch = batch = calibration_batch_size(job.model, returned, job.recipe.calibration.batch_size)
        job.pass_session = create_session(job.model, threads=cores(), spinning=False, extra_outputs=returned)
        job.equalize_images = count = images_for_channel_statistics(job.model, len(images.info.items),
                                                                    job.int8.equalize_images)
        if count < len(images.info.items):
            # A scale needs each channel's |x| max only roughly (it is a square root, clipped,
            # and the calibration after it measures the ranges the scales make): the first
            # images of the choice do, at a fraction of a pass (calibration/README.md).
            chosen, rows = images.rows(count)
            batches = (chosen[start:start + batch] for start in range(0, len(chosen), batch))
            batch_rows = lambda k: rows[k * batch:(k + 1) * batch]  # noqa: E731
        else:
            batches = images.batches(batch)
            batch_rows = lambda k: images.batch_indices[k]  # noqa: E731
        # What calibration fetches, kept for it: it reads these batches back instead of running them.
        job.recorded = RecordedOutputs()
        averaged = list(layer_inputs(job.model).values()) if job.int8.bias_correction else []
        fetched = [t for t in fetched_outputs(job.model, job.tensors, averaged) if t not in inputs]
        record = (fetched, lambda k, arrays: job.recorded.put(batch_rows(k), arrays))
        job.scales = equalization_scales(job.model, batches, **params, session=job.pass_session, record=record)
        job.pass_scales = tensor_scales(job.model, job.scales)
        scales = job.scales
    else:  # the amax were measured on the graph these scales make
        scales = job.cache.equalization.arrays() if job.cache.equalization is not None else {}
    if scales:
        job.graph, job.equalized = apply_equalization(job.model, scales), len(scales)
        # Nothing after this step reads the input graph: its 95 MB (Inception v3) go now, the
        # cache names it by job.model_sha256 and the comparison reads the file.
        job.model = None


def calibrate(job: Int8Job) -> None:
    """Without a cache: stream the calibration images once through the graph and make one. It
    serves the input graph; the equalization scales it was measured with are stored in it."""
    from .bias import layer_inputs
    from .collect import InputMeans, calibrate as collect_and_calibrate
    from .image_counts import images_for_channel_statistics

    if job.cache is not None:
        return
    images = job.images(NO_DATA.format(recipe=job.recipe.name))
    means = None
    if job.int8.bias_correction:  # the FP32 reference of bias correction, gathered on the way
        chosen = images.chosen(images_for_channel_statistics(job.graph, len(images.info.items),
                                                             job.int8.bias_correction_images))
        means = InputMeans(layer_inputs(job.graph).values(), lambda: images.batch_indices, chosen)
    job.cache = collect_and_calibrate(job.graph, job.recipe, images, job.recipe.calibration.method, job.tensors,
                                      job.progress, serves=job.model_sha256, means=means, session=job.pass_session,
                                      scales=job.pass_scales, batch=job.pass_batch, recorded=job.recorded)
    job.pass_session = job.pass_scales = None  # the input graph's session goes with its last pass
    job.close_recorded()
    job.input_means = means
    if job.scales is not None:
        job.cache.equalization = Equalization(job.equalization,
                                              {k: [float(v) for v in s] for k, s in sorted(job.scales.items())},
                                              job.equalize_images)
    job.provenance = Provenance.CALIBRATED


def choose_rules(job: Int8Job) -> None:
    """The recipe's exclusions first (their reasons win), then TensorRT's defaults."""
    from .rules import SmallGemm, rules_from_recipe

    job.rules = [*rules_from_recipe(job.int8.exclude), SmallGemm.for_model(job.graph)]


def fit_budget(job: Int8Job) -> None:
    """With an accuracy budget: keep the fewest most sensitive layers float that meet it."""
    from .sensitivity import fit_budget as fit, probe_inputs

    budget = job.int8.accuracy_budget
    if budget is None:
        return
    recipe = job.recipe
    source = recipe.calibration.data or recipe.data.validation
    if source is None:
        raise UserError("--accuracy-budget needs images to measure on: pass --calib-data or set "
                        f"data.validation in recipe '{recipe.name}'")
    inputs = probe_inputs(recipe, source, job.sensitivity_images)
    job.sensitivity, job.rules = fit(job.graph, job.rules, job.cache.amax(), inputs, budget, job.unsigned)


def insert(job: Int8Job) -> None:
    """Plan the Q/DQ under the rules and write them, with int8 weights."""
    from .insert import insert_qdq
    from .placement import plan_quantization

    job.plan = plan_quantization(job.graph, job.rules, job.target.read_quantized)
    if job.target.name == "tensorrt":
        job.quantized = insert_qdq(job.graph, job.plan, job.cache.amax(), job.unsigned)
    else:  # the target types each activation from its calibrated amax and observed min
        low = {t: r.min for t, r in job.cache.tensors.items() if r.min is not None}
        job.quantized = insert_qdq(job.graph, job.plan, job.cache.amax(), target=job.target, low=low)


def bias_correct(job: Int8Job) -> None:
    """Fold the mean output shift int8 rounding causes into the float biases: the cache's
    corrections when they were measured for this plan (same int8 layers, unsigned tensors and
    scales), else measured now, depth by depth, on the calibration images, and stored."""
    from ..cpu import release_free_memory
    from .bias import bias_key, correct_bias, means_through_layers, measure_bias_corrections
    from .image_counts import images_for_channel_statistics

    if not job.int8.bias_correction:
        return
    # What calibration freed, before the segments' sessions and outputs: on the digits
    # GoogLeNet (64 images) this step's peak RSS 306-314 -> 270-277 MB.
    release_free_memory()
    amax = job.cache.amax()
    key = bias_key(job.plan.layers, [e.node for e in job.plan.excluded], job.unsigned, amax)
    stored = job.cache.bias_correction
    if stored is not None and stored.key == key:
        shifts = stored.arrays()
    else:
        images = job.images("bias correction needs the calibration images: the calibration cache holds corrections "
                            "for another set of int8 layers or scales; pass --calib-data, or --no-bias-correction")
        # A class-balanced choice by the calibration seed: the calibration images themselves
        # when the counts are equal, a subset of them otherwise.
        count = images_for_channel_statistics(job.graph, job.cache.images, job.int8.bias_correction_images)
        inputs = images.array(count)
        means = job.input_means
        # The means gathered during calibration serve only when they are over exactly these images.
        fits = means is not None and len(inputs) == means.images and \
            sorted(means.folded) == sorted(int(i) for i in images.chosen(count))
        reference = means_through_layers(job.graph, means.means()) if fits else None
        shifts = measure_bias_corrections(job.graph, job.quantized, inputs, job.progress, reference=reference)
        job.cache.bias_correction = BiasCorrections(
            key, len(inputs), images.source, {layer: [float(v) for v in s] for layer, s in sorted(shifts.items())})
        job.bias_measured = True
        how = "FP32 reference from the calibration pass" if reference is not None else "FP32 reference measured"
        job.notes.append(f"bias correction measured on {len(inputs)} images of {images.source} ({len(shifts)} layers; "
                         f"{how})")
    job.corrected = correct_bias(job.quantized, shifts)


def finish_target(job: Int8Job) -> None:
    """What the target needs once the float biases are final (ort-cpu: int32 biases)."""
    if job.target.finish(job.quantized):
        job.notes.append(f"target {job.target.name}: int32 biases behind their own DequantizeLinear")


def write_cache(job: Int8Job) -> None:
    """The cache beside the output (or at --calib-cache), unless it is the user's own, unchanged;
    and TensorRT's text cache, except for an equalized graph (its scales are not the FP32 file's).
    Queued in job.writes: the stage writes them once the graph itself is written."""
    from .result import default_cache_path

    job.cache_path = path = job.calib_cache if job.calib_cache is not None else default_cache_path(job.output_path)
    if job.provenance is not Provenance.REUSED or job.bias_measured:
        job.writes.append(lambda: job.cache.save(path))
    if job.equalized:
        # Its amax belong to the equalized graph, which only lives inside the Q/DQ graph; an
        # implicit-INT8 (TensorRT <= 10) build of the FP32 file would get wrong scales.
        job.tensorrt_cache_path = None
    else:
        trt = job.tensorrt_cache_path = path.with_name(path.name.removesuffix(".json") + ".trt.txt")
        job.writes.append(lambda: job.cache.save_tensorrt(trt))


STEPS = (find_cache, equalize, calibrate, choose_rules, fit_budget, insert, bias_correct, finish_target,
         write_cache)


def quantize_int8(model, recipe, output_path: Path, calib_cache=None, allow_fewer: bool = False,
                  progress: bool = True, sensitivity_images: int = SENSITIVITY_IMAGES) -> Int8Job:
    """Run STEPS on `model` with a resolved `recipe`; the job holds the Q/DQ graph and the cache.
    The job owns `model` (it lets it go after equalization): a caller that needs the input
    graph later reads its file again."""
    from .cache import graph_sha256
    from .placement import plan_quantization

    job = Int8Job(model, recipe, Path(output_path), None if calib_cache is None else Path(calib_cache), allow_fewer,
                  progress, sensitivity_images, tensors=list(plan_quantization(model).activations),
                  model_sha256=graph_sha256(model))
    del model
    try:
        for step in STEPS:
            step(job)
    finally:
        job.close_recorded()
        if job._images is not None:
            job._images.close()  # the spill file
    return job
