"""The percentile calibrator (stage: quantize): amax = the |x| below which `percentile` % of values lie."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .base import Calibrator, register


@register
@dataclass
class PercentileCalibrator(Calibrator):
    percentile: float = 99.99
    method = "percentile"

    def amax(self, stats) -> float:
        hist, width = stats.used_histogram()
        if width == 0.0:
            return stats.absmax
        # Over all values, zeros included (they sit below every threshold).
        cdf = (stats.zeros + np.cumsum(hist)) / (stats.zeros + hist.sum())
        index = int(np.searchsorted(cdf, self.percentile / 100.0))
        return min(stats.absmax, (index + 1) * width)

    def params(self) -> dict:
        return {"percentile": self.percentile}

    @classmethod
    def from_recipe(cls, calibration) -> "PercentileCalibrator":
        return cls(calibration.percentile)
