"""Latency and throughput through a Triton endpoint vs ONNX Runtime in-process (stage: package, runtime).

One run, side by side: the same ONNX graph (default: the digits GoogLeNet `inception-deploy
run` exports) measured by `benchmark` on ORT CPU in this process, then packaged with
`package --triton --triton-backend python --kind cpu`, served by the local tritonserver
(nvidia-pytriton's, the Python backend running the same ONNX Runtime version) on 127.0.0.1,
and measured through HTTP and gRPC, each at concurrency 1 and N. The difference is what
serving costs (serialization, the network stack, Triton's scheduling) and what dynamic
batching gains when clients overlap.

    python -m inception_deploy.serving.local_server install     # once
    python benchmarks/bench_triton.py [--onnx out/googlenet-digits.onnx] [--batch 1,8] [--concurrency 1,4] \\
        [--seconds 3] [--json benchmarks/results/bench_triton.json]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--onnx", type=Path, default=None, help="the graph (default: export the digits GoogLeNet)")
    parser.add_argument("--batch", default="1,8")
    parser.add_argument("--concurrency", default="1,4")
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per row")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    from rich.console import Console

    from inception_deploy.benchmark import benchmark
    from inception_deploy.serving import package_triton
    from inception_deploy.serving.local_server import LocalTritonServer

    batches = [int(b) for b in args.batch.split(",")]
    clients = [int(c) for c in args.concurrency.split(",")]
    console = Console(width=120)
    with tempfile.TemporaryDirectory(prefix="bench-triton-") as scratch:
        onnx_path = args.onnx
        if onnx_path is None:
            from inception_deploy.export import export_onnx

            onnx_path = export_onnx("googlenet-digits", None, Path(scratch), progress=False).path
        repository = Path(scratch) / "model_repository"
        package_triton([onnx_path], repository, name="model", kind="cpu", triton_backend="python")
        settings = dict(batches=batches, warmup=5, min_iterations=20, min_seconds=args.seconds, concurrency=clients)
        results = {"ort-cpu in-process": benchmark(onnx_path, "ort-cpu", **settings)}
        with LocalTritonServer(repository, load=["model"]) as server:
            for protocol in ("http", "grpc"):
                results[f"triton {protocol}"] = benchmark(server.endpoint("model", protocol), "triton", **settings)
    for result in results.values():
        console.print(result.table())
    print("\n| batch | clients | " + " | ".join(f"{name} p50 ms / images/s" for name in results) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in results) + " |")
    for index, row in enumerate(next(iter(results.values())).rows):
        cells = [f"{r.rows[index].p50_ms:.2f} / {r.rows[index].throughput:.0f}" for r in results.values()]
        print(f"| {row.batch} | {row.concurrency} | " + " | ".join(cells) + " |")
    print(f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({name: r.to_dict() for name, r in results.items()}, indent=2) + "\n")


if __name__ == "__main__":
    main()
