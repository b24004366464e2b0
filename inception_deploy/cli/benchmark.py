"""`inception-deploy benchmark MODEL`: p50/p90/p99 latency and throughput per batch (stage: runtime measurement)."""

from __future__ import annotations

import click


@click.command("benchmark")
@click.argument("model", required=False)
@click.option("--backend", type=click.Choice(["ort-cpu", "ort-cuda", "tensorrt", "torch", "triton"]), default="ort-cpu",
              show_default=True, help="triton: MODEL is a served model, triton://HOST:PORT/MODEL (picked for such a MODEL)")
@click.option("--batch", "batches", default="1,8,32", show_default=True, help="comma-separated batch sizes")
@click.option("--concurrency", default="1", show_default=True, metavar="N[,N...]",
              help="clients sending requests at once (ort-*, triton), e.g. 1,4")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=None, help="triton: seconds to wait for the server [30]")
@click.option("--warmup", type=click.IntRange(min=0), default=5, show_default=True, help="untimed runs per batch size")
@click.option("--min-iterations", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--min-seconds", type=click.FloatRange(min=0), default=1.0, show_default=True, help="time each batch size at least this long")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="ONNX Runtime intra-op threads")
@click.option("--recipe", "-r", default=None, help="for --backend torch: the recipe (MODEL may name it instead)")
@click.option("--weights", "-w", default=None, help="for --backend torch: the checkpoint, or 'random'")
@click.option("--json", "json_path", default=None, type=click.Path(dir_okay=False), help="write the results as JSON")
@click.pass_context
def command(ctx, model, backend, batches, concurrency, timeout, warmup, min_iterations, min_seconds, threads, recipe,
            weights, json_path):
    """Measure latency (p50/p90/p99) and throughput of MODEL on one backend."""
    from rich.console import Console

    from ..benchmark import benchmark
    from ..errors import UserError
    from ..fileio import write_json_atomic
    from ..serving.endpoint import is_endpoint

    try:
        sizes = [int(b) for b in batches.split(",") if b.strip()]
    except ValueError:
        raise UserError(f"--batch '{batches}': give comma-separated integers, e.g. 1,8,32") from None
    try:
        clients = [int(c) for c in concurrency.split(",") if c.strip()]
    except ValueError:
        raise UserError(f"--concurrency '{concurrency}': give comma-separated integers, e.g. 1,4") from None
    if model and is_endpoint(model) and ctx.get_parameter_source("backend") == click.core.ParameterSource.DEFAULT:
        backend = "triton"  # a served model has one backend
    if model is None and not (backend == "torch" and recipe):
        raise UserError("give MODEL (an .onnx or .plan file), or --backend torch with --recipe")
    result = benchmark(model, backend, sizes, warmup=warmup, min_iterations=min_iterations, min_seconds=min_seconds,
                       recipe=recipe, weights=weights, threads=threads, concurrency=clients, timeout=timeout)
    Console(width=120).print(result.table())
    if json_path:
        write_json_atomic(json_path, result.to_dict())
        click.echo(f"wrote {json_path}")
