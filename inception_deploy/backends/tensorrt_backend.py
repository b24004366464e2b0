"""TensorRT engine backend (stage: runtime, GPU only): runs a .plan with the shared runner shape.

Opens plans of both builders: TensorRT 10/11 plans with `tensorrt`, TensorRT-RTX plans with
`tensorrt_rtx` (the manifest says which; RTX contexts get a runtime cache kept beside the
plan, so kernels compile once). Deserializes the plan after checking its manifest (same
builder version; the same GPU, or one of the plan's compute capabilities), binds I/O by
tensor name (set_tensor_address + execute_async_v3) on torch CUDA tensors, in torch's
current stream. The module is imported in activate() only; where it or a GPU is missing,
activate() raises MissingDependency with the install line.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Mapping

import numpy as np

from ..engine.cuda_memory import (empty_device, gpu_identity, host_array, numpy_dtype, stream_handle, synchronize,
                                  to_device, to_host)
from ..engine.environment import plan_flavour, require_to_run
from ..engine.manifest import check_runtime_compatibility, read_manifest
from ..engine.trt_build import new_context, open_module, release_context
from ..errors import InceptionDeployError, UserError
from ..fileio import sha256_bytes
from .base import Runner

if TYPE_CHECKING:  # the API this file is written against; check_api.py reads every trt.* name below
    import tensorrt as trt  # noqa: F401


class TensorRTRunner(Runner):
    name = "tensorrt"

    def __init__(self, plan: str | Path, device: int = 0) -> None:
        self.plan_path = Path(plan)
        self.device = device
        self.manifest = None
        self._runtime = self._engine = self._context = self._hooks = None
        self._inputs: list[str] = []
        self._outputs: list[str] = []
        self._dtypes: dict[str, type] = {}

    def activate(self) -> None:
        self.manifest = read_manifest(self.plan_path)
        flavour = plan_flavour(self.manifest)
        require_to_run(flavour, f"running {self.plan_path}")
        trt, self._hooks = open_module(flavour)

        plan = self.plan_path.read_bytes()
        if self.manifest is not None:
            check_runtime_compatibility(self.plan_path, self.manifest, sha256_bytes(plan), trt.__version__,
                                        *gpu_identity(self.device))
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self._engine = self._runtime.deserialize_cuda_engine(plan)
        if self._engine is None:
            raise UserError(f"{self.plan_path}: {flavour.title} {trt.__version__} cannot deserialize this plan (not a "
                            "plan, or built by another version or for another GPU); rebuild it here with "
                            "`inception-deploy build-engine`")
        self._context = new_context(self._hooks, trt, self._engine, self.plan_path)
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        self._inputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self._outputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self._dtypes = {n: numpy_dtype(self._engine.get_tensor_dtype(n).name) for n in names}

    def deactivate(self) -> None:
        if self._context is not None:
            release_context(self._hooks, self._context, self.plan_path)
        self._context = self._engine = self._runtime = None

    @property
    def input_names(self) -> list[str]:
        return list(self._inputs) if self._engine is not None else list(self._manifest_or_fail().inputs)

    @property
    def output_names(self) -> list[str]:
        return list(self._outputs) if self._engine is not None else list(self._manifest_or_fail().outputs)

    def _manifest_or_fail(self):
        manifest = self.manifest or read_manifest(self.plan_path)
        if manifest is None:
            raise UserError(f"{self.plan_path}: tensor names are known once the runner is active (no manifest beside it)")
        return manifest

    def infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._context is None:
            raise InceptionDeployError("TensorRTRunner.infer called outside `with runner:`")
        missing = [n for n in self._inputs if n not in feed]
        if missing:
            raise UserError(f"{self.plan_path}: feed lacks input(s) {', '.join(missing)}")
        keep_alive = []  # device buffers must outlive the asynchronous execution
        for name in self._inputs:
            array = host_array(feed[name], self._dtypes[name], name)
            if not self._context.set_input_shape(name, array.shape):
                raise UserError(self._shape_message(name, array.shape))
            tensor = to_device(array, self.device)
            self._context.set_tensor_address(name, tensor.data_ptr())
            keep_alive.append(tensor)
        outputs = {}
        for name in self._outputs:
            tensor = empty_device(self._context.get_tensor_shape(name), self._dtypes[name], self.device)
            self._context.set_tensor_address(name, tensor.data_ptr())
            outputs[name] = tensor
        if not self._context.execute_async_v3(stream_handle(self.device)):
            raise InceptionDeployError(f"{self.plan_path}: TensorRT failed to run the engine (see its log above)")
        synchronize(self.device)
        return {name: to_host(tensor) for name, tensor in outputs.items()}

    def _shape_message(self, name: str, shape) -> str:
        profile = (self.manifest.profile.get(name) if self.manifest is not None else None) or {}
        allowed = f" (profile: min {profile['min']}, max {profile['max']})" if profile else ""
        return (f"{self.plan_path}: input '{name}' of shape {list(shape)} is outside the engine's "
                f"optimization profile{allowed}; rebuild with a wider --min-batch/--max-batch")
