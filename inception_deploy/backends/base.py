"""The one runner shape every backend has (stage: runtime).

A runner is a context manager with `infer(feed) -> outputs`, both dicts of numpy arrays
keyed by tensor name, in the spirit of Polygraphy's runners. Backends live one per file
and import their heavy library (torch, onnxruntime, tensorrt) only there.
"""

from __future__ import annotations

import abc
from typing import Mapping

import numpy as np


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
