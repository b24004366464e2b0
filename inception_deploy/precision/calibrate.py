"""Calibration (stage: quantize): stream images through the FP32 graph once, keep per-tensor
statistics, and turn them into one amax per tensor with a calibrator.

One ONNX Runtime session whose outputs include every tensor to calibrate is run batch by
batch; each batch updates a fixed-size |x| histogram per tensor and is then dropped, so
memory depends on the batch size, never on the number of images. Histograms grow their
range by merging neighbouring bins in pairs (the bin width doubles): counts stay exact
and no second pass is needed.

Calibrators are small objects with `amax(stats) -> float`: max, percentile, entropy (the
KL-divergence threshold search TensorRT's entropy calibrator used) and mse. They are
written here because onnxruntime's calibrators are not usable for this (measured: its
Entropy returns the MinMax scales and needs 7 GB for 64 Inception v3 images).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Optional

import numpy as np

from ..errors import UserError

log = logging.getLogger(__name__)

INT8_MAX = 127
METHODS = ("max", "percentile", "entropy", "mse")
# Tensors returned by one calibration batch stay under this many bytes (the batch is capped).
# Measured on Inception v3 299 (64 images, 124 tensors as outputs): batches of 2-4 images run
# 8.2-8.7 s in ORT, batches of 8 (the old 512 MiB budget) 11 s: smaller outputs stay in cache.
BATCH_BYTES_BUDGET = 128 << 20
HISTOGRAM_CHUNK = 1 << 22


# --------------------------------------------------------------------------- statistics
@dataclass
class TensorStats:
    """Running min/max and a histogram of |x| over [0, width * len(hist))."""

    name: str
    bins: int = 4096
    min: float = math.inf
    max: float = -math.inf
    count: int = 0
    width: float = 0.0
    hist: Optional[np.ndarray] = None
    zeros: int = 0  # exact zeros (after Relu, often most values): kept out of the histogram
    # Running sum over the batch axis (a C x H x W map, fixed size) for bias correction: the
    # mean image, from which the mean of every im2col patch (padding included) follows.
    track_mean: bool = False
    mean_sum: Optional[np.ndarray] = None
    mean_count: int = 0

    @property
    def mean_map(self) -> Optional[np.ndarray]:
        """E[x] over the images, shape (1, *x.shape[1:]); None when not tracked."""
        if self.mean_sum is None or self.mean_count == 0:
            return None
        return (self.mean_sum / self.mean_count).astype(np.float32)[None]

    @property
    def absmax(self) -> float:
        return max(abs(self.min), abs(self.max)) if self.count else 0.0

    def update(self, x: np.ndarray, histogram: bool = True) -> None:
        if x.size == 0:
            return
        if self.track_mean and x.ndim >= 2:
            batch_sum = x.sum(axis=0, dtype=np.float64)
            self.mean_sum = batch_sum if self.mean_sum is None else self.mean_sum + batch_sum
            self.mean_count += x.shape[0]
        flat = x.reshape(-1)
        low, high = float(flat.min()), float(flat.max())
        self.min, self.max = min(self.min, low), max(self.max, high)
        self.count += flat.size
        if not histogram:
            return
        top = max(abs(low), abs(high))
        if top == 0.0:
            self.zeros += flat.size
            return
        if self.hist is None:
            self.hist = np.zeros(self.bins, dtype=np.int64)
            self.width = top / self.bins
        while top >= self.width * self.bins * (1 + 1e-7):
            # Grow the range: merge bins pairwise (exact counts, width doubles).
            merged = self.hist.reshape(-1, 2).sum(axis=1)
            self.hist = np.concatenate([merged, np.zeros(self.bins - merged.size, dtype=np.int64)])
            self.width *= 2
        inverse = np.float32(1.0 / self.width)
        # Profiled on Inception v3 (cProfile): this loop was a third of calibration. In-place
        # arithmetic in one reused buffer, no |x| pass for non-negative tensors (after Relu),
        # and zeros counted with count_nonzero instead of a boolean temporary.
        chunk = min(flat.size, HISTOGRAM_CHUNK)
        buffer = np.empty(chunk, dtype=np.float32)
        index = np.empty(chunk, dtype=np.intp)
        for start in range(0, flat.size, HISTOGRAM_CHUNK):  # bounded temporaries on big tensors
            part = flat[start:start + HISTOGRAM_CHUNK]
            a, idx = buffer[:part.size], index[:part.size]
            if low < 0:
                np.abs(part, out=a)
                np.multiply(a, inverse, out=a)
            else:
                np.multiply(part, inverse, out=a)
            zeros = part.size - int(np.count_nonzero(part))
            np.minimum(a, self.bins - 1, out=a)
            idx[...] = a  # float -> int truncates: the bin index
            self.hist += np.bincount(idx, minlength=self.bins)
            # Exact zeros are exactly representable at any scale; left in bin 0 they would pull
            # the entropy and MSE searches towards small thresholds (a wide first quantization
            # bin smears their mass over its neighbours).
            self.hist[0] -= zeros
            self.zeros += zeros

    def used_histogram(self) -> tuple[np.ndarray, float]:
        """The histogram of non-zero |x|, trimmed after its last non-empty bin, and the bin width."""
        if self.hist is None or not self.hist.any():
            return np.zeros(1, dtype=np.int64), 0.0
        last = int(np.flatnonzero(self.hist)[-1]) + 1
        return self.hist[:last], self.width


# --------------------------------------------------------------------------- calibrators
class Calibrator:
    """Turns a tensor's statistics into the amax its symmetric int8 scale covers."""

    method = "base"
    needs_histogram = True

    def amax(self, stats: TensorStats) -> float:
        raise NotImplementedError

    def params(self) -> dict:
        return {}


class MaxCalibrator(Calibrator):
    method = "max"
    needs_histogram = False

    def amax(self, stats: TensorStats) -> float:
        return stats.absmax


@dataclass
class PercentileCalibrator(Calibrator):
    percentile: float = 99.99
    method = "percentile"

    def amax(self, stats: TensorStats) -> float:
        hist, width = stats.used_histogram()
        if width == 0.0:
            return stats.absmax
        # Over all values, zeros included (they sit below every threshold).
        cdf = (stats.zeros + np.cumsum(hist)) / (stats.zeros + hist.sum())
        index = int(np.searchsorted(cdf, self.percentile / 100.0))
        return min(stats.absmax, (index + 1) * width)

    def params(self) -> dict:
        return {"percentile": self.percentile}


@dataclass
class EntropyCalibrator(Calibrator):
    """TensorRT's entropy calibration: the threshold whose 128-level quantization of the
    |x| histogram (outliers clipped into the last bin) has the least KL divergence."""

    start_bin: int = 128
    stride: int = 1
    levels: int = INT8_MAX + 1
    method = "entropy"

    def amax(self, stats: TensorStats) -> float:
        hist, width = stats.used_histogram()
        if width == 0.0 or hist.size <= self.start_bin:
            return stats.absmax
        n = hist.size
        stride = max(self.stride, n // 2048)  # at most ~2048 candidates
        candidates = np.arange(self.start_bin, n + 1, stride)
        kl = np.concatenate([self._divergences(hist, c) for c in np.array_split(candidates, max(1, len(candidates) // 512))])
        if not np.isfinite(kl).any():
            return stats.absmax
        return min(stats.absmax, int(candidates[int(np.argmin(kl))]) * width)

    def _divergences(self, hist: np.ndarray, ends: np.ndarray) -> np.ndarray:
        """KL(P || Q) for every candidate end bin i at once (the loop over candidates was the
        slowest part of calibration: ~0.25 s per tensor). P is hist[:i] with the tail sum(hist[i:])
        added to bin i-1; Q spreads each of the `levels` groups' sum evenly over the group's
        non-empty bins. Bin j belongs to group j * levels // i, so group k is the bins
        [ceil(k i / levels), ceil((k+1) i / levels)) and every sum is a difference of prefix sums:

            KL = (sum p log p - sum_groups s_k log(s_k / m_k) - t log q_last) / P - log P + log Q

        with s_k, m_k the group's count and non-empty bins, t the tail, q_last the mean of the
        last bin's group, P = sum(hist), Q = sum(hist[:i]). (No smoothing, as in NVIDIA's
        pytorch-quantization / Model Optimizer; smoothing, as MXNet/TVM do, was measured here to
        clip the digits GoogLeNet's classifier input to half its range: max abs logit error 7.3
        instead of 0.39.) A candidate whose last bin is empty while the tail is not has infinite
        divergence and is never chosen."""
        h = hist.astype(np.float64)
        total = h.sum()
        prefix = np.concatenate([[0.0], np.cumsum(h)])
        nonempty = np.concatenate([[0], np.cumsum(h > 0)])
        with np.errstate(divide="ignore", invalid="ignore"):
            hlogh = np.concatenate([[0.0], np.cumsum(np.where(h > 0, h * np.log(np.maximum(h, 1)), 0.0))])
            levels = self.levels
            k = np.arange(levels + 1)
            bounds = np.minimum(-((-k[None, :] * ends[:, None]) // levels), ends[:, None])  # ceil(k i / levels)
            sums = prefix[bounds[:, 1:]] - prefix[bounds[:, :-1]]
            members = nonempty[bounds[:, 1:]] - nonempty[bounds[:, :-1]]
            mean = np.where(members > 0, sums / np.maximum(members, 1), 0.0)
            cross = np.where(sums > 0, sums * np.log(np.where(mean > 0, mean, 1.0)), 0.0).sum(axis=1)
            last = h[ends - 1]
            tail = total - prefix[ends]
            q_last = mean[np.arange(len(ends)), ((ends - 1) * levels) // ends]
            p_last = last + tail
            plogp = hlogh[ends - 1] + np.where(p_last > 0, p_last * np.log(np.maximum(p_last, 1e-300)), 0.0)
            cross = cross + np.where(tail > 0, tail * np.log(np.where(q_last > 0, q_last, 1.0)), 0.0)
            kept = prefix[ends]
            kl = (plogp - cross) / total - np.log(total) + np.log(kept)
        kl[(last == 0) & (tail > 0)] = np.inf
        kl[kept == 0] = np.inf
        return kl

    def params(self) -> dict:
        return {"start_bin": self.start_bin, "stride": self.stride, "levels": self.levels}


@dataclass
class MseCalibrator(Calibrator):
    """The amax whose int8 rounding + clipping error, summed over the histogram, is least."""

    start_bin: int = 64
    candidates: int = 512
    method = "mse"

    def amax(self, stats: TensorStats) -> float:
        hist, width = stats.used_histogram()
        if width == 0.0 or hist.size <= self.start_bin:
            return stats.absmax
        centers = (np.arange(hist.size) + 0.5) * width
        weights = hist.astype(np.float64)
        ends = np.unique(np.linspace(self.start_bin, hist.size, self.candidates).round().astype(np.int64))
        best_err, best_amax = math.inf, stats.absmax
        for chunk in np.array_split(ends, max(1, len(ends) // 64)):
            amaxes = chunk.astype(np.float64) * width
            scales = amaxes[:, None] / INT8_MAX
            dequantized = np.clip(np.rint(centers[None, :] / scales), 0, INT8_MAX) * scales
            errors = ((centers[None, :] - dequantized) ** 2 * weights[None, :]).sum(axis=1)
            k = int(np.argmin(errors))
            if errors[k] < best_err:
                best_err, best_amax = float(errors[k]), float(amaxes[k])
        return min(stats.absmax, best_amax)

    def params(self) -> dict:
        return {"start_bin": self.start_bin, "candidates": self.candidates}


def make_calibrator(method: str, percentile: float = 99.99) -> Calibrator:
    if method == "max":
        return MaxCalibrator()
    if method == "percentile":
        return PercentileCalibrator(percentile)
    if method == "entropy":
        return EntropyCalibrator()
    if method == "mse":
        return MseCalibrator()
    raise UserError(f"unknown calibration method '{method}'; choose one of {', '.join(METHODS)}")


# --------------------------------------------------------------------------- the data pass
@dataclass
class CalibrationData:
    """What was streamed: enough to name it in a cache and to refuse a mismatch."""

    source: str
    requested: int
    used: int = 0
    skipped: list[str] = field(default_factory=list)
    items: list[str] = field(default_factory=list)


def stream_calibration_batches(recipe, source: str, count: Optional[int], batch_size: int,
                               allow_fewer: bool = False) -> tuple[CalibrationData, Iterator[np.ndarray]]:
    """Deterministic, class-stratified choice of `count` images of `source`, preprocessed by
    the recipe's one preprocessing function, yielded batch by batch."""
    from ..data import choose_indices, open_dataset

    dataset = open_dataset(source, recipe.preprocessing, seed=recipe.calibration.seed)
    indices = choose_indices(dataset, count, seed=recipe.calibration.seed, allow_fewer=allow_fewer)
    info = CalibrationData(source=str(source), requested=len(indices) if count is None else count,
                           items=[dataset.describe_item(int(i)) for i in indices])

    def generate() -> Iterator[np.ndarray]:
        for inputs, _, idx in dataset.batches(recipe.preprocessing, batch_size, indices):
            info.used += len(idx)
            yield inputs
        info.skipped = list(dataset.skipped)
        if info.used == 0:
            raise UserError(f"{source}: no usable calibration images ({len(info.skipped)} unreadable); "
                            "give a folder or array file of readable images")
        if info.skipped:
            log.warning("calibration skipped %d unreadable image(s) of %s", len(info.skipped), source)
            if info.used < info.requested and not allow_fewer:
                raise UserError(f"{source}: only {info.used} of the {info.requested} calibration images were "
                                f"readable ({len(info.skipped)} skipped, first: {info.skipped[0]}); "
                                "fix or remove them, lower --calib-count, or pass --allow-fewer")

    return info, generate()


def per_image_bytes(model, tensors: Iterable[str]) -> int:
    """Bytes one image adds to the calibration outputs, from ONNX shape inference."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    sizes = {}
    for value in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
        dims = value.type.tensor_type.shape.dim
        per = 1
        for dim in dims[1:]:
            per *= dim.dim_value if dim.dim_value > 0 else 1
        sizes[value.name] = per * 4
    return sum(sizes.get(t, 0) for t in tensors)


def collect_statistics(model, tensors: list[str], batches: Iterable[np.ndarray], histogram: bool = True,
                       bins: int = 4096, progress: bool = False, total: Optional[int] = None,
                       threads: Optional[int] = None, means: Iterable[str] = ()) -> dict[str, TensorStats]:
    """One pass: run `model` (an FP32 onnx.ModelProto) on each batch with every tensor in
    `tensors` added as an output, and fold each batch into that tensor's statistics.
    Tensors in `means` (a subset of `tensors`) also keep their mean map (bias correction)."""
    import onnx
    import onnxruntime as ort

    augmented = onnx.ModelProto()
    augmented.CopyFrom(model)
    graph_inputs = {i.name for i in augmented.graph.input}
    existing = {o.name for o in augmented.graph.output}
    for name in tensors:
        if name not in graph_inputs and name not in existing:
            augmented.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(augmented.SerializeToString(), options, providers=["CPUExecutionProvider"])
    del augmented
    input_name = session.get_inputs()[0].name
    wanted = [t for t in tensors if t not in graph_inputs]
    means = set(means)
    stats = {t: TensorStats(t, bins=bins, track_mean=t in means) for t in tensors}

    def fold(batch: np.ndarray, outputs: list) -> None:
        for name, value in zip(wanted, outputs):
            stats[name].update(value, histogram)
        for name in tensors:
            if name in graph_inputs:
                stats[name].update(batch, histogram)

    # ORT runs batch k+1 in a worker thread (it releases the GIL) while this thread folds
    # batch k into the histograms: ORT's kernels do not keep both cores busy all the time, so
    # the two overlap (numbers in benchmarks/README.md). At most
    # two batches of outputs are alive at once, whatever the number of images.
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = None
        for batch in _progress(batches, progress, total, "calibrating"):
            running = pool.submit(session.run, wanted, {input_name: batch})
            if pending is not None:
                fold(pending[0], pending[1].result())
            pending = (batch, running)
        if pending is not None:
            fold(pending[0], pending[1].result())
    return stats


def _progress(iterable, enabled: bool, total: Optional[int], description: str):
    if not enabled:
        yield from iterable
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  transient=True) as bar:
        task = bar.add_task(description, total=total)
        for item in iterable:
            yield item
            bar.advance(task, len(item))


def compute_amax(stats: dict[str, TensorStats], calibrator: Calibrator) -> dict[str, float]:
    return {name: float(calibrator.amax(s)) for name, s in stats.items()}
