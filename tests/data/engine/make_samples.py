"""Remake the committed layer-report samples with TensorRT-RTX (the parser's unit tests read them).

Each sample is what TensorRT-RTX's builder logged for a real engine, verbatim: its "Layers:"
block (one line per engine layer, then the I/O tensors) and its memory totals, taken from
the VERBOSE log of `inception_deploy.engine.trt_build.build_serialized_engine` (the same
call build-engine makes). Nothing in them is written by hand.

    # the digits GoogLeNet graphs, as a user makes them:
    inception-deploy export --recipe googlenet-digits -o out/
    inception-deploy optimize out/googlenet-digits.onnx
    inception-deploy quantize out/googlenet-digits.opt.onnx --int8 -o out/googlenet-digits.int8.onnx
    inception-deploy quantize out/googlenet-digits.opt.onnx --fp16 -o out/googlenet-digits.fp16.onnx
    PYTHONPATH=. python tests/data/engine/make_samples.py out/googlenet-digits.int8.onnx out/googlenet-digits.fp16.onnx

Writes, beside this file: qdq-block.int8.rtx.log (the lint tests' Inception-like Q/DQ block,
tests/test_lint.py::qdq_model), googlenet-digits.{int8,fp16}.rtx.log.gz, and
googlenet-digits.graphs.json (per graph: every node's op type and what precision each
Conv/Gemm asks for, read by classify_graph), so the tests need neither the model nor TensorRT.
"""

from __future__ import annotations

import gzip
import json
import sys
import tempfile
from pathlib import Path

import onnx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # tests/, for the lint corpus


def report_text(onnx_path: Path) -> str:
    from inception_deploy.engine.flavours import DEFAULT_COMPUTE_CAPABILITIES, TENSORRT_RTX
    from inception_deploy.engine.trt_build import BuildRequest, build_serialized_engine

    model = onnx.load(str(onnx_path))
    name = model.graph.input[0].name
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim][1:]
    profile = {name: ((1, *dims), (8, *dims), (64, *dims))}
    built = build_serialized_engine(BuildRequest(onnx_path, profile, 1 << 30, 3,
                                                 compute_capabilities=DEFAULT_COMPUTE_CAPABILITIES), TENSORRT_RTX)
    return "\n".join(built.report_messages()) + "\n"


def graph_facts(onnx_path: Path) -> dict:
    from inception_deploy.engine.graph_precision import classify_graph

    model = onnx.load(str(onnx_path))
    graph = classify_graph(model)
    return {"kind": graph.kind, "node_precisions": graph.node_precisions,
            "op_types": {n.name: n.op_type for n in model.graph.node if n.name}}


def main(int8_graph: str, fp16_graph: str) -> None:
    from test_lint import qdq_model

    with tempfile.TemporaryDirectory() as folder:
        block = Path(folder) / "qdq-block.int8.onnx"
        onnx.save(qdq_model(), block)
        (HERE / "qdq-block.int8.rtx.log").write_text(report_text(block))
    facts = {}
    for precision, path in (("int8", Path(int8_graph)), ("fp16", Path(fp16_graph))):
        with gzip.open(HERE / f"googlenet-digits.{precision}.rtx.log.gz", "wt") as out:
            out.write(report_text(path))
        facts[precision] = graph_facts(path)
    (HERE / "googlenet-digits.graphs.json").write_text(json.dumps(facts, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main(*sys.argv[1:3])
