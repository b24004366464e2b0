"""`inception-deploy benchmark MODEL`: p50/p90/p99 latency and throughput per batch (stage: runtime measurement)."""

from __future__ import annotations

import click

from .options import BACKEND_CHOICES, BACKEND_HELP, common_options, console, examples, resolve_backend, write_json


@click.command("benchmark", epilog=examples(
    "inception-deploy benchmark out/googlenet.int8.onnx --backend ort-cpu --batch 1,8,32",
    "inception-deploy benchmark out/googlenet-digits.int8.plan"))
@click.argument("model", required=False)
@click.option("--backend", type=click.Choice([*BACKEND_CHOICES, "torch"]), default="auto", show_default=True,
              help=BACKEND_HELP + "; torch: the recipe's PyTorch model (--recipe, --weights)")
@click.option("--batch", "batches", default="1,8,32", show_default=True, help="comma-separated batch sizes")
@click.option("--concurrency", default="1", show_default=True, metavar="N[,N...]",
              help="clients sending requests at once (ort-*, triton), e.g. 1,4")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=None, show_default="30",
              help="triton: seconds to wait for the server")
@click.option("--warmup", type=click.IntRange(min=0), default=5, show_default=True, help="untimed runs per batch size")
@click.option("--min-iterations", type=click.IntRange(min=1), default=10, show_default=True,
              help="timed runs per batch size at least")
@click.option("--min-seconds", type=click.FloatRange(min=0), default=1.0, show_default=True, help="time each batch size at least this long")
@click.option("--threads", type=click.IntRange(min=1), default=None, show_default="ONNX Runtime's choice",
              help="ONNX Runtime intra-op threads")
@click.option("--recipe", "-r", default=None, help="for --backend torch: the recipe (MODEL may name it instead)")
@click.option("--weights", "-w", default=None, help="for --backend torch: the checkpoint, or 'random'")
@common_options
def command(model, backend, batches, concurrency, timeout, warmup, min_iterations, min_seconds, threads, recipe, weights,
            json_path, quiet, verbose):
    """Measure latency (p50/p90/p99) and throughput of MODEL on one backend."""
    from ..benchmark import benchmark
    from ..errors import UserError

    try:
        sizes = [int(b) for b in batches.split(",") if b.strip()]
    except ValueError:
        raise UserError(f"--batch '{batches}': give comma-separated integers, e.g. 1,8,32") from None
    try:
        clients = [int(c) for c in concurrency.split(",") if c.strip()]
    except ValueError:
        raise UserError(f"--concurrency '{concurrency}': give comma-separated integers, e.g. 1,4") from None
    if backend != "torch":
        backend = resolve_backend(model, backend)
    if model is None and not (backend == "torch" and recipe):
        raise UserError("give MODEL (an .onnx or .plan file), or --backend torch with --recipe")
    result = benchmark(model, backend, sizes, warmup=warmup, min_iterations=min_iterations, min_seconds=min_seconds,
                       recipe=recipe, weights=weights, threads=threads, concurrency=clients, timeout=timeout)
    console(width=120).print(result.table())
    write_json(json_path, result.to_dict())
