"""The lint meets NVIDIA's real parser (stage: lint, build-engine): every graph of the lint's
broken-graph corpus (test_lint.CORPUS) goes to TensorRT-RTX's ONNX parser and builder, and
the outcome is compared with what the lint says for TensorRT-RTX and for TensorRT 11.

Where the two disagree, the table below says who is right and why, and the test holds both
sides to it: a graph the lint refuses but TensorRT-RTX builds is either wrong in the engine
(the engine's own layer report shows the convolution in FP32, or the builder warns that it
reads UINT8 as INT8), or refused by a rule that is TensorRT 10/11's (with its source), or
refused by build-engine's own rule. The builds run in a child process: TensorRT-RTX 1.7
crashes (SIGSEGV) on one graph of the corpus, which the lint refuses first.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import onnx
import pytest

from inception_deploy.engine import TENSORRT_RTX
from inception_deploy.lint import lint_model

from test_lint import CORPUS

pytestmark = pytest.mark.skipif(not TENSORRT_RTX.installed(), reason="needs TensorRT-RTX (pip install -e '.[rtx]')")


@dataclass(frozen=True)
class Expected:
    lint_rtx: tuple[str, ...]  # the rules whose errors the lint reports for tensorrt-rtx
    rtx: str  # what TensorRT-RTX does: "built" | "rejected" (parser) | "build failed" (builder) | "crashed"
    lint_trt11: tuple[str, ...] | None = None  # for tensorrt-11 when it differs
    why: str = ""  # who is right, where lint and NVIDIA disagree
    runs_fp32: tuple[str, ...] = ()  # Conv nodes the built engine runs in FP32 although the graph quantizes them


EXPECTED = {
    "fp32 conv": Expected((), "built"),
    "fp16 conv": Expected((), "built"),
    "qdq block": Expected((), "built"),
    "unsupported op": Expected(("op-supported",), "rejected"),
    "QLinearConv": Expected(("op-supported",), "rejected"),
    "custom domain op": Expected(("op-supported",), "rejected"),
    "Swish at opset 24": Expected((), "built"),
    "opset 8": Expected(("opset-range",), "built", why=(
        "lint: NVIDIA's ONNX opset guide gives opset 9 as the official minimum; the parser builds a one-Relu "
        "opset-8 graph, which promises nothing for real models. Rule kept.")),
    "opset 25": Expected((), "built", lint_trt11=("opset-range",), why=(
        "both: TensorRT 11.0-11.4 import opsets up to 24 (11.5 release notes add 25); TensorRT-RTX 1.7 builds 25. "
        "The rule's limit is per target: 25 for tensorrt-rtx and tensorrt-11.5+.")),
    "UINT8 Concat": Expected(("op-dtype",), "rejected"),
    "Cast to INT8": Expected((), "built", lint_trt11=("cast-target",), why=(
        "both: TensorRT 10.15's operator matrix has no INT8 Cast target (error for tensorrt-10/11); TensorRT-RTX "
        "builds a saturating cast to an Int8 output. A warning for tensorrt-rtx: a cast does not quantize.")),
    "SAME_UPPER with pads": Expected(("auto-pad",), "rejected"),
    "short conv bias": Expected(("conv-bias",), "rejected"),
    "conv group mismatch": Expected(("conv-shape",), "rejected"),
    "pool dilations and indices": Expected(("pool-shape",), "rejected"),
    "Dropout in training mode": Expected(("inference-only",), "rejected"),
    "ReduceMean axes at run time": Expected(("constant-input",), "rejected"),
    "Q/DQ zero point 3": Expected(("qdq-zero-point",), "rejected"),
    "Q/DQ uint8": Expected(("qdq-int8",), "built", why=(
        "lint: the parser warns it imports UINT8 Q/DQ as INT8 (only DLA takes UINT8), so the engine reads "
        "asymmetric uint8 values as int8: wrong numbers.")),
    "Q/DQ negative scale": Expected(("qdq-scale",), "rejected"),
    "Q/DQ scale at run time": Expected(("qdq-scale",), "crashed", why=(
        "lint: TensorRT-RTX 1.7's builder crashes the process (SIGSEGV) on a QuantizeLinear whose scale is a graph "
        "input; the Quantize layer needs a build-time constant scale.")),
    "per-channel scale length": Expected(("qdq-scale-shape",), "rejected"),
    "weights quantized on axis 1": Expected(("qdq-weight-axis",), "built", runs_fp32=("conv1",), why=(
        "lint: it builds, but the engine dequantizes the weights and runs conv1 in FP32 (its layer report).")),
    "activations per channel": Expected(("qdq-activation-per-tensor",), "built", runs_fp32=("conv1",), why=(
        "lint: it builds, but conv1 runs in FP32 in the engine.")),
    "weights-only quantized conv": Expected(("qdq-conv-inputs",), "built", runs_fp32=("conv1",), why=(
        "lint: it builds, but conv1 runs in FP32 in the engine.")),
    "Concat inputs with two scales": Expected((), "built", why=(
        "NVIDIA: it builds and requantizes at the Concat. Was an error; now a warning (a cost, not a failure); the "
        "plan report says 'requantized'.")),
    "quantized graph output": Expected((), "built", why=(
        "NVIDIA: it builds with an Int8 engine output. Was an error; now a warning (the caller must dequantize).")),
    "quantized bias": Expected(("qdq-bias", "qdq-int8"), "rejected"),
    "quantized scalar constant": Expected(("qdq-scalar-constant",), "build failed", lint_trt11=(), why=(
        "NVIDIA: the parser takes it but TensorRT-RTX's builder refuses a 0-d quantized constant behind a DQ (found "
        "building quantize_static's Inception v3 graph, whose lint was clean). New rule: an error for tensorrt-rtx, a "
        "warning for TensorRT 10/11 (not confirmed there).")),
    "Q/DQ between Conv and Relu": Expected((), "built"),
    "FP16 conv with FP32 bias": Expected(("mixed-precision",), "rejected"),
    "FP16 output without a type": Expected(("io-types",), "rejected"),
    "FP16 graph with an untyped tensor": Expected(("fp16-typed", "op-supported"), "rejected"),
    "dynamic height and width": Expected(("dynamic-dims",), "built", why=(
        "build-engine's own rule: its optimization profile covers the batch axis only; TensorRT builds any "
        "profile.")),
    "Reshape to a fixed batch": Expected(("reshape-batch",), "built", why=(
        "lint: it builds, but the reshape to [1, -1] is only right at batch 1; every other profile batch is wrong.")),
    "invalid ONNX": Expected(("onnx-valid",), "rejected"),
}


# Where the lint and TensorRT-RTX disagreed before this test existed, and the rule was fixed.
DISAGREED_BEFORE = {"Concat inputs with two scales", "quantized graph output", "quantized scalar constant"}


def _profile(model) -> dict:
    """Batch 1..4 for a dynamic first axis, 8 for other dynamic axes (the corpus graphs are tiny)."""
    initializers = {t.name for t in model.graph.initializer}
    profile = {}
    for value in model.graph.input:
        if value.name in initializers:
            continue
        dims = [d.dim_value if d.HasField("dim_value") else None for d in value.type.tensor_type.shape.dim]
        if any(d is None for d in dims):
            low = tuple(d if d is not None else (1 if i == 0 else 8) for i, d in enumerate(dims))
            high = tuple(d if d is not None else (4 if i == 0 else 8) for i, d in enumerate(dims))
            profile[value.name] = (low, low, high)
    return profile


def build_one(path: str) -> dict:
    """Parse and build one graph with TensorRT-RTX (what build-engine's builder does, minus the lint)."""
    from inception_deploy.engine.graph_precision import classify_graph
    from inception_deploy.engine.precision_check import check_precision
    from inception_deploy.engine.trt_build import BuildRequest, build_serialized_engine
    from inception_deploy.errors import InceptionDeployError, UserError

    model = onnx.load(path)
    request = BuildRequest(Path(path), _profile(model), 1 << 28, 3, compute_capabilities=("sm86",))
    try:
        built = build_serialized_engine(request, TENSORRT_RTX)
    except UserError as exc:
        return {"rtx": "rejected", "detail": str(exc)}
    except InceptionDeployError as exc:
        return {"rtx": "build failed", "detail": str(exc)}
    truth = check_precision(built.layer_report, "fp32", classify_graph(model).node_precisions)
    return {"rtx": "built", "warnings": built.warnings,
            "conv_datatypes": {v.node: v.data for v in truth.verdicts if v.node != "?"}}


def _child(paths: list[str]) -> None:
    for path in paths:
        print(json.dumps({"path": path, **build_one(path)}), flush=True)


def _build_all(paths: list[Path]) -> dict[str, dict]:
    """Build every graph in child processes; a child that dies marks its graph "crashed" and the next goes on."""
    results: dict[str, dict] = {}
    remaining = [str(p) for p in paths]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), str(Path(__file__).parent),
                                                        os.environ.get("PYTHONPATH", "")])}
    while remaining:
        done = subprocess.run([sys.executable, __file__, *remaining], capture_output=True, text=True, env=env,
                              timeout=600)
        for line in done.stdout.splitlines():
            if line.startswith("{"):
                entry = json.loads(line)
                results[entry.pop("path")] = entry
        remaining = [p for p in remaining if p not in results]
        if remaining and done.returncode == 0:
            raise AssertionError(f"child finished without results for {remaining}: {done.stderr[-2000:]}")
        if remaining:
            results[remaining.pop(0)] = {"rtx": "crashed", "detail": f"exit {done.returncode}"}
    return results


@pytest.fixture(scope="module")
def corpus_results(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lint-vs-rtx")
    paths = {}
    for index, (name, make) in enumerate(CORPUS.items()):
        paths[name] = folder / f"{index:02d}.onnx"
        onnx.save(make(), paths[name])
    results = _build_all(list(paths.values()))
    return {name: results[str(path)] for name, path in paths.items()}


def test_every_corpus_graph_has_a_verdict():
    assert set(EXPECTED) == set(CORPUS)


@pytest.mark.parametrize("name", list(CORPUS))
def test_lint_and_tensorrt_rtx_agree_or_the_disagreement_is_explained(name, corpus_results):
    expected, got = EXPECTED[name], corpus_results[name]
    model = CORPUS[name]()
    assert tuple(sorted(lint_model(model, "tensorrt-rtx").rules_failed())) == expected.lint_rtx
    trt11 = expected.lint_trt11 if expected.lint_trt11 is not None else expected.lint_rtx
    assert tuple(sorted(lint_model(model, "tensorrt-11").rules_failed())) == trt11
    assert got["rtx"] == expected.rtx, got.get("detail")
    lint_refuses = bool(expected.lint_rtx)
    if lint_refuses != (expected.rtx != "built") or expected.lint_trt11 is not None or name in DISAGREED_BEFORE:
        assert expected.why, f"{name}: lint and TensorRT-RTX disagree; say who is right"
    if expected.runs_fp32:
        assert {node: got["conv_datatypes"][node] for node in expected.runs_fp32} == dict.fromkeys(
            expected.runs_fp32, "FP32")
        assert set(got["conv_datatypes"].values()) == {"FP32", "INT8"}  # the other conv is INT8
    if name == "Q/DQ uint8":
        assert any("UINT8" in w and "Defaulting to INT8" in w for w in got["warnings"])


if __name__ == "__main__":
    _child(sys.argv[1:])
