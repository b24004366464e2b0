"""ONNX Runtime backend (stage: runtime): CPU by default, CUDA / TensorRT providers on request."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

from ..errors import MissingDependency
from .base import Runner

_PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}


class OnnxRuntimeRunner(Runner):
    name = "onnxruntime"

    def __init__(self, model: str | Path | bytes, provider: str = "cpu", threads: int | None = None,
                 optimization: str = "all") -> None:
        self.model = model
        self.provider = provider
        self.threads = threads
        self.optimization = optimization
        self.session = None

    def activate(self) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        if self.threads:
            options.intra_op_num_threads = self.threads
        options.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[self.optimization]
        providers = _PROVIDERS[self.provider]
        model = str(self.model) if isinstance(self.model, Path) else self.model
        self.session = ort.InferenceSession(model, sess_options=options, providers=providers)
        if self.provider != "cpu" and self.session.get_providers()[0] != providers[0]:
            # ORT falls back to the CPU silently; a user who asked for a GPU must know.
            raise MissingDependency(
                f"ONNX Runtime could not start {providers[0]} here (no GPU or missing CUDA libraries); "
                "use --backend ort-cpu or run on a GPU machine with onnxruntime-gpu"
            )

    def deactivate(self) -> None:
        self.session = None

    @property
    def input_names(self) -> list[str]:
        return [i.name for i in self.session.get_inputs()]

    @property
    def output_names(self) -> list[str]:
        return [o.name for o in self.session.get_outputs()]

    def infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        outputs = self.session.run(None, dict(feed))
        return dict(zip(self.output_names, outputs))
