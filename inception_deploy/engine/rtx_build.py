"""The TensorRT-RTX part of the builder and runner (stage: build-engine, runtime).

TensorRT-RTX has TensorRT's Python API under another module name (`tensorrt_rtx`), minus the
datacenter parts and plus two things used here: target compute capabilities named at build
time (the ahead-of-time build needs no GPU; one plan can carry several), and a runtime cache
for the kernels it compiles when a plan first runs. Its builder writes the engine's layer
report into the VERBOSE log (ProfilingVerbosity.DETAILED), which is how the CPU sees the
engine; the inspector would need the engine deserialized, which needs a GPU.

The timing cache is left alone: NVIDIA's TensorRT-RTX timing-cache migration note says it
has no effect on the engine and forces a GPU query during the build.

`tensorrt_rtx` is imported inside RTXHooks.load only; tests/test_engine_rtx.py checks every
name used here against the installed module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from ..errors import UserError
from ..fileio import atomic_path
from .layer_report import LayerReport, parse_builder_log
from .trt_build import BuildRequest, import_error


def runtime_cache_path(plan_path: str | Path) -> Path:
    """Where the runner keeps the kernels TensorRT-RTX compiled for a plan (beside it)."""
    plan_path = Path(plan_path)
    return plan_path.with_name(plan_path.name + ".rtxcache")


class RTXHooks:
    """TensorRT-RTX: compute-capability targets, no GPU to build, layers from the builder log."""

    reads_build_log = True

    def __init__(self) -> None:
        self._caches: dict[int, tuple] = {}  # id(context) -> (runtime config, runtime cache): they outlive it

    def load(self):
        from .flavours import TENSORRT_RTX

        try:
            import tensorrt_rtx as trt
        except ImportError as exc:
            raise import_error(TENSORRT_RTX, exc) from None
        return trt

    def network_flags(self, trt) -> int:
        return 0  # strongly typed is TensorRT-RTX's only mode

    def set_targets(self, trt, config, request: BuildRequest) -> list[str]:
        targets = list(request.compute_capabilities)
        config.num_compute_capabilities = len(targets)
        for index, name in enumerate(targets):
            capability = getattr(trt.ComputeCapability, name.upper(), None)
            if capability is None or not config.set_compute_capability(capability, index):
                raise UserError(f"TensorRT-RTX {trt.__version__} does not build for {name}; choose from "
                                f"{', '.join(m.lower() for m in trt.ComputeCapability.__members__ if m.startswith('SM'))}")
        return targets

    def set_build_cache(self, trt, config, request: BuildRequest) -> None:
        """No timing cache (see the module docstring)."""

    def build_cache_bytes(self, config) -> Optional[bytes]:
        return None

    def layer_report(self, trt, plan: bytes, logger) -> LayerReport:
        return parse_builder_log(logger.messages)

    def execution_context(self, trt, engine, plan_path: Path):
        """A context whose runtime cache is loaded from, and saved back beside, the plan."""
        config = engine.create_runtime_config()
        cache = config.create_runtime_cache()
        path = runtime_cache_path(plan_path)
        if path.is_file():
            cache.deserialize(path.read_bytes())  # False when made elsewhere: it starts empty then
        config.set_runtime_cache(cache)
        context = engine.create_execution_context(runtime_config=config)
        self._caches[id(context)] = (config, cache)
        return context

    def release_context(self, context, plan_path: Path) -> None:
        config, cache = self._caches.pop(id(context), (None, None))
        if cache is None:
            return
        try:
            with atomic_path(runtime_cache_path(plan_path)) as tmp:
                tmp.write_bytes(bytes(cache.serialize()))
        except OSError:
            pass  # a read-only plan folder: the kernels compile again next time


HOOKS = RTXHooks()
