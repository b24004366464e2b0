"""Validation throughput vs plain ONNX Runtime inference on the same batches (stage: validate).

Goal: `validate` on ORT CPU within 15% of the throughput of a minimal hand-written loop
that opens the same two sessions (reference and target), preprocesses the same images
with the same function and runs both models; the difference is validate's own cost
(manifest and precision checks, metrics, progress). Also shows inference alone.

    python benchmarks/bench_validate.py [--images 450] [--repeats 3] [--json benchmarks/results/bench_validate.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def plain_loop(recipe, reference, target, indices, batch_size, batches=None):
    from inception_deploy.backends.onnxruntime_backend import OnnxRuntimeRunner
    from inception_deploy.data import open_dataset

    start = time.perf_counter()
    with OnnxRuntimeRunner(reference) as ref, OnnxRuntimeRunner(target) as cand:
        if batches is None:
            dataset = open_dataset(recipe.data.validation, recipe.preprocessing)
            source = (x for x, _, _ in dataset.batches(recipe.preprocessing, batch_size, indices))
        else:
            source = batches
        for x in source:
            ref.infer({"input": x})
            cand.infer({"input": x})
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=450, help="held-out digits images (450 = all)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default=str(Path(__file__).parent / "results" / "bench_validate.json"))
    args = parser.parse_args()

    import onnx

    from inception_deploy.data import choose_indices, open_dataset
    from inception_deploy.export import export_onnx
    from inception_deploy.recipes import load_recipe
    from inception_deploy.validate import validate

    recipe = load_recipe("googlenet-digits")
    with tempfile.TemporaryDirectory() as scratch:
        reference = export_onnx(recipe, None, scratch, progress=False).path
        # The target: the same graph with one conv's weights off by 5%, so the metrics have work to do.
        model = onnx.load(str(reference))
        conv = next(n for n in model.graph.node if n.name == "/inception4c/branch2/branch2.1/conv/Conv")
        init = next(i for i in model.graph.initializer if i.name == conv.input[1])
        init.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(init) * np.float32(1.05), init.name))
        target = Path(scratch) / "target.onnx"
        onnx.save(model, str(target))

        dataset = open_dataset(recipe.data.validation, recipe.preprocessing)
        indices = choose_indices(dataset, args.images, allow_fewer=True)
        batches = [x for x, _, _ in dataset.batches(recipe.preprocessing, args.batch_size, indices)]
        rows = {"plain ORT, inference only": [], "plain ORT, preprocessing + inference": [], "validate()": []}
        for _ in range(args.repeats):
            rows["plain ORT, inference only"].append(plain_loop(recipe, reference, target, indices, args.batch_size, batches))
            rows["plain ORT, preprocessing + inference"].append(plain_loop(recipe, reference, target, indices, args.batch_size))
            start = time.perf_counter()
            report = validate(recipe, reference=reference, targets=[target], max_images=args.images,
                              batch_size=args.batch_size, progress=False)
            rows["validate()"].append(time.perf_counter() - start)
            assert report.exit_code == 1  # the 5% conv fails FP32 tolerances

    count = len(indices)
    baseline = statistics.median(rows["plain ORT, preprocessing + inference"])
    print(f"{count} images, batch {args.batch_size}, reference + target on ORT CPU, median of {args.repeats}")
    print(f"{'loop':40} {'seconds':>9} {'images/s':>9} {'vs plain':>9}")
    results = {}
    for name, times in rows.items():
        median = statistics.median(times)
        results[name] = {"seconds": median, "all_seconds": times, "images_per_second": count / median,
                         "throughput_vs_plain_pct": 100 * (baseline / median - 1)}
        print(f"{name:40} {median:9.3f} {count / median:9.1f} {100 * (baseline / median - 1):+8.1f}%")
    within = results["validate()"]["throughput_vs_plain_pct"] >= -15
    print(f"goal (validate within 15% of plain preprocessing + inference): {'met' if within else 'NOT met'}")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"images": count, "batch_size": args.batch_size, "results": results,
                               "goal_met": within}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
