"""Benchmark (stage: quantize): end-to-end `quantize --int8` vs onnxruntime quantize_static MinMax,
side by side in one run: wall time, peak RSS, and accuracy on held-out digits.

Every tool runs in a child process timed by /usr/bin/time (wall s, peak RSS of that child
alone), on the same images: the recipe's calibration choice (class-balanced, its seed) through
the recipe's one preprocessing. Ours is the CLI as a user runs it (equalization, calibration,
bias correction, the built-in comparison); ORT's is quantize_static (QDQ, per-channel,
symmetric int8, MinMax) plus reading and preprocessing the same images. Accuracy (digits only;
Inception v3 has random weights, cost only) is measured afterwards on the 450 held-out digits
in both evaluation modes (precision/evaluate.py): exact Q/DQ semantics and ORT-optimized.

    python benchmarks/bench_quantize_speed.py                       # both models, 64 and 256 images
    python benchmarks/bench_quantize_speed.py --model googlenet-digits --counts 256

The machine is shared: read the times as ratios within one run, and pass --repeat 3 (the tools
take turns; the fastest run of each counts, and the largest peak RSS).

    python benchmarks/bench_quantize_speed.py --repeat 3 --variants ours
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
WORK = Path("/tmp/bench_quantize_speed")
VARIANTS = {"ours": [], "ours --no-bias-correction": ["--no-bias-correction"]}
# model -> (recipe, calibration data, held-out data or None)
MODELS = {"googlenet-digits": ("googlenet-digits", "digits-train", "digits-holdout"),
          "inception_v3": ("inception_v3", "synthetic:{count}", None)}


def fp32_model(name: str) -> Path:
    """The optimized digits GoogLeNet (trained and cached by the package), or Inception v3 with
    random weights (cost only)."""
    from inception_deploy.export import export_onnx
    from inception_deploy.passes import optimize_onnx

    folder = WORK / name
    if name == "googlenet-digits":
        path = folder / f"{name}.opt.onnx"
        if not path.is_file():
            exported = export_onnx(name, None, folder, progress=False).path
            optimize_onnx(exported, path)
        return path
    path = folder / f"{name}.onnx"
    if not path.is_file():
        export_onnx(name, "random", folder, progress=False)
    return path


def console_script() -> str:
    """The `inception-deploy` script beside this interpreter (as in a venv), not a shell shim in
    front of it (pyenv's costs 0.1 s a start); ORT's child runs this interpreter directly."""
    beside = Path(sys.executable).parent / "inception-deploy"
    return str(beside) if beside.is_file() else shutil.which("inception-deploy") or "inception-deploy"


def timed(cmd: list[str]) -> dict:
    """Run `cmd` in a child under /usr/bin/time: its wall seconds and peak RSS, or why it failed."""
    report = WORK / "time.txt"
    done = subprocess.run(["/usr/bin/time", "-f", "%e %M", "-o", str(report), *cmd], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    if done.returncode != 0:
        return {"failed": (done.stderr.strip().splitlines() or ["?"])[-1]}
    wall, rss_kb = report.read_text().split()[-2:]
    return {"wall_s": float(wall), "peak_rss_mb": int(rss_kb) / 1024, "stdout": done.stdout}


def ort_child(args) -> None:
    """quantize_static MinMax on the images our calibration gets (the child's whole work)."""
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static

    from inception_deploy.precision.calibration_set import CalibrationSet
    from inception_deploy.recipes import load_recipe

    recipe = load_recipe(args.recipe)
    images = CalibrationSet(recipe, args.data, args.count)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = images.batches(1)

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {recipe.export.input_name: batch}

    quantize_static(args.model, args.out, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax,
                    extra_options={"ActivationSymmetric": True, "WeightSymmetric": True})


def accuracy(fp32: Path, graph: Path, recipe_name: str, source: str) -> dict:
    """FP32 vs `graph` on every held-out image, in both evaluation modes."""
    import onnx

    from inception_deploy.data import open_dataset
    from inception_deploy.precision.evaluate import evaluate
    from inception_deploy.recipes import load_recipe

    recipe = load_recipe(recipe_name)
    dataset = open_dataset(source, recipe.preprocessing)
    batches = ((x, y) for x, y, _ in dataset.batches(recipe.preprocessing, 64))
    ev = evaluate(onnx.load(str(fp32)), onnx.load(str(graph)), batches, source, optimized_images=None)
    out = {"exact_max_abs": ev.main.max_abs_error, "exact_mean_abs": ev.main.mean_abs_error,
           "exact_agreement": ev.main.top1_agreement, "exact_top1": ev.candidate_top1, "fp32_top1": ev.reference_top1}
    if ev.optimized is not None:
        out.update(optimized_max_abs=ev.optimized.max_abs_error, optimized_mean_abs=ev.optimized.mean_abs_error,
                   optimized_top1=ev.optimized_correct / ev.labelled)
    return out


def run(args) -> list[dict]:
    rows = []
    for name in args.models:
        recipe, calib, held_out = MODELS[name]
        model = fp32_model(name)
        for count in args.counts:
            data = calib.format(count=count)
            runs = {"ort quantize_static MinMax": [sys.executable, __file__, "ort", "--model", str(model), "--recipe",
                                                   recipe, "--data", data, "--count", str(count)]}
            for label, flags in ((k, VARIANTS[k]) for k in args.variants):
                runs[label] = [console_script(), "quantize", str(model), "--int8",
                               "--recipe", recipe, "--calib-data", data, "--calib-count", str(count), "-q", *flags]
            # Each tool `--repeat` times, the tools taking turns (a shared machine's load then
            # falls on all of them alike); the fastest wall time and the largest peak RSS count.
            timings = {label: [] for label in runs}
            for attempt in range(args.repeat):
                for number, (label, cmd) in enumerate(runs.items()):
                    out = WORK / name / f"{label.split()[0]}-{count}-tool{number}-run{attempt}.int8.onnx"
                    cmd = cmd + (["--out", str(out)] if label.startswith("ort") else ["-o", str(out)])
                    timings[label].append((timed(cmd), out))
            for label, tries in timings.items():
                done = [t for t, _ in tries if "failed" not in t]
                row = {"model": name, "images": count, "tool": label}
                if not done:
                    row["failed"] = tries[0][0]["failed"]
                else:
                    row.update(wall_s=min(t["wall_s"] for t in done), peak_rss_mb=max(t["peak_rss_mb"] for t in done),
                               wall_s_all=[t["wall_s"] for t in done])
                    if held_out:
                        row.update(accuracy(model, tries[0][1], recipe, held_out))
                rows.append(row)
                print(json.dumps(row), flush=True)
            ort = rows[-len(runs)]
            for row in rows[-len(runs) + 1:]:
                if "wall_s" in row and "wall_s" in ort:
                    row["time_vs_ort"] = row["wall_s"] / ort["wall_s"]
                    row["rss_vs_ort"] = row["peak_rss_mb"] / ort["peak_rss_mb"]
    return rows


def table(rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    keys = ["model", "images", "tool", "wall_s", "peak_rss_mb", "time_vs_ort", "rss_vs_ort", "exact_max_abs",
            "exact_mean_abs", "exact_top1", "optimized_max_abs", "optimized_top1", "failed"]
    keys = [k for k in keys if any(k in r for r in rows)]
    out = Table(title="quantize --int8 vs quantize_static MinMax (same images, one run)")
    for key in keys:
        out.add_column(key)
    for r in rows:
        out.add_row(*[f"{r[k]:.4g}" if isinstance(r.get(k), float) else str(r.get(k, "")) for k in keys])
    Console(width=240).print(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode")
    o = sub.add_parser("ort")
    for flag in ("--model", "--recipe", "--data", "--out"):
        o.add_argument(flag)
    o.add_argument("--count", type=int)
    parser.add_argument("--model", dest="models", action="append", choices=list(MODELS))
    parser.add_argument("--counts", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS),
                        help="our configurations to run beside ORT")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each tool, taking turns (fastest counts)")
    parser.add_argument("--json", default=None, help="write results here (default /tmp/bench_quantize_speed/results.json)")
    args = parser.parse_args()
    if args.mode == "ort":
        ort_child(args)
        return
    args.models = args.models or list(MODELS)
    for name in args.models:
        (WORK / name).mkdir(parents=True, exist_ok=True)
    rows = run(args)
    table(rows)
    path = Path(args.json or WORK / "results.json")
    path.write_text(json.dumps(rows, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
