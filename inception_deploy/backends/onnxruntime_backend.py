"""ONNX Runtime backend (stage: runtime): CPU by default, CUDA / TensorRT providers on request.

`create_session` is the one place an onnxruntime.InferenceSession is made, with the options
the project uses (quiet logs, intra-op threads, spinning, optimization level, extra graph
outputs): the runner below, calibration, equalization, bias correction, sensitivity and the
quantize self-check all take their sessions from it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping, Optional

import numpy as np

from ..errors import MissingDependency
from .base import InputSpec, Runner, check_feed

_PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}
OPTIMIZATION_LEVELS = ("disable", "basic", "all")


def create_session(model, provider: str = "cpu", threads: int | None = None, spinning: bool = True,
                   optimization: str = "all", extra_outputs: Iterable[str] = ()):
    """An InferenceSession for `model` (a path, serialized bytes or an onnx.ModelProto).

    threads: intra-op threads (None: ORT's default, one per core). spinning=False stops idle
    workers from busy-waiting, for callers that keep a core busy themselves (calibration
    folds statistics while ORT runs the next batch). extra_outputs: intermediate tensors the
    session also returns (added to the serialized model only; graph_utils.serialized_with_outputs)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[optimization]
    extra_outputs = list(extra_outputs)
    if extra_outputs:
        from ..graph_utils import serialized_with_outputs

        if not hasattr(model, "SerializeToString"):
            import onnx

            model = onnx.load(str(model)) if not isinstance(model, bytes) else onnx.load_from_string(model)
        model = serialized_with_outputs(model, extra_outputs)
    if hasattr(model, "SerializeToString"):
        model = model.SerializeToString()
    elif isinstance(model, Path):
        model = str(model)
    return ort.InferenceSession(model, sess_options=options, providers=_PROVIDERS[provider])


def run_batched(session, inputs: np.ndarray, batch_size: int = 64) -> dict[str, np.ndarray]:
    """Every output of `session` on `inputs`, run `batch_size` images at a time and concatenated."""
    names = [o.name for o in session.get_outputs()]
    input_name = session.get_inputs()[0].name
    chunks = [session.run(names, {input_name: inputs[i:i + batch_size]}) for i in range(0, len(inputs), batch_size)]
    return {name: np.concatenate([c[k] for c in chunks]) for k, name in enumerate(names)}


def run_concurrently(session, wanted: list[str], feeds: Iterable, workers: int):
    """Yield `session.run(wanted)` on each array of `feeds` (the session's first input), in
    order, up to `workers` runs at once.

    ONNX Runtime's Run is
    thread-safe and releases the GIL, so a single-threaded session run from `workers` threads
    uses that many cores. Its unoptimized kernels (the exact Q/DQ mode) scale poorly over
    intra-op threads: 450 digits through the INT8 GoogLeNet took 2.0-2.2 s with 2 threads,
    1.3-1.7 s as two single-threaded runs at once (2.5-2.9 s on one core). At most `workers`
    runs are in flight and a result is yielded before the next run starts beyond them, so
    memory does not grow with the number of feeds."""
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    name = session.get_inputs()[0].name
    if workers <= 1:
        for x in feeds:
            yield session.run(wanted, {name: x})
        return
    pending = deque()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for x in feeds:
            if len(pending) >= workers:
                yield pending.popleft().result()
            pending.append(pool.submit(session.run, wanted, {name: x}))
        while pending:
            yield pending.popleft().result()


class OnnxRuntimeRunner(Runner):
    name = "onnxruntime"

    def __init__(self, model: str | Path | bytes, provider: str = "cpu", threads: int | None = None,
                 optimization: str = "all") -> None:
        self.model = model
        self.provider = provider
        self.threads = threads
        self.optimization = optimization
        self.session = None
        self._specs = None

    def activate(self) -> None:
        self.session = create_session(self.model, self.provider, self.threads, optimization=self.optimization)
        providers = _PROVIDERS[self.provider]
        if self.provider != "cpu" and self.session.get_providers()[0] != providers[0]:
            # ORT falls back to the CPU silently; a user who asked for a GPU must know.
            raise MissingDependency(
                f"ONNX Runtime could not start {providers[0]} here (no GPU or missing CUDA libraries); "
                "use --backend ort-cpu or run on a GPU machine with onnxruntime-gpu"
            )

    def deactivate(self) -> None:
        self.session, self._specs = None, None

    @property
    def input_names(self) -> list[str]:
        return [i.name for i in self.session.get_inputs()]

    @property
    def output_names(self) -> list[str]:
        return [o.name for o in self.session.get_outputs()]

    @property
    def input_specs(self) -> list[InputSpec]:
        if self._specs is None:
            self._specs = [InputSpec(i.name, _numpy_dtype(i.type), tuple(i.shape)) for i in self.session.get_inputs()]
        return self._specs

    def infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        check_feed(feed, self.input_specs, self._what())
        outputs = self.session.run(None, dict(feed))
        return dict(zip(self.output_names, outputs))

    def _what(self) -> str:
        return str(self.model) if isinstance(self.model, (str, Path)) else "the graph"


def _numpy_dtype(ort_type: str) -> Optional[np.dtype]:
    """ONNX Runtime's 'tensor(float)' -> float32 ('tensor(bfloat16)' has no numpy name: None)."""
    name = ort_type.removeprefix("tensor(").removesuffix(")")
    name = {"float": "float32", "double": "float64"}.get(name, name)
    try:
        return np.dtype(name)
    except TypeError:
        return None
