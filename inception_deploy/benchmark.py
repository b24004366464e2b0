"""`benchmark`: latency and throughput of one artifact on one backend (stage: runtime measurement).

Warm-up runs first (session and allocator set-up, TensorRT tactic caches), then timed
runs until both a minimum count and a minimum time are reached; p50/p90/p99 latency per
batch and throughput = batch / median latency. Inputs are random normal values in the
model's input shape and type: speed does not depend on the pixels.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from .errors import UserError

BACKENDS = ("ort-cpu", "ort-cuda", "tensorrt", "torch")


@dataclass
class BenchmarkRow:
    batch: int
    iterations: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    throughput: float  # images per second at the median latency


@dataclass
class BenchmarkResult:
    model: str
    backend: str
    input_shape: list
    warmup: int
    rows: list[BenchmarkRow] = field(default_factory=list)
    libraries: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    def table(self):
        from rich.table import Table

        table = Table(title=f"{self.model} on {self.backend} (input {self.input_shape}, {self.warmup} warm-up runs)")
        for col in ("batch", "runs", "p50 ms", "p90 ms", "p99 ms", "mean ms", "images/s"):
            table.add_column(col, justify="right")
        for r in self.rows:
            table.add_row(str(r.batch), str(r.iterations), f"{r.p50_ms:.2f}", f"{r.p90_ms:.2f}", f"{r.p99_ms:.2f}",
                          f"{r.mean_ms:.2f}", f"{r.throughput:.1f}")
        return table


def _input_spec(model_path: Path):
    import onnx

    from .artifact import load_onnx
    from .onnx_reader import first_graph_input

    model = load_onnx(model_path, missing="model not found: {path}", load_external_data=False).model
    graph_input = first_graph_input(model)
    dims = [d.dim_value if d.HasField("dim_value") else None for d in graph_input.type.tensor_type.shape.dim]
    dtype = onnx.helper.tensor_dtype_to_np_dtype(graph_input.type.tensor_type.elem_type)
    if any(d is None for d in dims[1:]):
        raise UserError(f"{model_path}: input '{graph_input.name}' has unknown dims {dims}; export it with a fixed image size")
    return dims, dtype


def time_runner(runner, make_input, batch: int, warmup: int, min_iterations: int, min_seconds: float) -> BenchmarkRow:
    feed = {runner.input_names[0]: make_input(batch)}
    for _ in range(warmup):
        runner.infer(feed)
    times = []
    start = time.perf_counter()
    while len(times) < min_iterations or (time.perf_counter() - start < min_seconds and len(times) < 10_000):
        t0 = time.perf_counter()
        runner.infer(feed)
        times.append(time.perf_counter() - t0)
    ms = np.asarray(times) * 1e3
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return BenchmarkRow(batch, len(times), float(p50), float(p90), float(p99), float(ms.mean()), batch / (p50 / 1e3))


def benchmark(model, backend: str = "ort-cpu", batches: Sequence[int] = (1, 8, 32), warmup: int = 5,
              min_iterations: int = 10, min_seconds: float = 1.0, recipe=None, weights=None,
              threads: Optional[int] = None) -> BenchmarkResult:
    """Benchmark `model` (an .onnx / .plan file; for backend 'torch', a recipe name with `weights`)."""
    from .backends import open_runner
    from .manifest import library_versions

    if backend not in BACKENDS:
        raise UserError(f"unknown backend '{backend}'; choose one of {', '.join(BACKENDS)}")
    if not batches or min(batches) < 1:
        raise UserError(f"--batch {list(batches)}: give positive batch sizes, e.g. 1,8,32")
    rng = np.random.default_rng(0)
    if backend == "torch":
        from .backends.torch_backend import TorchRunner
        from .recipes import resolve_recipe
        from .reference import load_reference

        recipe = resolve_recipe(recipe or model)
        reference = load_reference(recipe, weights, progress=False)
        shape, dtype = [None, 3, *recipe.input_hw], np.float32
        runner = TorchRunner(reference.module, recipe.export.input_name, [recipe.export.output_name])
        name = f"{recipe.name} ({reference.weights})"
    else:
        path = Path(model)
        if not path.is_file():
            raise UserError(f"model not found: {path}")
        if path.suffix in (".plan", ".engine"):
            if backend != "tensorrt":
                raise UserError(f"{path} is a TensorRT plan; use --backend tensorrt")
            shape, dtype = None, np.float32
        elif backend == "tensorrt":
            raise UserError(f"--backend tensorrt runs TensorRT plans; build one with `inception-deploy build-engine {path}`")
        else:
            shape, dtype = _input_spec(path)
        options = {"threads": threads} if backend.startswith("ort") and threads else {}
        runner = open_runner(path, backend, **options)
        name = str(path)

    with runner:
        if shape is None:  # a plan: its runner knows the input shape
            shape = list(getattr(runner, "input_shape", None) or [None, 3, 224, 224])
        fixed_batch = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
        wrong = [b for b in batches if fixed_batch is not None and b != fixed_batch]
        if wrong:
            raise UserError(f"{name} has a fixed batch of {fixed_batch}; --batch {wrong[0]} does not fit (export with a dynamic batch)")

        def make_input(batch: int) -> np.ndarray:
            return rng.standard_normal((batch, *shape[1:])).astype(dtype)

        result = BenchmarkResult(name, backend, ["N", *shape[1:]], warmup, libraries=library_versions())
        for batch in batches:
            result.rows.append(time_runner(runner, make_input, batch, warmup, min_iterations, min_seconds))
    return result
