"""Validation, the CI gate (stage: validate): metrics, verdicts, layer-wise search, reports, shards.

    report = validate(recipe, targets=["out/googlenet.int8.onnx"], data="val/", output_dir="report/")
    sys.exit(report.exit_code)
"""

from .layerwise import LayerwiseResult, compare_layers, module_path
from .merge import merge_reports
from .metrics import ValidationComparison, mcnemar_pvalue, wilson_interval
from .stage import validate
from .report import TargetResult, ValidationReport
from .verdict import Check

__all__ = [
    "Check", "LayerwiseResult", "TargetResult", "ValidationComparison", "ValidationReport", "compare_layers",
    "mcnemar_pvalue", "merge_reports", "module_path", "validate", "wilson_interval",
]
