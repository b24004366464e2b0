"""Benchmark (stage: quantize): our streaming calibration vs onnxruntime's quantize_static,
and ORT CPU latency of the INT8 graphs vs FP32.

Each calibration run is a fresh subprocess that reports its own wall time and peak RSS
(resource.getrusage RUSAGE_SELF), so runs never share memory and an out-of-memory run
only loses itself. Prints a table and writes JSON.

    python benchmarks/bench_quantize.py calib --model inception_v3 --counts 64 256 1024
    python benchmarks/bench_quantize.py latency --model googlenet --model inception_v3
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
WORK = Path("/tmp/bench_quantize")


def fp32_model(name: str) -> Path:
    """The recipe's model with random weights (BN re-estimated): fine for cost, never accuracy."""
    from inception_deploy.export import export_onnx

    path = WORK / name / f"{name}.onnx"
    if not path.is_file():
        export_onnx(name, "random", WORK / name, progress=False)
    return path


def ort_quantize_static(model_path: Path, out: Path, recipe, count: int, method: str,
                        extra_options: dict | None = None, **options) -> Path:
    """onnxruntime's quantize_static on `count` synthetic images (the recipe's preprocessing and
    seed: the images our calibration gets): QDQ, per-channel, symmetric int8 weights and
    activations (`extra_options` added to those, `options` passed on). Written to a temp name first, so an
    interrupted run leaves no half file."""
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static

    from inception_deploy.data import open_dataset

    dataset = open_dataset(f"synthetic:{count}", recipe.preprocessing, seed=recipe.calibration.seed)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = dataset.batches(recipe.preprocessing, 1)

        def get_next(self):
            item = next(self.batches, None)
            return None if item is None else {"input": item[0]}

    calibrate_method = {"max": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                        "percentile": CalibrationMethod.Percentile}[method]
    partial = out.with_name(out.name + ".partial")
    quantize_static(str(model_path), str(partial), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, calibrate_method=calibrate_method,
                    extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, **(extra_options or {})},
                    **options)
    partial.replace(out)
    return out


# ----------------------------------------------------------------------------- one run (child)
def child(args) -> None:
    from inception_deploy.recipes import load_recipe

    recipe = load_recipe(args.model)
    model_path = fp32_model(args.model)
    start = time.perf_counter()
    if args.tool == "ours":
        import onnx

        from inception_deploy.precision import calibrate_model

        calibrate_model(onnx.load(str(model_path)), recipe, f"synthetic:{args.count}", args.count, args.method,
                        progress=False)
    else:
        ort_quantize_static(model_path, WORK / f"ort-{args.model}-{args.method}.onnx", recipe, args.count, args.method)
    wall = time.perf_counter() - start
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB
    print(json.dumps({"tool": args.tool, "method": args.method, "count": args.count, "wall_s": wall, "peak_rss_mb": rss}))


def calib(args) -> list[dict]:
    fp32_model(args.model)
    rows = []
    for tool, method in [("ours", m) for m in args.methods] + [("ort", m) for m in args.ort_methods]:
        for count in args.counts:
            if tool == "ort" and method == "entropy" and count > args.ort_entropy_max:
                rows.append({"tool": tool, "method": method, "count": count, "skipped": "needs > 24 GB here"})
                continue
            cmd = [sys.executable, __file__, "child", "--model", args.model, "--tool", tool, "--method", method,
                   "--count", str(count)]
            done = subprocess.run(cmd, capture_output=True, text=True)
            line = done.stdout.strip().splitlines()[-1] if done.returncode == 0 else None
            row = json.loads(line) if line else {"tool": tool, "method": method, "count": count,
                                                 "failed": done.stderr.strip().splitlines()[-1:]}
            rows.append(row)
            print(row, flush=True)
    return rows


# ----------------------------------------------------------------------------- latency
def latency(args) -> list[dict]:
    import onnx
    import onnxruntime as ort

    from inception_deploy.precision import quantize_onnx
    from inception_deploy.recipes import load_recipe, recipe_from_dict

    rows = []
    for name in args.model_names:
        path = fp32_model(name)
        raw = load_recipe(name).to_dict()
        raw["calibration"]["data"] = "synthetic:32"
        variants = {"fp32": path}
        # Calibrated afresh each run (32 images, seconds) and shared by both variants: a cache
        # left by an earlier run may have been made by older code or with other recipe options.
        (WORK / name / f"{name}.calib.json").unlink(missing_ok=True)
        for unsigned in (False, True):
            raw["precision"]["int8"]["unsigned_activations"] = unsigned
            out = WORK / name / f"{name}.int8{'-u8' if unsigned else ''}.onnx"
            quantize_onnx(path, out, recipe=recipe_from_dict(raw), calib_count=32, calib_method="max",
                          calib_cache=WORK / name / f"{name}.calib.json", progress=False)
            variants["ours-int8-u8" if unsigned else "ours-int8"] = out
        # quantize_static's graph from the same 32 images (MinMax, like ours above), made once.
        ort_path = WORK / name / f"{name}.ort-quantize_static-max-32.onnx"
        if not ort_path.is_file():
            ort_quantize_static(path, ort_path, load_recipe(name), 32, "max")
        variants["ort-quantize_static"] = ort_path
        size = load_recipe(name).input_hw
        for label, model in variants.items():
            options = ort.SessionOptions()
            options.log_severity_level = 3
            if args.profile:
                options.enable_profiling = True
                options.profile_file_prefix = str(WORK / f"profile-{name}-{label}")
            sess = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
            for batch in (1, 8):
                x = np.random.default_rng(0).standard_normal((batch, 3, *size)).astype(np.float32)
                for _ in range(3):
                    sess.run(None, {"input": x})
                times = []
                for _ in range(args.repeats):
                    t = time.perf_counter()
                    sess.run(None, {"input": x})
                    times.append(time.perf_counter() - t)
                row = {"model": name, "graph": label, "batch": batch, "median_ms": 1000 * float(np.median(times))}
                fp32 = next((r for r in rows if r["model"] == name and r["graph"] == "fp32" and r["batch"] == batch), row)
                row["speedup_vs_fp32"] = fp32["median_ms"] / row["median_ms"]
                rows.append(row)
                print(row, flush=True)
            if args.profile:
                sess.end_profiling()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    c = sub.add_parser("calib")
    c.add_argument("--model", default="inception_v3")
    c.add_argument("--counts", type=int, nargs="+", default=[64, 256, 1024])
    c.add_argument("--methods", nargs="+", default=["entropy", "max"])
    c.add_argument("--ort-methods", nargs="*", default=["max", "entropy"])
    c.add_argument("--ort-entropy-max", type=int, default=64, help="largest N for ORT Entropy (7 GB at 64 here)")
    l = sub.add_parser("latency")
    l.add_argument("--model", dest="model_names", action="append", default=None)
    l.add_argument("--repeats", type=int, default=20)
    l.add_argument("--profile", action="store_true", help="write ORT profiles (where the time goes)")
    k = sub.add_parser("child")
    k.add_argument("--model")
    k.add_argument("--tool")
    k.add_argument("--method")
    k.add_argument("--count", type=int)
    for p in (c, l):
        p.add_argument("--json", default=None, help="write results here (default /tmp/bench_quantize/<mode>.json)")
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    if args.mode == "child":
        child(args)
        return
    if args.mode == "latency":
        args.model_names = args.model_names or ["googlenet", "inception_v3"]
    rows = calib(args) if args.mode == "calib" else latency(args)
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"bench_quantize {args.mode}")
    keys = sorted({k for r in rows for k in r}, key=lambda k: list(rows[0]).index(k) if k in rows[0] else 99)
    for key in keys:
        table.add_column(key)
    for r in rows:
        table.add_row(*[f"{r[k]:.2f}" if isinstance(r.get(k), float) else str(r.get(k, "")) for k in keys])
    Console().print(table)
    if args.mode == "calib":
        ours = {(r["method"], r["count"]): r for r in rows if r["tool"] == "ours" and "wall_s" in r}
        for method in args.methods:
            if (method, 64) in ours and (method, max(args.counts)) in ours:
                ratio = ours[(method, max(args.counts))]["peak_rss_mb"] / ours[(method, 64)]["peak_rss_mb"]
                print(f"ours {method}: peak RSS {max(args.counts)} / 64 images = {ratio:.2f}x")
        ort_entropy = next((r for r in rows if r["tool"] == "ort" and r["method"] == "entropy" and r["count"] == 64
                            and "wall_s" in r), None)
        if ort_entropy and ("entropy", 64) in ours:
            print(f"quantize_static Entropy / ours entropy at 64: {ort_entropy['wall_s'] / ours[('entropy', 64)]['wall_s']:.1f}x "
                  f"time, {ort_entropy['peak_rss_mb'] / ours[('entropy', 64)]['peak_rss_mb']:.1f}x RSS")
    out = Path(args.json or WORK / f"{args.mode}.json")
    out.write_text(json.dumps(rows, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
