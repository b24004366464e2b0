"""Benchmark (stage: quantize): INT8 tools side by side, in one run, on the same images.

For the trained digits GoogLeNet (256 calibration images of digits-train, chosen as our
calibration chooses them; all 450 held-out digits) and Inception v3 at 299 (random weights,
64 synthetic calibration images: cost only, no accuracy), each tool quantizes the same FP32
graph in a fresh subprocess; then every graph is measured by the same code:

- quantize wall time (the tool's call, after its imports) and peak RSS (the whole process);
- accuracy on held-out digits (top-1, top-1 agreement, max / mean abs logit error vs FP32) in
  both evaluation modes: `exact` (ORT with graph optimizations off: the ONNX Q/DQ semantics)
  and `ort` (ORT's optimized graph, what ORT CPU deployment computes);
- ORT CPU latency vs FP32, 1 thread, batch 1 and 8 (median of --repeats, all graphs round-robin);
- TensorRT-RTX parse/build (no lint first: NVIDIA's parser judges) and the engine's Convs by
  datatype (inception_deploy.engine: rtx_build + layer report, via bench_engines.measure).

Tools: ours (--for tensorrt, the default; and --for ort-cpu), onnxruntime quantize_static
(always: it is in onnxruntime-gpu), and NNCF, AIMET-ONNX and onnx-neural-compressor where
they install: each in its own venv under $INCEPTION_DEPLOY_BENCH_CACHE (default
~/.cache/inception-deploy-bench/venvs), never in the package's dependencies. A tool that
does not install or fails is printed as such and the run goes on.

    python benchmarks/bench_int8_tools.py                               # everything, both models
    python benchmarks/bench_int8_tools.py --model googlenet-digits --tool ours-ort-cpu --tool ort-default
    python benchmarks/bench_int8_tools.py --no-engine --repeats 10      # skip the TensorRT-RTX builds
    python benchmarks/bench_int8_tools.py --reuse                       # measure again the graphs made before

Writes benchmarks/results/bench_int8_tools.json and prints a Markdown table. The machine
is shared: read times as ratios within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
WORK = Path("/tmp/bench_int8_tools")
CACHE = Path(os.environ.get("INCEPTION_DEPLOY_BENCH_CACHE", Path.home() / ".cache" / "inception-deploy-bench"))
MODELS = {"googlenet-digits": 256, "inception_v3": 64}  # model -> calibration images

# Tools in their own venvs: the pip requirements (a CPU torch from this machine's wheel first
# where the tool imports torch; modules a tool imports without declaring them) and the
# quantize code run there, reading CALIB (an .npz with 'x') and writing OUT; the epilogue
# prints its wall time and peak RSS.
VENV_TOOLS = {
    "nncf": (["nncf", "onnx", "onnxruntime"], """
import nncf
data = [x[None] for x in calib]
dataset = nncf.Dataset(data, lambda x: {model.graph.input[0].name: x})
start = time.perf_counter()
quantized = nncf.quantize(model, dataset, subset_size=len(data))
onnx.save(quantized, OUT)
"""),
    "onnx-neural-compressor": (["onnx-neural-compressor", "onnxruntime", "prettytable", "scipy"], """
from onnx_neural_compressor import data_reader
from onnx_neural_compressor.quantization import config, quantize
class Reader(data_reader.CalibrationDataReader):
    def __init__(self):
        self.rewind()
    def get_next(self):
        return next(self.items, None)
    def rewind(self):
        self.items = iter([{model.graph.input[0].name: x[None]} for x in calib])
start = time.perf_counter()
from onnxruntime.quantization import QuantFormat
quantize(MODEL, OUT, config.StaticQuantConfig(Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                                              calibration_sampling_size=len(calib)))
"""),
    "aimet-onnx": (["torch==2.13.0", "aimet-onnx"], """
import onnxruntime
from aimet_onnx.quantsim import QuantizationSimModel
from aimet_onnx.cross_layer_equalization import equalize_model
name = model.graph.input[0].name
start = time.perf_counter()
equalize_model(model)
sim = QuantizationSimModel(model, providers=["CPUExecutionProvider"])
sim.compute_encodings([{name: calib[i:i + 8]} for i in range(0, len(calib), 8)])
onnx.save(sim.to_onnx_qdq(), OUT)
"""),
}
PRELUDE = """
import json, sys, time
import numpy as np, onnx
MODEL, CALIB, OUT = sys.argv[1:4]
model = onnx.load(MODEL)
calib = np.load(CALIB)["x"].astype(np.float32)
"""
EPILOGUE = """
import resource
print(json.dumps({"wall_s": time.perf_counter() - start,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""
TOOLS = ("ours-tensorrt", "ours-ort-cpu", "ort-default", "ort-minmax-int8", *VENV_TOOLS)


# ----------------------------------------------------------------------------- inputs
def prepare(name: str) -> dict:
    """The optimized FP32 graph, the calibration .npz and the held-out arrays of one model, made once."""
    from bench_engines import optimized_fp32

    from inception_deploy.data import open_dataset
    from inception_deploy.precision.calibration_set import CalibrationSet
    from inception_deploy.recipes import load_recipe

    folder = WORK / name
    folder.mkdir(parents=True, exist_ok=True)
    recipe = load_recipe(name)
    optimized = optimized_fp32(name, folder)
    count = MODELS[name]
    source = "digits-train" if name == "googlenet-digits" else f"synthetic:{count}"
    calib = folder / f"calib-{count}.npz"
    if not calib.is_file():
        with CalibrationSet(recipe, source, count) as images:  # the images our calibration chooses
            np.savez(calib, x=images.array(count))
    held_out = None
    if name == "googlenet-digits":
        dataset = open_dataset("digits-holdout", recipe.preprocessing)
        xs, ys = zip(*[(x, y) for x, y, _ in dataset.batches(recipe.preprocessing, 64)])
        held_out = (np.concatenate(xs), np.concatenate(ys))
    return {"name": name, "recipe": recipe, "fp32": optimized, "calib": calib, "count": count, "held_out": held_out}


# ----------------------------------------------------------------------------- quantize (children)
def child_ours(model: str, calib: str, out: str, recipe: str, target: str) -> None:
    from inception_deploy.precision import quantize_onnx

    start = time.perf_counter()
    quantize_onnx(model, out, recipe=recipe, calib_data=calib, calib_count=int(np.load(calib)["x"].shape[0]),
                  target=target, progress=False, calib_cache=Path(out).with_suffix(".calib.json"))
    report(start)


def child_ort(model: str, calib: str, out: str, style: str) -> None:
    """quantize_static, MinMax, QDQ, per-channel weights: ORT's defaults (uint8 asymmetric
    activations, int32 biases) or TensorRT's style (symmetric int8, float biases)."""
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static

    images = np.load(calib)["x"].astype(np.float32)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter(images[i:i + 1] for i in range(len(images)))

        def get_next(self):
            item = next(self.items, None)
            return None if item is None else {"input": item}

    options = {} if style == "default" else {
        "activation_type": QuantType.QInt8, "extra_options": {"ActivationSymmetric": True, "WeightSymmetric": True,
                                                              "QuantizeBias": False}}
    start = time.perf_counter()
    quantize_static(model, out, Reader(), quant_format=QuantFormat.QDQ, per_channel=True, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax, **options)
    report(start)


def venv_python(tool: str) -> tuple[Path | None, str]:
    """The tool's venv python, made (and its packages installed) on first use; (None, why) when it does not install."""
    venv = CACHE / "venvs" / tool
    python = venv / "bin" / "python"
    marker = venv / ".installed"
    if marker.is_file():
        return python, ""
    log = CACHE / "venvs" / f"{tool}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"[{tool}] making its venv in {venv} (log {log})", flush=True)
    with log.open("w") as out:
        steps = [[sys.executable, "-m", "venv", str(venv)]]
        for requirement in VENV_TOOLS[tool][0]:
            steps.append([str(python), "-m", "pip", "install", "-q", requirement])
        for step in steps:
            if subprocess.run(step, stdout=out, stderr=subprocess.STDOUT).returncode != 0:
                tail = log.read_text().strip().splitlines()[-1:] or ["?"]
                return None, f"does not install here ({' '.join(step[-1:])}): {tail[0][:160]}"
    marker.write_text("ok\n")
    return python, ""


def quantize(tool: str, data: dict, reuse: bool = False) -> dict:
    """Run one tool in a fresh process: its graph, wall time and the process's peak RSS (each
    child reports its own), also kept beside the graph; `reuse`: that record and graph, when there."""
    name = data["name"]
    out = WORK / name / f"{name}.{tool}.onnx"
    record = out.with_suffix(".quantize.json")
    if reuse and record.is_file() and out.is_file():
        return json.loads(record.read_text())
    out.unlink(missing_ok=True)
    record.unlink(missing_ok=True)
    row = _run_tool(tool, data, out)
    if "graph" in row:
        record.write_text(json.dumps(row))
    return row


def _run_tool(tool: str, data: dict, out: Path) -> dict:
    name = data["name"]
    if tool.startswith("ours-"):
        cmd = [sys.executable, __file__, "child-ours", str(data["fp32"]), str(data["calib"]), str(out), name,
               tool.removeprefix("ours-")]
    elif tool.startswith("ort-"):
        cmd = [sys.executable, __file__, "child-ort", str(data["fp32"]), str(data["calib"]), str(out),
               "default" if tool == "ort-default" else "tensorrt"]
    else:
        python, why = venv_python(tool)
        if python is None:
            return {"tool": tool, "failed": why}
        script = WORK / f"quantize_with_{tool.replace('-', '_')}.py"  # not nncf.py: it would shadow the module
        script.write_text(PRELUDE + VENV_TOOLS[tool][1] + EPILOGUE)
        cmd = [str(python), str(script), str(data["fp32"]), str(data["calib"]), str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)} if tool.startswith(("ours-", "ort-")) else \
        {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    stdout, stderr = process.communicate()
    if process.returncode != 0 or not out.is_file():
        lines = [line for line in stderr.strip().splitlines() if line.strip()]
        return {"tool": tool, "failed": f"quantize failed: {(lines or ['?'])[-1][:200]}"}
    row = json.loads(stdout.strip().splitlines()[-1])
    return {"tool": tool, "graph": str(out), "wall_s": round(row["wall_s"], 2), "peak_rss_mb": round(row["peak_rss_mb"])}


def report(start: float) -> None:
    """A child's last line: its wall time since `start` and its own peak RSS (the whole process)."""
    import resource

    print(json.dumps({"wall_s": time.perf_counter() - start,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


# ----------------------------------------------------------------------------- measure
def session(path, optimized: bool = True, threads: int = 1):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.log_severity_level = 3
    options.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimized
                                        else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def outputs(path, images: np.ndarray, optimized: bool) -> np.ndarray:
    sess = session(path, optimized, threads=2)
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: images[i:i + 64]})[0] for i in range(0, len(images), 64)])


def accuracy(path, data: dict, reference: np.ndarray) -> dict:
    images, labels = data["held_out"]
    found = {}
    for mode, optimized in (("exact", False), ("ort", True)):
        logits = outputs(path, images, optimized)
        error = np.abs(logits.astype(np.float64) - reference)
        found[mode] = {"top1": float((logits.argmax(1) == labels).mean()),
                       "agreement": float((logits.argmax(1) == reference.argmax(1)).mean()),
                       "max_abs": float(error.max()), "mean_abs": float(error.mean())}
    return found


def latencies_ms(paths: list, shape, batch: int, repeats: int) -> list[float]:
    """Median latency of each graph, 1 thread, measured round-robin (one run of each graph per
    round) so that a change in the machine's load falls on all of them alike."""
    sessions = [session(path) for path in paths]
    x = np.random.default_rng(0).standard_normal((batch, *shape)).astype(np.float32)
    feeds = [{sess.get_inputs()[0].name: x} for sess in sessions]
    for sess, feed in zip(sessions, feeds):
        sess.run(None, feed)
    times = [[] for _ in sessions]
    for _ in range(repeats):
        for index, (sess, feed) in enumerate(zip(sessions, feeds)):
            start = time.perf_counter()
            sess.run(None, feed)
            times[index].append(time.perf_counter() - start)
    return [1000 * float(np.median(t)) for t in times]


def fused_ops(path) -> dict:
    """What ORT CPU runs: op counts of its optimized graph (QLinearConv etc.)."""
    import collections

    import onnx
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(Path(path).with_suffix(".ort-optimized.onnx"))
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    counts = collections.Counter(n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node)
    return {op: counts[op] for op in ("QLinearConv", "Conv", "FusedConv", "QLinearConcat", "Concat") if counts[op]}


def engine(label: str, path, recipe) -> dict:
    from bench_engines import measure

    try:
        row = measure(label, Path(path), recipe)
    except Exception as exc:  # one tool's graph must not stop the table
        return {"parser": f"error: {type(exc).__name__}: {str(exc)[:150]}"}
    return {k: row.get(k) for k in ("parser", "convolutions", "build_seconds", "lint_errors")}


def measure_all(data: dict, rows: list[dict], repeats: int, with_engine: bool) -> None:
    name, recipe = data["name"], data["recipe"]
    shape = (3, *recipe.input_hw)
    reference = outputs(data["fp32"], data["held_out"][0], True).astype(np.float64) if data["held_out"] else None
    graphs = [{"tool": "FP32", "graph": str(data["fp32"])}] + rows
    built = [row for row in graphs if "graph" in row]
    for row in graphs:
        row["model"] = name
    for row in built:
        row["latency_ms"] = {}
    for batch in (1, 8):
        for row, ms in zip(built, latencies_ms([r["graph"] for r in built], shape, batch, repeats)):
            row["latency_ms"][batch] = round(ms, 2)
    for row in built:
        path = row["graph"]
        if reference is not None:
            row["accuracy"] = accuracy(path, data, reference) if row["tool"] != "FP32" else {
                "ort": {"top1": float((reference.argmax(1) == data["held_out"][1]).mean())}}
        row["latency_ratio"] = {b: round(row["latency_ms"][b] / built[0]["latency_ms"][b], 3) for b in (1, 8)}
        row["ort_fused"] = fused_ops(path)
        if with_engine:
            row["tensorrt_rtx"] = engine(row["tool"], path, recipe)
        print(json.dumps({k: v for k, v in row.items() if k != "graph"}), flush=True)
    rows.insert(0, graphs[0])


# ----------------------------------------------------------------------------- report
def table(rows: list[dict]) -> str:
    head = ("| model | tool | top-1 | agreement | max / mean abs logit error, exact | same, ORT optimized | "
            "quantize s | peak RSS MB | ORT CPU latency vs FP32, b1 / b8 | ORT fused | TensorRT-RTX | Conv Int8/Half/Float |")
    lines = [head, "|" + " --- |" * (head.count("|") - 1)]
    for r in rows:
        if "failed" in r:
            lines.append(f"| {r['model']} | {r['tool']} | {r['failed']} |" + " |" * 9)
            continue
        acc = r.get("accuracy", {})
        exact, opt = acc.get("exact", {}), acc.get("ort", {})
        top1 = f"{100 * opt['top1']:.2f}%" + (f" ({100 * exact['top1']:.2f}% exact)" if exact else "") if opt else ""
        agree = f"{100 * opt['agreement']:.2f}%" if "agreement" in opt else ""
        err = lambda m: f"{m['max_abs']:.3f} / {m['mean_abs']:.4f}" if "max_abs" in m else ""  # noqa: E731
        lat = r.get("latency_ratio", {})
        fused = ", ".join(f"{k} {v}" for k, v in r.get("ort_fused", {}).items())
        trt = r.get("tensorrt_rtx", {})
        convs = trt.get("convolutions") or {}
        conv = f"{convs.get('INT8', 0)}/{convs.get('FP16', 0)}/{convs.get('FP32', 0)}" if convs else ""
        lines.append(f"| {r['model']} | {r['tool']} | {top1} | {agree} | {err(exact)} | {err(opt)} | "
                     f"{r.get('wall_s', r.get('note', ''))} | {r.get('peak_rss_mb', '')} | "
                     f"{lat.get(1, '')} / {lat.get(8, '')} | {fused} | {trt.get('parser', '')} | {conv} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", choices=list(MODELS), help="default: both")
    parser.add_argument("--tool", action="append", choices=TOOLS, help="default: all")
    parser.add_argument("--repeats", type=int, default=20, help="latency runs per batch (median)")
    parser.add_argument("--no-engine", action="store_true", help="skip the TensorRT-RTX builds")
    parser.add_argument("--reuse", action="store_true",
                        help="take a tool's graph and its quantize time/RSS from an earlier run when there (measure again only)")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "bench_int8_tools.json")
    args = parser.parse_args()
    all_rows = []
    for name in args.model or list(MODELS):
        data = prepare(name)
        rows = []
        for tool in args.tool or TOOLS:
            row = quantize(tool, data, args.reuse)
            print(json.dumps(row), flush=True)
            rows.append(row)
        for row in rows:
            row["model"] = name
        measure_all(data, rows, args.repeats if name == "googlenet-digits" else max(3, args.repeats // 4),
                    not args.no_engine)
        all_rows += rows
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(all_rows, indent=1))
    print(table(all_rows))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "child-ours":
        child_ours(*sys.argv[2:])
    elif len(sys.argv) > 1 and sys.argv[1] == "child-ort":
        child_ort(*sys.argv[2:])
    else:
        main()
