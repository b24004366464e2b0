"""Benchmark of the optimize stage: ORT CPU latency of exported vs optimized graphs, next to onnxslim.

For GoogLeNet (the trained digits model, 64x64) and Inception v3 (299, random weights
with BatchNorm re-estimated),
exported the way other tools leave them (torch legacy exporter, PRESERVE training mode,
no constant folding: BatchNormalization nodes, Identity per initializer, aux heads as
extra outputs), the script times on ONNX Runtime CPU (default graph optimizations, as a
user runs it) at batch 1 and 8, median of --runs runs, interleaved round robin so load
from other processes hits every variant alike:
    exported | exported -> inception-deploy optimize | exported -> onnxslim
and prints node counts, pass times and latency ratios; writes JSON (--json).

    python benchmarks/bench_passes.py [--runs 20] [--json benchmarks/results/bench_passes.json]

onnxslim is a benchmark-only dependency (pyproject extra 'bench').
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np


def export_raw(arch: str, recipe_name: str, path: Path) -> Path:
    import torch

    from inception_deploy.models import build_model
    from inception_deploy.models.common import WithAuxOutputs
    from inception_deploy.recipes import load_recipe
    from inception_deploy.reference import load_reference, reestimate_batchnorm

    recipe = load_recipe(recipe_name)
    if recipe.training is not None:  # the trained digits model
        model = load_reference(recipe, None, progress=False).module
    else:
        torch.manual_seed(0)
        model = build_model(arch, num_classes=1000, aux_logits=True, transform_input=recipe.model.transform_input)
        reestimate_batchnorm(model, recipe, images=16, batch_size=8)
    names = ["logits", *model.aux_output_names]


    height, width = recipe.input_hw
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(WithAuxOutputs(model).eval(), (torch.zeros(1, 3, height, width),), str(path), dynamo=False,
                          opset_version=17, input_names=["input"], output_names=names,
                          dynamic_axes={n: {0: "batch"} for n in ["input", *names]},
                          do_constant_folding=False, training=torch.onnx.TrainingMode.PRESERVE)
    return path


def node_counts(path) -> dict:
    import onnx

    counts: dict[str, int] = {}
    for node in onnx.load(str(path)).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def session(path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def bench_model(name: str, arch: str, recipe: str, workdir: Path, runs: int, batches=(1, 8)) -> dict:
    import onnx
    import onnxslim

    from inception_deploy.passes import optimize_onnx

    raw = export_raw(arch, recipe, workdir / f"{name}.onnx")
    start = time.perf_counter()
    result = optimize_onnx(raw, workdir / f"{name}.opt.onnx", recipe=recipe, check="end", check_images=4)
    optimize_s = time.perf_counter() - start
    start = time.perf_counter()
    slimmed = onnxslim.slim(str(raw))
    slim_s = time.perf_counter() - start
    slim_path = workdir / f"{name}.slim.onnx"
    onnx.save(slimmed, str(slim_path))

    variants = {"exported": raw, "optimized": result.path, "onnxslim": slim_path}
    sessions = {k: session(p) for k, p in variants.items()}
    rng = np.random.default_rng(0)
    height, width = result.manifest["preprocessing"]["size"] if result.manifest.get("preprocessing") else (224, 224)
    row = {"model": name, "nodes": {k: sum(node_counts(p).values()) for k, p in variants.items()},
           "outputs": {k: [o.name for o in s.get_outputs()] for k, s in sessions.items()},
           "bn_nodes": {k: node_counts(p).get("BatchNormalization", 0) for k, p in variants.items()},
           "optimize_seconds": round(optimize_s, 2), "onnxslim_seconds": round(slim_s, 2),
           "check": {k: c.relative_error for k, c in result.comparisons.items()}, "latency_ms": {}}
    for batch in batches:
        x = rng.standard_normal((batch, 3, height, width)).astype(np.float32)
        times = {k: [] for k in sessions}
        for s in sessions.values():  # warm-up
            s.run(["logits"], {"input": x})
        for _ in range(runs):
            for k, s in sessions.items():
                t = time.perf_counter()
                s.run(["logits"], {"input": x})  # the main output only, as deployed
                times[k].append(time.perf_counter() - t)
        row["latency_ms"][batch] = {k: round(1000 * float(np.median(v)), 2) for k, v in times.items()}
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--json", default="benchmarks/results/bench_passes.json")
    parser.add_argument("--models", default="googlenet,inception_v3")
    args = parser.parse_args()
    from rich.console import Console
    from rich.table import Table

    # GoogLeNet: the trained digits model at 64x64 (torch cannot export GoogLeNet's aux
    # heads at 224: adaptive_avg_pool2d 14x14 -> 4x4 is not a whole factor).
    specs = {"googlenet": ("googlenet", "googlenet-digits"), "inception_v3": ("inception_v3", "inception_v3")}
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-passes-") as scratch:
        for name in args.models.split(","):
            rows.append(bench_model(name, *specs[name], Path(scratch), args.runs))

    table = Table(title=f"ORT CPU latency, median of {args.runs} runs (ms); ratio = variant / exported")
    for column in ("model", "batch", "nodes exp/opt/slim", "exported", "optimized", "onnxslim", "opt ratio", "slim ratio"):
        table.add_column(column, justify="right")
    for row in rows:
        n = row["nodes"]
        for batch, lat in row["latency_ms"].items():
            table.add_row(row["model"], str(batch), f"{n['exported']}/{n['optimized']}/{n['onnxslim']}",
                          f"{lat['exported']:.1f}", f"{lat['optimized']:.1f}", f"{lat['onnxslim']:.1f}",
                          f"{lat['optimized'] / lat['exported']:.3f}", f"{lat['onnxslim'] / lat['exported']:.3f}")
    Console(width=140).print(table)
    for row in rows:
        print(f"{row['model']}: optimize {row['optimize_seconds']} s (with safety check), onnxslim {row['onnxslim_seconds']} s; "
              f"outputs exported {row['outputs']['exported']}, optimized {row['outputs']['optimized']}, "
              f"onnxslim {row['outputs']['onnxslim']}; check relative error {row['check']}")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"runs": args.runs, "results": rows}, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
