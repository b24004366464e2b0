"""Calibration collection (stage: quantize): stream the calibration images through the FP32
graph once and fold every batch into per-tensor statistics, then turn them into a cache.

One ONNX Runtime session whose outputs include every tensor to calibrate is run batch by
batch; each batch is folded into statistics.TensorStats and dropped, so memory depends on
the batch size, never on the number of images. Concat outputs whose inputs are calibrated
are derived from their inputs' statistics instead of measured (exact; see derived_concats).
Batches equalization's pass already ran on the same session are read back from its record
instead of run again (recorded.py).
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Optional

import numpy as np

from .statistics import TensorStats

log = logging.getLogger(__name__)

# Tensors returned by one calibration batch stay under this many bytes (the batch is capped).
# Each batch's outputs live about three times at once (ORT's arena, the returned arrays, the
# next batch running beside), so the budget sets the peak RSS of quantize. Measured, quantize
# --int8, digits GoogLeNet (1.45 MB an image): 128 MiB (batches of 64) 445-509 MB peak at 256
# images, 24 MiB (16) 314-332 MB, 12 MiB (8) 294-307 MB at 64 and 256 images, the time within
# the machine's noise; Inception v3 at 299 (45.6 MB an image), 256 images: 128 MiB (batches of
# 2) 1070 MB and 51.7 s, one image 760 MB and 54.8 s. (Earlier, on v3: batches of 8 ran 11 s
# against 8.2-8.7 s for 2-4.)
BATCH_BYTES_BUDGET = 12 << 20
TRIM_EVERY = 8  # batches between hand-backs of freed heap memory (cpu.release_free_memory)


def derived_concats(model, tensors: Iterable[str]) -> dict[str, tuple[list[str], int]]:
    """Concat outputs among `tensors` whose inputs are all among `tensors` too: output ->
    (inputs, axis), in graph order (nested concats after the ones they take). Their statistics
    follow exactly from their inputs' (TensorStats.concatenated), so ORT need not return them:
    on Inception v3 that is 12 of the 124 calibrated tensors and 19% of the values. Only
    axis >= 1 (exported graphs concat on axis 1; a batch-axis Concat is measured)."""
    from ..graph_utils import DEFAULT_DOMAINS, attribute

    wanted = set(tensors)
    derived: dict[str, tuple[list[str], int]] = {}
    for node in model.graph.node:
        if node.op_type != "Concat" or node.domain not in DEFAULT_DOMAINS or node.output[0] not in wanted:
            continue
        axis = attribute(node, "axis", 0)
        if axis >= 1 and node.input and all(name in wanted for name in node.input):
            derived[node.output[0]] = (list(node.input), axis)
    return derived


def fetched_outputs(model, tensors: Iterable[str], averaged: Iterable[str] = (), derive_concats: bool = True
                    ) -> list[str]:
    """The tensors collect_statistics has ORT return: those of `tensors` not derived from
    others (derived_concats), then the `averaged` ones (InputMeans), graph inputs included
    (the caller feeds those)."""
    tensors = list(tensors)
    derived = derived_concats(model, tensors) if derive_concats else {}
    graph_inputs = {i.name for i in model.graph.input}
    measured = [t for t in dict.fromkeys(tensors) if t not in derived]
    return list(dict.fromkeys(measured + [t for t in averaged if t not in graph_inputs]))


def per_image_bytes(model, tensors: Iterable[str]) -> int:
    """Bytes one image adds to the calibration outputs, from ONNX shape inference (derived
    Concat outputs are not returned by ORT, so they do not count)."""
    from ..graph_utils import inferred_dims

    tensors = list(tensors)
    derived = derived_concats(model, tensors)
    sizes = {name: 4 * int(np.prod([d if d > 0 else 1 for d in dims[1:]])) for name, dims in inferred_dims(model).items()}
    return sum(sizes.get(t, 0) for t in tensors if t not in derived)


def calibration_batch_size(model, tensors: Iterable[str], wanted: int) -> int:
    """`wanted` images a batch, fewer when their outputs would pass BATCH_BYTES_BUDGET."""
    return max(1, min(wanted, BATCH_BYTES_BUDGET // max(per_image_bytes(model, tensors), 1)))


class InputMeans:
    """Per-position means of some tensors over chosen images of the calibration pass: the
    layer inputs bias correction derives its FP32 reference from (bias.means_through_layers).
    `rows(k)`: which rows of the k-th batch are chosen images (a boolean mask)."""

    def __init__(self, tensors: Iterable[str], batch_indices, chosen: Iterable[int]) -> None:
        """`batch_indices`: the pass's list of each batch's dataset indices (CalibrationSet's);
        `chosen`: the dataset indices to average over."""
        self.tensors, self.batch_indices = list(dict.fromkeys(tensors)), batch_indices
        self.chosen = np.asarray(sorted(set(int(i) for i in chosen)), dtype=np.int64)
        self.sums: dict[str, np.ndarray] = {}
        self.folded: list[int] = []  # the dataset indices averaged over

    @property
    def images(self) -> int:
        return len(self.folded)

    def fold(self, batch_number: int, values: dict[str, np.ndarray]) -> None:
        indices = self.batch_indices()[batch_number]
        mask = np.isin(indices, self.chosen)
        if not mask.any():
            return
        self.folded += [int(i) for i in indices[mask]]
        for name in self.tensors:
            part = values[name][mask].sum(axis=0, dtype=np.float32)
            self.sums[name] = part if name not in self.sums else self.sums[name] + part

    def means(self) -> dict[str, np.ndarray]:
        return {name: total / self.images for name, total in self.sums.items()} if self.images else {}


def collect_statistics(model, tensors: list[str], batches: Iterable[np.ndarray], histogram: bool = True,
                       bins: int = 4096, progress: bool = False, total: Optional[int] = None,
                       threads: Optional[int] = None, derive_concats: bool = True,
                       means: Optional[InputMeans] = None, session=None,
                       scales: Optional[dict[str, np.ndarray]] = None, recorded=None,
                       batch_indices: Optional[Callable[[], list]] = None) -> dict[str, TensorStats]:
    """One pass: run `model` (an FP32 onnx.ModelProto) on each batch with every tensor in
    `tensors` added as an output, and fold each batch into that tensor's statistics.
    With `derive_concats`, Concat outputs whose inputs are all calibrated are not measured but
    merged from their inputs' statistics (exact; see derived_concats). `means`: tensors whose
    per-position means over chosen images the same pass also gathers (they are returned too).
    `session`: a session of `model` (or of a graph `scales` turns into it) that returns every
    tensor needed; `scales`: tensor -> per-channel factors applied to its values first
    (equalize.tensor_scales: the equalized graph's statistics from the input graph's pass).
    `recorded`: a recorded.RecordedOutputs of `session`'s outputs (fetched_outputs) for some
    batches, which are read back instead of run; `batch_indices` gives each batch's dataset
    indices (CalibrationSet.batch_indices) to find them by."""
    from ..backends.onnxruntime_backend import create_session
    from ..cpu import cores, release_free_memory
    from ..progress import track

    derived = derived_concats(model, tensors) if derive_concats else {}
    graph_inputs = {i.name for i in model.graph.input}
    measured = [t for t in dict.fromkeys(tensors) if t not in derived]
    returned = fetched_outputs(model, tensors, means.tensors if means else (), derive_concats)
    # ORT's workers do not spin: a spinning worker burns the core the fold thread (below) needs.
    # Inception v3, 64 images, 2 cores, a quiet machine: 2 non-spinning threads 7.4-8.0 s, 1
    # thread 8.9-9.8 s (ORT waits on the fold less than the fold waits on ORT); ORT's default
    # (2 spinning threads) was 14.0 s under load.
    session = session or create_session(model, threads=threads or cores(), spinning=False, extra_outputs=returned)
    scales = scales or {}
    input_name = session.get_inputs()[0].name
    wanted = [t for t in returned if t not in graph_inputs]
    fed = [t for t in measured if t in graph_inputs]
    stats = {t: TensorStats(t, bins=bins) for t in measured}
    folded = [0]

    def fold(batch: np.ndarray, outputs: list) -> None:
        values = dict(zip(wanted, outputs))
        for name, factors in scales.items():
            if name in values:  # in place: the arrays are this batch's own (a copy cost 0.4 s on digits)
                value = values[name]
                np.multiply(value, factors.reshape((1, -1) + (1,) * (value.ndim - 2)), out=value)
        for name in measured:
            if name not in graph_inputs:
                stats[name].update(values[name], histogram)
        for name in fed:
            stats[name].update(batch, histogram)
        if means is not None:
            means.fold(folded[0], {**values, **{name: batch for name in graph_inputs}})
        folded[0] += 1
        if folded[0] % TRIM_EVERY == 0:
            release_free_memory()

    reused = [0]  # batches read back

    def outputs_of(batch: np.ndarray, number: int) -> list:
        """The batch's outputs: read back when the pass before recorded them, else run."""
        found = recorded.take(batch_indices()[number]) if recorded is not None and batch_indices else None
        if found is not None and all(name in found for name in wanted):
            reused[0] += 1
            return [found[name] for name in wanted]
        return session.run(wanted, {input_name: batch})

    # ORT runs batch k+1 in a worker thread (it releases the GIL) while this thread folds
    # batch k into the histograms, so the two use the two cores side by side (numbers in
    # benchmarks/README.md). At most two batches of outputs are alive at once, whatever the
    # number of images.
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = None
        for number, batch in enumerate(track(batches, "calibrating", total, progress, size=len,
                                             about="one ONNX Runtime pass over the images, statistics of every "
                                                   "quantized tensor")):
            running = pool.submit(outputs_of, batch, number)
            if pending is not None:
                fold(pending[0], pending[1].result())
            pending = (batch, running)
        if pending is not None:
            fold(pending[0], pending[1].result())
    if recorded is not None:
        log.info("calibration read %d of %d batches back from the pass before (recorded outputs)", reused[0],
                 folded[0])
    for name, (inputs, axis) in derived.items():
        stats[name] = TensorStats.concatenated(name, [stats[i] for i in inputs])
    return {t: stats[t] for t in tensors}


def calibrate(model, recipe, images, method: str, tensors: list[str], progress: bool = True, serves=None,
              means: Optional[InputMeans] = None, session=None, scales: Optional[dict] = None, batch: int = 0,
              recorded=None):
    """Stream `images` (a CalibrationSet) through `model` once and return a CalibrationCache
    for the graph `serves` (default `model`: an equalized graph's cache serves its input graph,
    whose scales it stores; that graph or its graph_sha256). `means` gathers layer-input means on the way (InputMeans).
    `session`, `scales` (collect_statistics) with `batch` (its images a run) reuse another pass's session,
    and `recorded` its outputs (collect_statistics)."""
    from ..cpu import thread_pool
    from .cache import CalibrationCache, TensorRange
    from .calibrators import make_calibrator

    cfg = recipe.calibration
    calibrator = make_calibrator(method, cfg)
    batches = images.batches(batch or calibration_batch_size(model, tensors, cfg.batch_size))
    stats = collect_statistics(model, tensors, batches, histogram=calibrator.needs_histogram, bins=2 * cfg.bins,
                               progress=progress, total=len(images.info.items), means=means, session=session,
                               scales=scales, recorded=recorded, batch_indices=lambda: images.batch_indices)
    # A tensor per core at a time (numpy releases the GIL in the searches' array operations):
    # the 82 digits GoogLeNet tensors took 1.21-1.24 s for MSE on one core, 0.58-0.68 s on
    # two; entropy 0.15-0.20 s either way.
    amax = thread_pool().map(lambda s: float(calibrator.amax(s)), stats.values())
    ranges = {t: TensorRange(a, float(s.absmax), s.min) for (t, s), a in zip(stats.items(), amax)}
    log.info("calibrated %d tensors on %d images of %s (%s)", len(tensors), images.info.used, images.source, method)
    return CalibrationCache.new(model if serves is None else serves, recipe, method, calibrator.params(), ranges,
                                images.info)
