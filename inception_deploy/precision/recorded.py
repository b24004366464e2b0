"""One pass's ORT outputs kept on disk for the next pass over the same images (stage: quantize).

Equalization's pass runs the input graph on its images to read channel ranges; calibration
then runs the same session on the same images again, only to histogram the outputs scaled by
the equalization it could not know before. Recording the outputs calibration will fetch, per
batch, lets calibration read those batches back instead of running them: on the digits
GoogLeNet equalization reads every calibration image, so calibration runs none, and on
Inception v3 at 299 it reads 16 of them. The outputs are the same session's on the same batch
(bit-equal; a batch is matched by its dataset indices), so the statistics are unchanged.

On disk, not in memory: a batch is read back once, and memory stays that of one batch (the
page cache holds what the system can spare). RECORD_BYTES_BUDGET bounds the disk used; the
batches beyond it, and every batch after a write fails (a full disk), are run again instead.
"""

from __future__ import annotations

import contextlib
from typing import Optional

import numpy as np

# Inception v3 at 299 returns 46 MB an image (16 images: 0.75 GB); the digits GoogLeNet 1.5 MB.
RECORD_BYTES_BUDGET = 1 << 30


class RecordedOutputs:
    """Batch (its dataset indices) -> the named arrays a pass returned for it, in one scratch
    file; `take` reads a batch back once (None when it was not recorded)."""

    def __init__(self, budget: Optional[int] = None) -> None:
        self.budget = RECORD_BYTES_BUDGET if budget is None else budget
        self.used, self.full = 0, False
        self._where: dict[tuple, list[tuple[str, int, tuple, np.dtype]]] = {}
        self._stack: Optional[contextlib.ExitStack] = None
        self._handle = None

    def put(self, indices, arrays: dict[str, np.ndarray]) -> None:
        size = sum(a.nbytes for a in arrays.values())
        if self.full or self.used + size > self.budget:
            self.full = True  # later batches would find holes anyway: stop at the first miss
            return
        try:
            handle = self._open()
            entries = []
            for name, array in arrays.items():
                entries.append((name, handle.tell(), array.shape, array.dtype))
                np.ascontiguousarray(array).tofile(handle)
            handle.flush()
        except OSError:  # a full disk: what is recorded stays readable, the rest is run again
            self.full = True
            return
        self._where[_key(indices)] = entries
        self.used += size

    def take(self, indices) -> Optional[dict[str, np.ndarray]]:
        entries = self._where.pop(_key(indices), None)
        if entries is None:
            return None
        path = self._handle.name
        return {name: np.fromfile(path, dtype=dtype, count=int(np.prod(shape)), offset=offset).reshape(shape)
                for name, offset, shape, dtype in entries}

    def __len__(self) -> int:
        return len(self._where)

    def _open(self):
        if self._handle is None:
            from ..fileio import scratch_dir

            self._stack = contextlib.ExitStack()
            folder = self._stack.enter_context(scratch_dir("outputs"))
            self._handle = self._stack.enter_context(open(folder / "outputs.bin", "wb"))
        return self._handle

    def close(self) -> None:
        """Delete the file (the recorded batches not taken are gone)."""
        self._where.clear()
        if self._stack is not None:
            self._stack.close()
            self._stack = self._handle = None


def _key(indices) -> tuple:
    return tuple(int(i) for i in np.asarray(indices).reshape(-1))
