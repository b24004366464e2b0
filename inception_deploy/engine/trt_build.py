"""The TensorRT part of build-engine, kept thin (stage: build-engine, GPU only).

Parse the ONNX file into a strongly typed network (10.x: the STRONGLY_TYPED flag; 11.x:
always), give the batch profile, workspace limit, optimization level and timing cache,
build the serialized plan, and read the engine inspector's layer JSON. Everything else
(lint, precision checks, manifest, atomic writes) lives in build.py, which runs without
TensorRT. `tensorrt` is imported inside the functions only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ..errors import InceptionDeployError, UserError
from .environment import tensorrt_import_error


@dataclass
class BuildRequest:
    onnx_path: Path
    profile: dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]  # dynamic inputs only
    workspace_bytes: int
    optimization_level: int
    timing_cache: Optional[bytes] = None


@dataclass
class BuildOutput:
    plan: bytes
    layer_information: str
    timing_cache: bytes
    tensorrt_version: str
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ParserIssue:
    node_index: int
    node_name: str
    op_type: str
    description: str


def _import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise tensorrt_import_error(exc) from None
    return trt


def _logger(trt):
    """An ILogger that keeps errors and warnings for our one-line messages instead of printing."""

    class CollectingLogger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.errors: list[str] = []
            self.warnings: list[str] = []

        def log(self, severity, msg):
            if severity in (trt.ILogger.ERROR, trt.ILogger.INTERNAL_ERROR):
                self.errors.append(msg)
            elif severity == trt.ILogger.WARNING:
                self.warnings.append(msg)

    return CollectingLogger()


def network_flags(trt) -> int:
    if _major(trt.__version__) >= 11:
        return 0  # every TensorRT 11 network is strongly typed; the flag is gone
    return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)


def _major(version: str) -> int:
    return int(str(version).split(".")[0])


def _parser_issues(parser) -> list[ParserIssue]:
    issues = []
    for index in range(parser.num_errors):
        error = parser.get_error(index)
        issues.append(ParserIssue(int(error.node()), str(error.node_name()), str(error.node_operator()),
                                  str(error.desc())))
    return issues


def build_serialized_engine(request: BuildRequest) -> BuildOutput:
    trt = _import_tensorrt()
    logger = _logger(trt)
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(request.onnx_path)):
        raise UserError(describe_parser_issues(request.onnx_path, trt.__version__, _parser_issues(parser)))

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, request.workspace_bytes)
    config.builder_optimization_level = request.optimization_level
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED  # the precision check reads layer details
    if request.profile:
        profile = builder.create_optimization_profile()
        for name, (smallest, usual, largest) in request.profile.items():
            profile.set_shape(name, smallest, usual, largest)
        config.add_optimization_profile(profile)
    cache = config.create_timing_cache(request.timing_cache or b"")
    if not config.set_timing_cache(cache, False):
        # A cache from another GPU or TensorRT version does not apply; start a fresh one.
        config.set_timing_cache(config.create_timing_cache(b""), False)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        reason = logger.errors[-1] if logger.errors else "no reason given"
        raise InceptionDeployError(f"TensorRT {trt.__version__} could not build {request.onnx_path}: {reason}")
    plan = bytes(serialized)
    timing_cache = bytes(config.get_timing_cache().serialize())

    runtime = trt.Runtime(logger)
    engine = runtime.deserialize_cuda_engine(plan)
    inspector = engine.create_engine_inspector()
    layer_information = inspector.get_engine_information(trt.LayerInformationFormat.JSON)
    return BuildOutput(plan, layer_information, timing_cache, trt.__version__, list(logger.warnings))


def describe_parser_issues(onnx_path: Path, version: str, issues: list[ParserIssue]) -> str:
    """One line: every node the parser rejected, with its op type and TensorRT's reason."""
    if not issues:
        return f"{onnx_path}: TensorRT {version}'s ONNX parser rejected the model without naming a node"
    listed = "; ".join(f"{issue.op_type} '{issue.node_name}' (node {issue.node_index}): {issue.description}"
                       for issue in issues)
    return (f"{onnx_path}: TensorRT {version}'s ONNX parser rejected {len(issues)} node(s): {listed}; "
            f"see `inception-deploy lint {onnx_path}`")
