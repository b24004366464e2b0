"""The max calibrator (stage: quantize): amax = the largest |x| seen. No histogram needed."""

from __future__ import annotations

from .base import Calibrator, register


@register
class MaxCalibrator(Calibrator):
    method = "max"
    needs_histogram = False

    def amax(self, stats) -> float:
        return stats.absmax
