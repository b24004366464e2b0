"""The calibration images (stage: quantize): chosen once, preprocessed once, streamed to every step.

Equalization, calibration, the FP16 range check and bias correction all read the same
images: a deterministic, class-stratified choice of `count` images of the source (by the
recipe's calibration seed), through the recipe's one preprocessing function. The first
pass reads and preprocesses them; with `keep`, it also spills the preprocessed batches to a
temporary file, and later passes read them back from there instead of decoding again. Only
one batch is ever in memory, so memory stays flat in the image count (the spill file lives
on disk and is deleted with the set).
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

from ..errors import UserError

log = logging.getLogger(__name__)


@dataclass
class CalibrationData:
    """What was streamed: enough to name it in a cache and to refuse a mismatch."""

    source: str
    requested: int
    used: int = 0
    skipped: list[str] = field(default_factory=list)
    items: list[str] = field(default_factory=list)


class CalibrationSet:
    """`count` images of `source` for the recipe's calibration (None: all of them)."""

    def __init__(self, recipe, source: str, count: Optional[int] = None, allow_fewer: bool = False,
                 keep: bool = False) -> None:
        from ..data import open_dataset

        self.recipe, self.source, self.count, self.allow_fewer, self.keep = recipe, str(source), count, allow_fewer, keep
        self.dataset = open_dataset(source, recipe.preprocessing, seed=recipe.calibration.seed)
        self._info: Optional[CalibrationData] = None
        self._indices: Optional[np.ndarray] = None
        self._spill: Optional[contextlib.ExitStack] = None  # holds the scratch folder (fileio.scratch_dir)
        self._folder: Optional[Path] = None
        self._stored: list[int] = []  # dataset indices in the spill file, in order
        self._shape: Optional[tuple] = None
        self.batch_indices: list[np.ndarray] = []  # the dataset indices of each batch of the current pass

    @property
    def info(self) -> CalibrationData:
        """The chosen images (chosen on first use: a step that needs only a subset never asks
        for more images than the source has); `used` and `skipped` are known after a pass."""
        if self._info is None:
            indices = self._choose(self.count)
            self._indices = indices
            self._info = CalibrationData(source=self.source, requested=len(indices) if self.count is None else self.count,
                                         items=[self.dataset.describe_item(int(i)) for i in indices])
        return self._info

    def _choose(self, count: Optional[int]) -> np.ndarray:
        from ..data import choose_indices

        return choose_indices(self.dataset, count, seed=self.recipe.calibration.seed, allow_fewer=self.allow_fewer)

    def __enter__(self) -> "CalibrationSet":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._spill is not None:
            self._spill.close()
            self._spill = self._folder = None

    def batches(self, batch_size: int) -> Iterator[np.ndarray]:
        """The preprocessed images, `batch_size` at a time, in dataset order (batch k's dataset
        indices in batch_indices[k] once it is yielded)."""
        self.batch_indices = []
        if self._spilled:
            yield from self._read_spill(list(range(len(self._stored))), batch_size)
            return
        info = self.info
        spill = self._open_spill() if self.keep else None
        try:
            yield from self._stream(self._indices, batch_size, info, spill)
        finally:
            if spill is not None:
                spill.close()

    def chosen(self, count: int) -> np.ndarray:
        """The dataset indices array(count) reads (a class-balanced subset of the set)."""
        return self._choose(count)

    def array(self, count: int) -> np.ndarray:
        """A class-balanced `count` of these images in memory (the first `count` the seed picks:
        a subset of the set), for steps that go over them many times (bias correction)."""
        return self.rows(count)[0]

    def rows(self, count: int) -> tuple[np.ndarray, np.ndarray]:
        """array(count), and the dataset index of each of its rows (unreadable images are skipped)."""
        chosen = self._choose(count)
        during = self.batch_indices  # a pass's record stays as it was
        self.batch_indices = []
        try:
            images = self._array(chosen)
            return images, np.concatenate(self.batch_indices).astype(np.int64)
        finally:
            self.batch_indices = during

    def _array(self, chosen: np.ndarray) -> np.ndarray:
        if self._spilled:
            position = {index: k for k, index in enumerate(self._stored)}
            batches = self._read_spill([position[int(i)] for i in chosen if int(i) in position], 64)
        else:
            info = CalibrationData(self.source, len(chosen), items=[self.dataset.describe_item(int(i)) for i in chosen])
            batches = self._stream(chosen, self.recipe.calibration.batch_size, info, None)
        return np.concatenate(list(batches))

    @property
    def _spilled(self) -> bool:
        return self._spill is not None and self._shape is not None

    def _stream(self, indices, batch_size: int, info: CalibrationData, spill) -> Iterator[np.ndarray]:
        """Read and preprocess `indices` from the dataset (writing each batch to `spill` when
        given), then refuse the pass when too few images were readable."""
        info.used, stored = 0, []
        skipped_before = len(self.dataset.skipped)
        for inputs, _, idx in self.dataset.batches(self.recipe.preprocessing, batch_size, indices):
            info.used += len(idx)
            self.batch_indices.append(np.asarray(idx))
            if spill is not None:
                inputs.tofile(spill)
                stored += [int(i) for i in idx]
            yield inputs
        info.skipped = list(self.dataset.skipped[skipped_before:])
        if spill is not None:
            self._stored, self._shape = stored, (inputs.shape[1:] if stored else None)
        self._check_counts(info)

    def _check_counts(self, info: CalibrationData) -> None:
        if info.used == 0:
            raise UserError(f"{self.source}: no usable calibration images ({len(info.skipped)} unreadable); "
                            "give a folder or array file of readable images")
        if info.skipped:
            log.warning("calibration skipped %d unreadable image(s) of %s", len(info.skipped), self.source)
            if info.used < info.requested and not self.allow_fewer:
                raise UserError(f"{self.source}: only {info.used} of the {info.requested} calibration images were "
                                f"readable ({len(info.skipped)} skipped, first: {info.skipped[0]}); "
                                "fix or remove them, lower --calib-count, or pass --allow-fewer")

    def _open_spill(self):
        from ..fileio import scratch_dir

        self.close()  # a pass that was not read to its end left an incomplete spill
        self._spill = contextlib.ExitStack()
        self._folder = self._spill.enter_context(scratch_dir("calibration"))
        return open(self._folder / "images.f32", "wb")

    def _read_spill(self, positions: list[int], batch_size: int) -> Iterator[np.ndarray]:
        """Images at these positions of the spill file (consecutive runs read in one call)."""
        per_image = int(np.prod(self._shape))
        with open(self._folder / "images.f32", "rb") as handle:
            for start in range(0, len(positions), batch_size):
                part = positions[start:start + batch_size]
                self.batch_indices.append(np.asarray([self._stored[p] for p in part]))
                batch = np.empty((len(part), per_image), dtype=np.float32)
                if part == list(range(part[0], part[0] + len(part))):
                    handle.seek(part[0] * per_image * 4)
                    handle.readinto(batch)
                else:
                    for row, position in enumerate(part):
                        handle.seek(position * per_image * 4)
                        handle.readinto(batch[row])
                yield batch.reshape(len(part), *self._shape)
