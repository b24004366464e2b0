"""The one runner shape every backend has (stage: runtime).

A runner is a context manager with `infer(feed) -> outputs`, both dicts of numpy arrays
keyed by tensor name, in the spirit of Polygraphy's runners. Backends live one per file
and import their heavy library (torch, onnxruntime, tensorrt) only there.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

import numpy as np

from ..errors import UserError


@dataclass(frozen=True)
class InputSpec:
    """What a graph input takes: name, numpy dtype, shape (a str or None for a dynamic axis)."""

    name: str
    dtype: Optional[np.dtype]  # None: a type numpy has no name for
    shape: tuple

    def describe(self) -> str:
        dims = ", ".join(str(d) if d not in (None, "") else "?" for d in self.shape)
        return f"'{self.name}': {self.dtype if self.dtype is not None else '?'} [{dims}]"


def check_feed(feed: Mapping[str, np.ndarray], inputs: Sequence[InputSpec], what: str) -> None:
    """One UserError line naming the graph's expected input when `feed` does not fit it (a
    wrong name, dtype or shape), before a runtime answers with its own raw error."""
    expected = "; ".join(spec.describe() for spec in inputs)
    unknown = [name for name in feed if name not in {spec.name for spec in inputs}]
    missing = [spec for spec in inputs if spec.name not in feed]
    if unknown or missing:
        given = ", ".join(f"'{name}'" for name in feed) or "nothing"
        raise UserError(f"{what} takes input {expected}; it was fed {given}")
    for spec in inputs:
        array = feed[spec.name]
        if not isinstance(array, np.ndarray):
            raise UserError(f"{what}: input '{spec.name}' must be a numpy array ({type(array).__name__} given); "
                            f"it takes {spec.describe()}")
        if spec.dtype is not None and array.dtype != spec.dtype:
            raise UserError(f"{what}: input '{spec.name}' is {array.dtype}, the graph takes {spec.describe()}; "
                            f"cast it (array.astype(np.{spec.dtype}))")
        fits = len(array.shape) == len(spec.shape) and all(
            not isinstance(d, int) or d <= 0 or d == n for d, n in zip(spec.shape, array.shape))
        if not fits:
            raise UserError(f"{what}: input '{spec.name}' has shape {list(array.shape)}, the graph takes "
                            f"{spec.describe()}; use a recipe (--recipe) whose preprocessing size and layout match it")


class Runner(abc.ABC):
    """Base of all backends: `with runner: runner.infer({"input": x})`."""

    name: str = "runner"

    def __enter__(self) -> "Runner":
        self.activate()
        return self

    def __exit__(self, *exc) -> None:
        self.deactivate()

    def activate(self) -> None:  # load the model, create sessions / contexts
        pass

    def deactivate(self) -> None:  # free them
        pass

    @property
    @abc.abstractmethod
    def input_names(self) -> list[str]: ...

    @property
    @abc.abstractmethod
    def output_names(self) -> list[str]: ...

    @abc.abstractmethod
    def infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...
