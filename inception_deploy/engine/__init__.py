"""TensorRT engines (stage: build-engine): build a plan + manifest from an ONNX graph, check
the precision the engine really runs in, and describe the plan for the runner.

Only trt_build.py and backends/tensorrt_backend.py import tensorrt, inside functions;
everything else here runs on a CPU-only machine.
"""

from .build import EngineBuildResult, build_engine, default_plan_path
from .environment import INSTALL_HINT, require_tensorrt_and_gpu
from .graph_precision import GraphPrecision, classify_graph
from .inspector import LayerPrecision, PrecisionNotMaterialized, PrecisionReport, check_precision, parse_layer_information
from .manifest import EngineManifest, manifest_path, read_manifest

__all__ = [
    "EngineBuildResult", "EngineManifest", "GraphPrecision", "INSTALL_HINT", "LayerPrecision",
    "PrecisionNotMaterialized", "PrecisionReport", "build_engine", "check_precision", "classify_graph",
    "default_plan_path", "manifest_path", "parse_layer_information", "read_manifest", "require_tensorrt_and_gpu",
]
