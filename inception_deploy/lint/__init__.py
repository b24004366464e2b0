"""TensorRT-readiness lint for ONNX graphs, on the CPU with onnx only (stage: lint).

`lint_model(path_or_model, target="tensorrt-11")` checks every node against what
TensorRT's ONNX parser imports (op types, opsets, types, attributes), the Q/DQ patterns it
quantizes well, strong typing, and dynamic dimensions; build-engine runs it first. Layers a
quantize run kept float on purpose (the exclusions its manifest records) are info, not warnings.
The rules are small objects listed in RULES, one module per family.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

from ..errors import UserError
from . import attributes, deployment_target, qdq, shapes, strong_typing, support
from .base import NodeRule, Rule
from .report import Finding, LintReport
from .targets import DEFAULT_TARGET, TARGET_CHOICES, Target, parse_target

# The deployment-target rule first: for an ort-cpu graph it is the one finding that explains the rest.
RULES: list[Rule] = [*deployment_target.RULES, *support.RULES, *attributes.RULES, *qdq.RULES, *strong_typing.RULES, *shapes.RULES]

ModelLike = Union[str, os.PathLike, "onnx.ModelProto"]  # noqa: F821
MISSING_ONNX = "{path}: no such ONNX file; pass the path of an .onnx model"


def _load(model_or_path: ModelLike):
    """(model, source, sha256 of the file read; None for a ModelProto). Files are read by the
    one ONNX loader (artifact.load_onnx: parsed, structure-checked, manifest parsed), without
    their external weights, which no rule reads."""
    import onnx

    from ..artifact import load_onnx
    from ..fileio import sha256_file

    if isinstance(model_or_path, onnx.ModelProto):
        return model_or_path, "<model>", None
    path = Path(model_or_path)
    model = load_onnx(path, missing=MISSING_ONNX, load_external_data=False).model
    if not model.graph.node:
        raise UserError(f"{path}: the ONNX graph has no nodes; pass an .onnx model")
    return model, str(path), sha256_file(path)


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
           "lint_model", "parse_target"]
