"""The calibrator interface and its registry (stage: quantize)."""

from __future__ import annotations

from typing import ClassVar

INT8_MAX = 127
REGISTRY: dict[str, type["Calibrator"]] = {}


class Calibrator:
    """Turns a tensor's statistics (statistics.TensorStats) into the amax its symmetric int8
    scale covers. `needs_histogram`: whether collection must keep the |x| histogram."""

    method: ClassVar[str] = "base"
    needs_histogram: ClassVar[bool] = True

    def amax(self, stats) -> float:
        raise NotImplementedError

    def params(self) -> dict:
        """What the calibration cache records (a cache made with other params is not reused)."""
        return {}

    @classmethod
    def from_recipe(cls, calibration) -> "Calibrator":
        """This calibrator configured from a recipe's calibration section."""
        return cls()


def register(cls: type[Calibrator]) -> type[Calibrator]:
    """Class decorator: make a calibrator available by its `method` name."""
    if not cls.method or cls.method == "base":
        raise ValueError(f"{cls.__name__} has no method name")
    REGISTRY[cls.method] = cls
    return cls
