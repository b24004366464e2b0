"""`benchmark`: latency and throughput of one artifact on one backend (stage: runtime measurement).

Warm-up runs first (session and allocator set-up, TensorRT tactic caches), then timed
runs until both a minimum count and a minimum time are reached; p50/p90/p99 latency per
batch and throughput = batch / median latency. With concurrency N > 1, N clients send
requests back to back at once (threads; each its own connection to a Triton endpoint, one
shared session in-process, as an in-process server would have) and throughput is the
images answered per second of wall time. Inputs are random normal values in the model's
input shape and type: speed does not depend on the pixels. A triton:// MODEL is measured
through the endpoint (--backend triton), network and server scheduling included.
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from .errors import UserError

BACKENDS = ("ort-cpu", "ort-cuda", "tensorrt", "torch", "triton")
CONCURRENT_BACKENDS = ("ort-cpu", "ort-cuda", "triton")  # runners that may be called from several threads


@dataclass
class BenchmarkRow:
    batch: int
    iterations: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    throughput: float  # images per second: at the median latency, or over the wall time for concurrency > 1
    concurrency: int = 1  # clients sending requests at once


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
        for col in ("batch", "clients", "runs", "p50 ms", "p90 ms", "p99 ms", "mean ms", "images/s"):
            table.add_column(col, justify="right")
        for r in self.rows:
            table.add_row(str(r.batch), str(r.concurrency), str(r.iterations), f"{r.p50_ms:.2f}", f"{r.p90_ms:.2f}",
                          f"{r.p99_ms:.2f}", f"{r.mean_ms:.2f}", f"{r.throughput:.1f}")
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


def time_concurrent(open_client, count: int, make_input, batch: int, warmup: int, min_iterations: int,
                    min_seconds: float) -> BenchmarkRow:
    """`count` clients (threads) calling infer back to back at once, each at least min_iterations times
    and min_seconds long; latency percentiles over all requests, throughput over the wall time.

    open_client() gives a context manager yielding a runner; it is entered in the client's own thread
    (tritonclient's HTTP client runs on gevent, whose connections belong to the thread that made them)."""
    times: list[list[float]] = [[] for _ in range(count)]
    errors: list[BaseException] = []
    start_line = threading.Barrier(count + 1)

    def client(index: int) -> None:
        try:
            with open_client() as runner:
                feed = {runner.input_names[0]: make_input(batch)}
                for _ in range(warmup):
                    runner.infer(feed)
                start_line.wait()
                mine, started = times[index], time.perf_counter()
                while len(mine) < min_iterations or (time.perf_counter() - started < min_seconds
                                                     and len(mine) < 10_000):
                    t0 = time.perf_counter()
                    runner.infer(feed)
                    mine.append(time.perf_counter() - t0)
        except threading.BrokenBarrierError:
            pass  # another client failed first
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            errors.append(exc)
            start_line.abort()

    workers = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(count)]
    for worker in workers:
        worker.start()
    try:
        start_line.wait()
    except threading.BrokenBarrierError:
        pass
    began = time.perf_counter()
    for worker in workers:
        worker.join()
    wall = time.perf_counter() - began
    if errors:
        raise errors[0]
    ms = np.concatenate([np.asarray(t) for t in times]) * 1e3
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return BenchmarkRow(batch, len(ms), float(p50), float(p90), float(p99), float(ms.mean()), batch * len(ms) / wall,
                        concurrency=count)


def benchmark(model, backend: str = "ort-cpu", batches: Sequence[int] = (1, 8, 32), warmup: int = 5,
              min_iterations: int = 10, min_seconds: float = 1.0, recipe=None, weights=None,
              threads: Optional[int] = None, concurrency: Sequence[int] = (1,),
              timeout: Optional[float] = None) -> BenchmarkResult:
    """Benchmark `model` (an .onnx / .plan file; for backend 'torch', a recipe name with `weights`;
    for backend 'triton', a triton://HOST:PORT/MODEL endpoint) at each batch size and concurrency."""
    from .backends import open_runner
    from .manifest import library_versions
    from .serving.endpoint import is_endpoint

    if backend not in BACKENDS:
        raise UserError(f"unknown backend '{backend}'; choose one of {', '.join(BACKENDS)}")
    if not batches or min(batches) < 1:
        raise UserError(f"--batch {list(batches)}: give positive batch sizes, e.g. 1,8,32")
    concurrency = list(concurrency) or [1]
    if min(concurrency) < 1:
        raise UserError(f"--concurrency {concurrency}: give positive client counts, e.g. 1,4")
    if max(concurrency) > 1 and backend not in CONCURRENT_BACKENDS:
        raise UserError(f"--concurrency {max(concurrency)}: concurrent clients are measured on "
                        f"{', '.join(CONCURRENT_BACKENDS)}; {backend} runs one request at a time here")
    if (backend == "triton") != is_endpoint(model):
        raise UserError(f"--backend triton measures a served model: give MODEL as triton://HOST:PORT/MODEL"
                        if backend == "triton" else f"{model} is a served model; measure it with --backend triton")
    rng = np.random.default_rng(0)
    dtype = None
    if backend == "triton":
        from .backends.triton_backend import open_triton_runner

        runner = open_triton_runner(model, timeout)
        shape, name = None, str(runner.endpoint)
    elif backend == "torch":
        from .backends.torch_backend import TorchRunner
        from .recipes import resolve_recipe
        from .reference import load_reference

        recipe = resolve_recipe(recipe or model)
        reference = load_reference(recipe, weights, progress=False)
        shape, dtype = [None, 3, *recipe.input_hw], np.float32
        runner = TorchRunner(reference.module, recipe.export.input_name, [recipe.export.output_name])
        name = f"{recipe.name} ({reference.weights})"
    else:
        from .engine.plan_files import is_plan

        path = Path(model)
        if not path.is_file():
            raise UserError(f"model not found: {path}")
        if is_plan(path):
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

    import contextlib

    with runner:
        if backend == "triton":  # one connection per client, as separate clients would have
            def open_client():
                return open_triton_runner(model, timeout)
        else:  # in-process: the clients share the one session, as an in-process server would
            def open_client():
                return contextlib.nullcontext(runner)
        if dtype is None:  # an endpoint: the server states its input type
            dtype = runner.input_dtype
        if shape is None:  # a plan or an endpoint: its runner knows the input shape
            shape = list(getattr(runner, "input_shape", None) or [None, 3, 224, 224])
        fixed_batch = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
        wrong = [b for b in batches if fixed_batch is not None and b != fixed_batch]
        if wrong:
            raise UserError(f"{name} has a fixed batch of {fixed_batch}; --batch {wrong[0]} does not fit (export with a dynamic batch)")

        def make_input(batch: int) -> np.ndarray:
            return rng.standard_normal((batch, *shape[1:])).astype(dtype)

        result = BenchmarkResult(name, backend, ["N", *shape[1:]], warmup, libraries=library_versions())
        for batch in batches:
            for count in concurrency:
                if count == 1:
                    row = time_runner(runner, make_input, batch, warmup, min_iterations, min_seconds)
                else:
                    row = time_concurrent(open_client, count, make_input, batch, warmup, min_iterations, min_seconds)
                result.rows.append(row)
    return result
