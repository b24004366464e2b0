"""TensorRT engines (stage: build-engine): build a plan + manifest from an ONNX graph with
TensorRT 10/11 or TensorRT-RTX, check the precision every layer of the engine really runs
in, describe the plan, and open it for the runner.

Only trt_build.py, rtx_build.py and backends/tensorrt_backend.py import tensorrt or
tensorrt_rtx, inside functions; everything else here runs on a machine without either.
"""

from .build import EngineBuildResult, build_engine, default_plan_path
from .flavours import BUILDER_CHOICES, DEFAULT_COMPUTE_CAPABILITIES, TENSORRT, TENSORRT_RTX, Flavour, choose_flavour
from .graph_precision import GraphPrecision, classify_graph
from .layer_report import EngineLayer, LayerReport, TensorInfo, parse_builder_log, parse_inspector_json
from .manifest import EngineManifest, manifest_path, read_manifest
from .plan_files import PLAN_SUFFIXES, is_plan
from .plan_report import PlanReport, describe_plan
from .precision_check import NodeVerdict, PrecisionNotMaterialized, PrecisionReport, check_precision

__all__ = [
    "BUILDER_CHOICES", "DEFAULT_COMPUTE_CAPABILITIES", "EngineBuildResult", "EngineLayer", "EngineManifest", "Flavour",
    "GraphPrecision", "LayerReport", "NodeVerdict", "PLAN_SUFFIXES", "PlanReport", "PrecisionNotMaterialized",
    "PrecisionReport", "TENSORRT", "TENSORRT_RTX", "TensorInfo", "build_engine", "check_precision", "choose_flavour",
    "classify_graph", "default_plan_path", "describe_plan", "is_plan", "manifest_path", "parse_builder_log",
    "parse_inspector_json", "read_manifest",
]
