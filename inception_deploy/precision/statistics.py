"""Calibration statistics (stage: quantize): running min/max and a fixed-size |x| histogram per tensor.

Each batch updates the histogram and is then dropped, so memory depends on the batch size,
never on the number of images. Bin widths are powers of two and histograms grow their range
by merging neighbouring bins in pairs (the bin width doubles): counts stay exact, no second
pass is needed, and the histogram of a Concat output is the sum of its inputs' histograms,
so Concat outputs are derived, not measured (TensorStats.concatenated).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..errors import UserError

HISTOGRAM_CHUNK = 1 << 16


class NonFiniteValues(UserError):
    """A tensor held inf or NaN on the calibration data: no histogram (and no int8 scale) can be
    made of it. A UserError, because the cause is the user's model or preprocessing."""

    def __init__(self, tensor: str) -> None:
        super().__init__(f"calibration tensor '{tensor}' has non-finite values (inf or NaN) on the "
                         "calibration data; check the model's weights and the preprocessing")
        self.tensor = tensor


# --------------------------------------------------------------------------- histogram helpers
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
            raise NonFiniteValues(self.name)
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
