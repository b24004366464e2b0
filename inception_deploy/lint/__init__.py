"""TensorRT-readiness lint for ONNX graphs, on the CPU with onnx only (stage: lint).

`lint_model(path_or_model, target="tensorrt-11")` checks every node against what
TensorRT's ONNX parser imports (op types, opsets, types, attributes), the Q/DQ patterns it
quantizes well, strong typing, and dynamic dimensions; build-engine runs it first.
The rules are small objects listed in RULES, one module per family.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

from ..errors import UserError
from . import attributes, qdq, shapes, strong_typing, support
from .base import NodeRule, Rule
from .report import Finding, LintReport
from .targets import DEFAULT_TARGET, TARGET_CHOICES, Target, parse_target

RULES: list[Rule] = [*support.RULES, *attributes.RULES, *qdq.RULES, *strong_typing.RULES, *shapes.RULES]

ModelLike = Union[str, os.PathLike, bytes, "onnx.ModelProto"]  # noqa: F821


def load_onnx(model_or_path: ModelLike):
    """An onnx.ModelProto from a path, bytes or a ModelProto; UserError when unreadable."""
    model, source, _ = _load(model_or_path)
    return model, source


def _load(model_or_path: ModelLike):
    """(model, source, sha256 of the bytes read; None for a ModelProto)."""
    import hashlib

    import onnx

    if isinstance(model_or_path, onnx.ModelProto):
        return model_or_path, "<model>", None
    if isinstance(model_or_path, bytes):
        source, data = "<bytes>", model_or_path
    else:
        path = Path(model_or_path)
        source = str(path)
        if not path.is_file():
            raise UserError(f"{path}: no such ONNX file; pass the path of an .onnx model")
        data = path.read_bytes()
    try:
        model = onnx.load_model_from_string(data)
    except Exception as exc:  # protobuf raises DecodeError and friends
        raise UserError(f"{source}: not a readable ONNX model ({type(exc).__name__}); pass an .onnx file "
                        "written by `inception-deploy export` or torch.onnx.export") from None
    if not model.graph.node:
        raise UserError(f"{source}: the ONNX graph has no nodes; pass an .onnx model")
    return model, source, hashlib.sha256(data).hexdigest()


def lint_model(model_or_path: ModelLike, target: str | Target = DEFAULT_TARGET,
               rules: list[Rule] | None = None) -> LintReport:
    """Check an ONNX model for a TensorRT release; the report is truthy when it has no errors."""
    from .graph import GraphView

    resolved = parse_target(target)
    model, source, sha256 = _load(model_or_path)
    view = GraphView(model)
    report = LintReport(target=resolved.name, source=source, nodes_checked=len(view.nodes), sha256=sha256)
    for rule in rules if rules is not None else RULES:
        report.findings.extend(rule.check(view, resolved))
    return report


__all__ = ["DEFAULT_TARGET", "Finding", "LintReport", "NodeRule", "RULES", "Rule", "TARGET_CHOICES", "Target",
           "lint_model", "load_onnx", "parse_target"]
