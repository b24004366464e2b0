"""Calibrators by method name (stage: quantize): statistics of a tensor -> the amax of its int8 scale.

One calibrator per file, registered here under its method name. The registry is the one
list of methods: the recipe schema (calibration.method), the CLI's --calib-method choices
and the unknown-method error all read `METHODS`. To add one, copy max_abs.py (no histogram) or
percentile.py (histogram), give it a `method` name, and import it below.

Written here because onnxruntime's calibrators are not usable for this (measured: its
Entropy returns the MinMax scales and needs 7 GB for 64 Inception v3 images).
"""

from __future__ import annotations

from .base import Calibrator, register
from .base import REGISTRY as _REGISTRY
from . import max_abs, percentile, entropy, mse  # noqa: E402,F401 - register the built-in calibrators (in this order)
from .entropy import EntropyCalibrator
from .max_abs import MaxCalibrator
from .mse import MseCalibrator
from .percentile import PercentileCalibrator

METHODS: tuple[str, ...] = tuple(_REGISTRY)


def make_calibrator(method: str, calibration=None) -> Calibrator:
    """The calibrator for `method`, configured from a recipe's calibration section (None: defaults)."""
    from ...errors import UserError

    cls = _REGISTRY.get(method)
    if cls is None:
        raise UserError(unknown_method_message(method))
    return cls.from_recipe(calibration) if calibration is not None else cls()


def unknown_method_message(method: str) -> str:
    return f"unknown calibration method '{method}'; choose one of {', '.join(_REGISTRY)}"


__all__ = ["METHODS", "Calibrator", "EntropyCalibrator", "MaxCalibrator", "MseCalibrator", "PercentileCalibrator",
           "make_calibrator", "register", "unknown_method_message"]
