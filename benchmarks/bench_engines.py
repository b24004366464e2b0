"""Benchmark (stage: build-engine): where each INT8 tool's Q/DQ placement lands, read from the engine.

For GoogLeNet (the trained digits model) and Inception v3 (299, random weights with BatchNorm
re-estimated: placement, not accuracy), builds with the same TensorRT-RTX and the same
targets: the FP32 graph (the baseline), our INT8 graph (`inception-deploy quantize`, as `run`
makes it) and onnxruntime's `quantize_static` QDQ graph (MinMax, symmetric, per-channel int8,
as bench_quantize.py makes it), once as it comes and once with its bias quantization off
(QuantizeBias=False: the setting a TensorRT user reaches for after the parser rejects int32
biases). Each graph is built without our lint, so NVIDIA's parser is the judge; the engine's
layer report then says how its convolutions run (Int8 / Half / Float), which layers the
builder added, whether each Concat was removed or requantized, and the weights and
activation memory. Goals (issue 10): every convolution we quantize runs Int8, no
requantization at any Inception Concat, weights memory <= 0.3x the FP32 plan's.

    python benchmarks/bench_engines.py                     # both models; table + results/bench_engines.json
    python benchmarks/bench_engines.py --model googlenet-digits
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
WORK = Path("/tmp/bench_engines")
MODELS = ("googlenet-digits", "inception_v3")


def optimized_fp32(name: str, folder: Path) -> Path:
    """The model's optimized FP32 graph in `folder`, made once: the trained digits GoogLeNet
    (cached), or Inception v3 with random weights (BatchNorm re-estimated)."""
    from inception_deploy.export import export_onnx
    from inception_deploy.passes import optimize_onnx
    from inception_deploy.recipes import load_recipe

    recipe = load_recipe(name)
    optimized = folder / f"{name}.opt.onnx"
    if not optimized.is_file():
        weights = None if name == "googlenet-digits" else "random"  # the digits model is trained (cached)
        fp32 = export_onnx(recipe, weights, folder, progress=False).path
        optimize_onnx(fp32, optimized, recipe=recipe, check_images=2)
    return optimized


def graphs(name: str) -> dict[str, Path]:
    """FP32 (optimized), ours INT8, and quantize_static's two QDQ graphs of one model, made once."""
    from bench_quantize import ort_quantize_static

    from inception_deploy.precision import quantize_onnx
    from inception_deploy.recipes import load_recipe, recipe_from_dict

    folder = WORK / name
    recipe = load_recipe(name)
    optimized = optimized_fp32(name, folder)
    ours = folder / f"{name}.int8.onnx"
    if not ours.is_file():
        if name == "googlenet-digits":
            quantize_onnx(optimized, ours, recipe=recipe, progress=False)  # as `run`: the committed cache
        else:
            # Placement, not accuracy: 32 digits at 299, max calibration, no bias correction (it
            # changes bias values only), evaluated on 32 images.
            raw = recipe.to_dict()
            raw["data"]["max_images"] = 32
            quantize_onnx(optimized, ours, recipe=recipe_from_dict(raw), calib_data="digits-train", calib_count=32,
                          calib_method="max", bias_correction=False, progress=False)
    found = {"FP32": optimized, "ours INT8": ours}
    # The last variant also keeps Inception v3's transform_input (Mul/Add on the input) float:
    # quantize_static quantizes its scalar constants, which TensorRT-RTX's builder refuses.
    variants = (("quantize_static", {}, {}),
                ("quantize_static, float bias", {"QuantizeBias": False}, {}),
                ("quantize_static, float bias, Conv/Gemm/pool/Concat only", {"QuantizeBias": False},
                 {"op_types_to_quantize": ["Conv", "Gemm", "MaxPool", "AveragePool", "GlobalAveragePool", "Concat"]}))
    for label, extra, options in variants:
        path = folder / f"{name}.{label.replace(', ', '-').replace(' ', '-').replace('/', '-')}.onnx"
        if not path.is_file():
            ort_quantize_static(optimized, path, recipe, 32, "max", extra_options=extra, **options)
        found[label] = path
    return found


def measure(label: str, path: Path, recipe) -> dict:
    """Build one graph with TensorRT-RTX (no lint first) and read its engine."""
    import onnx

    from inception_deploy.engine.build import profile_shapes
    from inception_deploy.engine.flavours import DEFAULT_COMPUTE_CAPABILITIES, TENSORRT_RTX
    from inception_deploy.engine.graph_precision import classify_graph
    from inception_deploy.engine.plan_report import describe_plan
    from inception_deploy.engine.precision_check import check_precision
    from inception_deploy.engine.trt_build import BuildRequest, build_serialized_engine
    from inception_deploy.errors import InceptionDeployError, UserError
    from inception_deploy.lint import lint_model
    from inception_deploy.lint.graph import GraphView

    model = onnx.load(str(path))
    view = GraphView(model)
    graph = classify_graph(view)
    lint = lint_model(model, "tensorrt-rtx")
    row = {"graph": label, "onnx": str(path), "lint_errors": len(lint.errors),
           "lint_rules": sorted(lint.rules_failed()), "quantized_convs": sum(
               p == "INT8" for n, p in graph.node_precisions.items() if _op(view, n) == "Conv")}
    shapes, dynamic = profile_shapes(model, recipe.engine.batch)
    request = BuildRequest(path, {n: tuple(tuple(shapes[n][k]) for k in ("min", "opt", "max")) for n in dynamic},
                           recipe.engine.workspace_mb << 20, recipe.engine.optimization_level,
                           compute_capabilities=DEFAULT_COMPUTE_CAPABILITIES)
    started = time.perf_counter()
    try:
        built = build_serialized_engine(request, TENSORRT_RTX)
    except UserError as exc:  # the parser's refusal
        row["parser"] = "parser rejects: " + str(exc).split("rejected ", 1)[-1].split("\n")[0][:150]
        return row
    except InceptionDeployError as exc:  # parsed, but the builder stops
        row["parser"] = "builder fails: " + str(exc).split(": ", 2)[-1].split(" In ")[0][:150]
        return row
    seconds = time.perf_counter() - started
    truth = check_precision(built.layer_report, graph.kind if graph.kind != "bf16" else "fp16",
                            graph.node_precisions)
    plan = describe_plan(built.layer_report, view, truth, builder=f"TensorRT-RTX {built.builder_version}",
                         targets=built.targets, plan_bytes=len(built.plan), build_seconds=seconds)
    added: dict[str, int] = {}
    for layer in plan.added:
        added[layer.does] = added.get(layer.does, 0) + 1
    row.update(parser="built", truth_check="PASSED" if truth else "FAILED", convolutions=plan.convolutions,
               gemms=plan.gemms, added=added, concats=len(plan.concats), concats_removed=plan.concats_removed,
               concats_requantized=plan.concats_rescaled, weights_bytes=plan.weights_bytes,
               activation_bytes=plan.activation_bytes, plan_bytes=plan.plan_bytes, build_seconds=round(seconds, 2),
               engine_layers=plan.engine_layers)
    return row


def _op(view, node_name: str) -> str:
    return next((n.op_type for n in view.nodes if n.name == node_name), "?")


def table(rows: list[dict]) -> str:
    head = ("| model | graph | lint tensorrt-rtx | TensorRT-RTX | Conv Int8 / Half / Float (quantized in graph) | GEMM | "
            "layers added | Concats removed / requantized | weights MB (x FP32) | activation MB | plan MB | build s |")
    lines = [head, "|" + " --- |" * (head.count("|") - 1)]
    for row in rows:
        lint = (f"{row['lint_errors']} errors ({', '.join(row['lint_rules'])})" if row["lint_errors"] else "clean")
        if row.get("parser") != "built":
            lines.append(f"| {row['model']} | {row['graph']} | {lint} | {row['parser']} | | | | | | | | |")
            continue
        convs = row["convolutions"]
        fp32 = next(r for r in rows if r["model"] == row["model"] and r["graph"] == "FP32")
        ratio = row["weights_bytes"] / fp32["weights_bytes"]
        added = ", ".join(f"{n} {k}" for k, n in row["added"].items()) or "none"
        lines.append(
            f"| {row['model']} | {row['graph']} | {lint} | built, truth check {row['truth_check']} | "
            f"{convs.get('INT8', 0)} / {convs.get('FP16', 0)} / {convs.get('FP32', 0)} ({row['quantized_convs']}) | "
            f"{', '.join(f'{n} {k}' for k, n in row['gemms'].items())} | {added} | "
            f"{row['concats_removed']} of {row['concats']} / {row['concats_requantized']} | "
            f"{row['weights_bytes'] / 1e6:.2f} ({ratio:.2f}x) | {row['activation_bytes'] / 1e6:.1f} | "
            f"{row['plan_bytes'] / 1e6:.2f} | {row['build_seconds']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", choices=MODELS, help="default: both")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "bench_engines.json")
    args = parser.parse_args()

    from inception_deploy.engine.flavours import TENSORRT_RTX
    from inception_deploy.recipes import load_recipe

    rows = []
    for name in args.model or MODELS:
        recipe = load_recipe(name)
        for label, path in graphs(name).items():
            row = {"model": name, **measure(label, path, recipe)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    print()
    print(table(rows))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"builder": f"TensorRT-RTX {TENSORRT_RTX.version()}", "rows": rows}, indent=1))
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
