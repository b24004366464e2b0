"""Runtime backends behind one runner shape (stage: runtime): torch, onnxruntime, tensorrt, triton.

`open_runner(artifact, backend)` picks the backend for an artifact: a torch module, an
.onnx file (ONNX Runtime, CPU by default), a TensorRT .plan, or a served model
(triton://HOST:PORT/MODEL: the Triton endpoint).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from .base import Runner

BACKENDS = ("torch", "ort-cpu", "ort-cuda", "ort-tensorrt", "tensorrt", "triton")


def open_runner(artifact, backend: str | None = None, **options) -> Runner:
    """A runner for `artifact` (not yet entered). backend None: chosen from the artifact."""
    if not isinstance(artifact, (str, Path)):
        from .torch_backend import TorchRunner

        return TorchRunner(artifact, **options)
    from ..serving.endpoint import is_endpoint

    if is_endpoint(artifact) or backend == "triton":
        if backend not in (None, "triton") or not is_endpoint(artifact):
            raise UserError(f"{artifact}: the triton backend runs served models (triton://HOST:PORT/MODEL), and a "
                            "served model runs only there")
        from .triton_backend import TritonRunner

        return TritonRunner(artifact, **options)
    path = Path(artifact)
    if not path.is_file():
        raise UserError(f"artifact not found: {path}")
    if backend is None:
        from ..engine.plan_files import is_plan  # inside: the engine package's import is not light

        backend = "tensorrt" if is_plan(path) else "ort-cpu"
    if backend == "tensorrt":
        from .tensorrt_backend import TensorRTRunner

        return TensorRTRunner(path, **options)
    if backend.startswith("ort"):
        from .onnxruntime_backend import OnnxRuntimeRunner

        provider = {"ort-cpu": "cpu", "ort-cuda": "cuda", "ort-tensorrt": "tensorrt"}.get(backend)
        if provider is None:
            raise UserError(f"unknown backend '{backend}'; choose one of {', '.join(BACKENDS)}")
        return OnnxRuntimeRunner(path, provider=provider, **options)
    raise UserError(f"unknown backend '{backend}'; choose one of {', '.join(BACKENDS)}")


__all__ = ["BACKENDS", "Runner", "open_runner"]
