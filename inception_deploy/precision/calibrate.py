"""Calibration (stage: quantize): stream images through the FP32 graph once, keep per-tensor
statistics, and turn them into one amax per tensor with a calibrator.

One ONNX Runtime session whose outputs include every tensor to calibrate is run batch by
batch; each batch updates a fixed-size |x| histogram per tensor and is then dropped, so
memory depends on the batch size, never on the number of images. Bin widths are powers of
two and histograms grow their range by merging neighbouring bins in pairs (the bin width
doubles): counts stay exact, no second pass is needed, and the histogram of a Concat output
is the sum of its inputs' histograms, so Concat outputs are derived, not measured.

Calibrators are small objects with `amax(stats) -> float`: max, percentile, entropy (the
KL-divergence threshold search TensorRT's entropy calibrator used) and mse. They are
written here because onnxruntime's calibrators are not usable for this (measured: its
Entropy returns the MinMax scales and needs 7 GB for 64 Inception v3 images).
"""

from __future__ import annotations

import logging
import math
import threading
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
HISTOGRAM_CHUNK = 1 << 16


# --------------------------------------------------------------------------- statistics
def _cover(top: float, bins: int) -> float:
    """The smallest power of two w with top <= w * bins (top > 0, finite).

    Bin widths are powers of two so that (1) x * (1 / w) is exact in float32 and the bin of
    every value is exactly ceil(|x| / w), and (2) the width depends only on the tensor's
    final |x| max, not on the order the batches came in: a histogram grown pairwise from any
    first batch ends at the same width, and two histograms of different widths merge exactly
    by coarsening the finer one (ceil(ceil(x / w) / r) == ceil(x / (w r)))."""
    w = math.ldexp(1.0, math.frexp(top / bins)[1])
    while w * bins < top:
        w *= 2
    while w * bins / 2 >= top:
        w /= 2
    return w


def _coarsen(hist: np.ndarray, factor: int) -> np.ndarray:
    """Bins [j*factor, (j+1)*factor) summed into bin j, zero-padded back to hist.size bins."""
    if factor == 1:
        return hist
    groups = -(-hist.size // factor)
    padded = np.zeros(groups * factor, dtype=np.int64)
    padded[:hist.size] = hist
    out = np.zeros(hist.size, dtype=np.int64)
    out[:groups] = padded.reshape(groups, factor).sum(axis=1)
    return out


class _Scratch:
    """Reused chunk buffers: 64 Ki values per chunk stay in L2, which measured 2.05 ns per
    value for the histogram against 2.98 ns with 4 Mi-value chunks (Inception v3 tensors)."""

    def __init__(self):
        self.scaled = np.empty(HISTOGRAM_CHUNK, dtype=np.float32)
        self.index = np.empty(HISTOGRAM_CHUNK, dtype=np.uint16)


_SCRATCH = threading.local()


@dataclass
class TensorStats:
    """Running min/max, and a histogram of |x|: `zeros` counts exact zeros, hist[j] counts
    |x| in (j * width, (j + 1) * width], width a power of two (see _cover)."""

    name: str
    bins: int = 4096
    min: float = math.inf
    max: float = -math.inf
    count: int = 0
    width: float = 0.0
    hist: Optional[np.ndarray] = None
    zeros: int = 0  # exact zeros (after Relu, often most values): kept out of the histogram

    @property
    def absmax(self) -> float:
        return max(abs(self.min), abs(self.max)) if self.count else 0.0

    def update(self, x: np.ndarray, histogram: bool = True) -> None:
        if x.size == 0:
            return
        flat = x.reshape(-1)
        low, high = float(flat.min()), float(flat.max())
        self.min, self.max = min(self.min, low), max(self.max, high)
        self.count += flat.size
        if not histogram:
            return
        top = max(abs(low), abs(high))
        if not math.isfinite(top):
            raise UserError(f"calibration tensor '{self.name}' has non-finite values (inf or NaN) on the "
                            "calibration data; check the model's weights and the preprocessing")
        if top == 0.0:
            self.zeros += flat.size
            return
        if self.hist is None:
            self.hist = np.zeros(self.bins, dtype=np.int64)
            self.width = _cover(top, self.bins)
        while top > self.width * self.bins:
            # Grow the range: merge bins pairwise (exact counts, width doubles).
            self.hist = _coarsen(self.hist, 2)
            self.width *= 2
        self._count(flat, negative=low < 0)

    def _count(self, flat: np.ndarray, negative: bool) -> None:
        # ceil(|x| / width) is bin 0 for exact zeros and 1..bins for the rest, so one bincount
        # gives the zero count too (count_nonzero was 1.4 ns/value). Indices go through
        # uint16: the float -> int cast writes 2 bytes a value instead of 8. Profiled on
        # Inception v3: 3.0 ns/value for this against 5.0 for the previous
        # multiply/count_nonzero/minimum/intp-cast/bincount sequence.
        inverse = 1.0 / self.width
        exact32 = 2.0 ** -126 <= inverse <= 2.0 ** 127 and self.bins < 1 << 16
        if not exact32:  # |x| max below ~1e-35, or 65536+ bins: counted exactly in float64
            scaled = np.abs(flat, dtype=np.float64) * inverse if negative else flat * np.float64(inverse)
            counts = np.bincount(np.ceil(scaled).astype(np.intp), minlength=self.bins + 1)
            self.zeros += int(counts[0])
            self.hist += counts[1:]
            return
        scratch = getattr(_SCRATCH, "buffers", None)
        if scratch is None:
            scratch = _SCRATCH.buffers = _Scratch()
        inverse32 = np.float32(inverse)
        counts = np.zeros(self.bins + 1, dtype=np.int64)
        for start in range(0, flat.size, HISTOGRAM_CHUNK):
            part = flat[start:start + HISTOGRAM_CHUNK]
            a, idx = scratch.scaled[:part.size], scratch.index[:part.size]
            if negative:
                np.abs(part, out=a)
                np.multiply(a, inverse32, out=a)
            else:  # no |x| pass for non-negative tensors (after Relu): most of them
                np.multiply(part, inverse32, out=a)
            np.ceil(a, out=a)
            idx[...] = a
            counts += np.bincount(idx, minlength=self.bins + 1)
        self.zeros += int(counts[0])
        self.hist += counts[1:]

    @classmethod
    def concatenated(cls, name: str, parts: list["TensorStats"]) -> "TensorStats":
        """The statistics of Concat(parts, axis) without measuring it: its values are exactly
        the multiset union of the parts' values, so min/max/count/zeros combine exactly and
        the histograms add once coarsened to the widest part's width (power-of-two widths:
        bit-equal to measuring the Concat output itself)."""
        bins = parts[0].bins
        out = cls(name, bins=bins)
        out.min = min(p.min for p in parts)
        out.max = max(p.max for p in parts)
        out.count = sum(p.count for p in parts)
        out.zeros = sum(p.zeros for p in parts)
        with_hist = [p for p in parts if p.hist is not None]
        if with_hist:
            out.width = max(p.width for p in with_hist)
            out.hist = np.zeros(bins, dtype=np.int64)
            for p in with_hist:
                out.hist += _coarsen(p.hist, int(round(out.width / p.width)))
        return out

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
        chunks = np.array_split(candidates, max(1, len(candidates) // 512))
        # numpy releases the GIL in these array ops: the chunks run on every core (124 Inception
        # v3 tensors: 1.4 s -> 0.85 s on 2 cores).
        kl = np.concatenate(list(_pool().map(lambda ends: self._divergences(hist, ends), chunks)))
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
    """The amax whose int8 rounding + clipping error, summed over the histogram, is least;
    among the thresholds within `tolerance` (relative) of that least error, the largest.

    Why the tolerance: the error curve is flat near its minimum, and a few hundred images
    cannot tell those thresholds apart; the smallest one clips the most, which the calibration
    images do not pay for but unseen images do. On the digits GoogLeNet (256 calibration
    images, 450 held-out, equalized and bias-corrected) the held-out mean / max abs logit
    error was 0.0146 / 0.392 at tolerance 0, 0.0141 / 0.295 at 0.005, 0.0131 / 0.166 at 0.01,
    0.0127 / 0.135 at 0.02 and 0.0133 / 0.199 at 0.05: the mean is least at 0.02."""

    start_bin: int = 64
    candidates: int = 512
    tolerance: float = 0.02
    method = "mse"

    def amax(self, stats: TensorStats) -> float:
        hist, width = stats.used_histogram()
        if width == 0.0 or hist.size <= self.start_bin:
            return stats.absmax
        centers = (np.arange(hist.size) + 0.5) * width
        weights = hist.astype(np.float64)
        ends = np.unique(np.linspace(self.start_bin, hist.size, self.candidates).round().astype(np.int64))
        errors = []
        for chunk in np.array_split(ends, max(1, len(ends) // 64)):
            scales = chunk.astype(np.float64)[:, None] * width / INT8_MAX
            dequantized = np.clip(np.rint(centers[None, :] / scales), 0, INT8_MAX) * scales
            errors.append(((centers[None, :] - dequantized) ** 2 * weights[None, :]).sum(axis=1))
        error = np.concatenate(errors)
        near_best = np.flatnonzero(error <= error.min() * (1.0 + self.tolerance))
        return min(stats.absmax, float(ends[near_best.max()]) * width)

    def params(self) -> dict:
        return {"start_bin": self.start_bin, "candidates": self.candidates, "tolerance": self.tolerance}


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


def derived_concats(model, tensors: Iterable[str]) -> dict[str, tuple[list[str], int]]:
    """Concat outputs among `tensors` whose inputs are all among `tensors` too: output ->
    (inputs, axis), in graph order (nested concats after the ones they take). Their statistics
    follow exactly from their inputs' (TensorStats.concatenated), so ORT need not return them:
    on Inception v3 that is 12 of the 124 calibrated tensors and 19% of the values. Only
    axis >= 1 (exported graphs concat on axis 1; a batch-axis Concat is measured)."""
    wanted = set(tensors)
    derived: dict[str, tuple[list[str], int]] = {}
    for node in model.graph.node:
        if node.op_type != "Concat" or node.domain not in ("", "ai.onnx") or node.output[0] not in wanted:
            continue
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        if axis >= 1 and node.input and all(name in wanted for name in node.input):
            derived[node.output[0]] = (list(node.input), axis)
    return derived


def per_image_bytes(model, tensors: Iterable[str]) -> int:
    """Bytes one image adds to the calibration outputs, from ONNX shape inference (derived
    Concat outputs are not returned by ORT, so they do not count)."""
    import onnx

    tensors = list(tensors)
    derived = derived_concats(model, tensors)
    inferred = onnx.shape_inference.infer_shapes(model)
    sizes = {}
    for value in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
        dims = value.type.tensor_type.shape.dim
        per = 1
        for dim in dims[1:]:
            per *= dim.dim_value if dim.dim_value > 0 else 1
        sizes[value.name] = per * 4
    return sum(sizes.get(t, 0) for t in tensors if t not in derived)


def collect_statistics(model, tensors: list[str], batches: Iterable[np.ndarray], histogram: bool = True,
                       bins: int = 4096, progress: bool = False, total: Optional[int] = None,
                       threads: Optional[int] = None, derive_concats: bool = True) -> dict[str, TensorStats]:
    """One pass: run `model` (an FP32 onnx.ModelProto) on each batch with every tensor in
    `tensors` added as an output, and fold each batch into that tensor's statistics.
    With `derive_concats`, Concat outputs whose inputs are all calibrated are not measured but
    merged from their inputs' statistics (exact; see derived_concats)."""
    import onnx
    import onnxruntime as ort

    derived = derived_concats(model, tensors) if derive_concats else {}
    augmented = onnx.ModelProto()
    augmented.CopyFrom(model)
    graph_inputs = {i.name for i in augmented.graph.input}
    existing = {o.name for o in augmented.graph.output}
    measured = [t for t in dict.fromkeys(tensors) if t not in derived]
    for name in measured:
        if name not in graph_inputs and name not in existing:
            augmented.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    # ORT gets every core but one, which is the fold thread's (see below), and its workers do
    # not spin (a spinning worker burns the fold's core). Inception v3, 64 images, 2 cores:
    # 14.0 s with ORT's default (2 spinning threads), 10.6 s with 2 non-spinning, 10.0 s with 1.
    options.intra_op_num_threads = threads or max(1, _cores() - 1)
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(augmented.SerializeToString(), options, providers=["CPUExecutionProvider"])
    del augmented
    input_name = session.get_inputs()[0].name
    wanted = [t for t in measured if t not in graph_inputs]
    fed = [t for t in measured if t in graph_inputs]
    stats = {t: TensorStats(t, bins=bins) for t in measured}

    def fold(batch: np.ndarray, outputs: list) -> None:
        for name, value in zip(wanted, outputs):
            stats[name].update(value, histogram)
        for name in fed:
            stats[name].update(batch, histogram)

    # ORT runs batch k+1 in a worker thread (it releases the GIL) while this thread folds
    # batch k into the histograms, so the two use the two cores side by side (numbers in
    # benchmarks/README.md). At most two batches of outputs are alive at once, whatever the
    # number of images.
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
    for name, (inputs, axis) in derived.items():
        stats[name] = TensorStats.concatenated(name, [stats[i] for i in inputs])
    return {t: stats[t] for t in tensors}


_POOL = None


def _pool():
    """Threads for numpy work that releases the GIL (the KL search), one per core, made once."""
    global _POOL
    if _POOL is None:
        from concurrent.futures import ThreadPoolExecutor

        _POOL = ThreadPoolExecutor(max_workers=_cores(), thread_name_prefix="calibrate")
    return _POOL


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


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
