"""PyTorch backend (stage: runtime): the FP32 reference every artifact is compared with."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch

from .base import Runner


class TorchRunner(Runner):
    """Runs a module in eval mode under no_grad. Outputs are named `output_names` in the
    order the module returns them (a tensor, or a tuple for models exported with aux heads)."""

    name = "torch"

    def __init__(self, module: torch.nn.Module, input_name: str = "input",
                 output_names: Sequence[str] = ("logits",), device: str = "cpu") -> None:
        self.module = module
        self._input_name = input_name
        self._output_names = list(output_names)
        self.device = device

    def activate(self) -> None:
        self.module.eval().to(self.device)

    @property
    def input_names(self) -> list[str]:
        return [self._input_name]

    @property
    def output_names(self) -> list[str]:
        return self._output_names

    @torch.no_grad()
    def infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = torch.from_numpy(np.ascontiguousarray(feed[self._input_name])).to(self.device)
        result = self.module(x)
        tensors = result if isinstance(result, (tuple, list)) else (result,)
        return {name: t.detach().float().cpu().numpy() for name, t in zip(self._output_names, tensors)}
