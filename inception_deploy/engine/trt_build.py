"""The TensorRT calls of build-engine, shared by both builders (stage: build-engine).

`build_serialized_engine(request, flavour)` parses the ONNX file into a strongly typed
network, sets the batch profile, workspace limit, optimization level and the flavour's
targets and build cache, builds the serialized plan and reads its layer report. The module
is the flavour's (`tensorrt` or `tensorrt_rtx`: the same Python API); what differs is in a
hooks object: TensorRTHooks below (TensorRT 10/11), RTXHooks in rtx_build.py. Everything
else (lint, precision checks, reports, manifest, atomic writes) lives in build.py, which runs
without TensorRT.

`tensorrt` is imported inside TensorRTHooks.load only. ../shared/tensorrt/check_api.py reads
every trt.* name and call in this file against TensorRT 10.16 and 11.4; the TensorRT-RTX-only
calls (compute capabilities, runtime cache) live in rtx_build.py, checked against the
installed tensorrt_rtx by a test.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ..errors import InceptionDeployError, MissingDependency, UserError
from .flavours import flavour_hooks
from .layer_report import LayerReport, memory_totals, parse_inspector_json


@dataclass
class BuildRequest:
    onnx_path: Path
    profile: dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]  # dynamic inputs only
    workspace_bytes: int
    optimization_level: int
    timing_cache: Optional[bytes] = None  # TensorRT only
    compute_capabilities: tuple[str, ...] = ()  # TensorRT-RTX only: 'sm86', ...
    hardware_compatibility: str = "none"  # TensorRT only: flavours.HARDWARE_COMPATIBILITY


@dataclass
class BuildOutput:
    plan: bytes
    layer_report: LayerReport
    builder_version: str
    targets: list[str]  # what the plan runs on: compute capabilities, or the GPU it was built on
    timing_cache: Optional[bytes] = None
    warnings: list[str] = field(default_factory=list)
    log: list[str] = field(default_factory=list)  # the builder's INFO (and for TensorRT-RTX VERBOSE) messages

    def report_messages(self) -> list[str]:
        """The messages the layer report is read from: the layer block and the memory totals."""
        return [m for m in self.log if m.startswith(("Layers:", "Total Weights Memory", "Total Activation Memory"))]


@dataclass(frozen=True)
class ParserIssue:
    node_index: int
    node_name: str
    op_type: str
    description: str


def import_error(flavour, exc: ImportError) -> MissingDependency:
    return MissingDependency(f"{flavour.title} is installed but does not import ({exc}); reinstall with "
                             f"{flavour.install_hint}")


def collecting_logger(trt, keep_all: bool):
    """An ILogger that keeps errors and warnings for our one-line messages instead of printing,
    and the INFO messages (memory totals); with keep_all also VERBOSE (TensorRT-RTX's layer report)."""

    class CollectingLogger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.errors: list[str] = []
            self.warnings: list[str] = []
            self.messages: list[str] = []

        def log(self, severity, msg):
            if severity in (trt.ILogger.ERROR, trt.ILogger.INTERNAL_ERROR):
                self.errors.append(msg)
            elif severity == trt.ILogger.WARNING:
                self.warnings.append(msg)
            elif keep_all or severity == trt.ILogger.INFO:
                self.messages.append(msg)

    return CollectingLogger()


def _parser_issues(parser) -> list[ParserIssue]:
    issues = []
    for index in range(parser.num_errors):
        error = parser.get_error(index)
        issues.append(ParserIssue(int(error.node()), str(error.node_name()), str(error.node_operator()),
                                  str(error.desc())))
    return issues


def open_module(flavour):
    """(the flavour's TensorRT module, its hooks): `tensorrt` or `tensorrt_rtx`, imported now."""
    hooks = flavour_hooks(flavour)
    return hooks.load(), hooks


def new_context(hooks, trt, engine, plan_path: Path):
    return hooks.execution_context(trt, engine, plan_path)


def release_context(hooks, context, plan_path: Path) -> None:
    hooks.release_context(context, plan_path)


def build_serialized_engine(request: BuildRequest, flavour) -> BuildOutput:
    trt, hooks = open_module(flavour)
    logger = collecting_logger(trt, keep_all=hooks.reads_build_log)
    builder = trt.Builder(logger)
    network = builder.create_network(hooks.network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(request.onnx_path)):
        raise UserError(describe_parser_issues(request.onnx_path, f"{flavour.title} {trt.__version__}",
                                               _parser_issues(parser)))

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, request.workspace_bytes)
    config.builder_optimization_level = request.optimization_level
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED  # the truth check reads layer details
    if request.profile:
        profile = builder.create_optimization_profile()
        for name, (smallest, usual, largest) in request.profile.items():
            profile.set_shape(name, smallest, usual, largest)
        config.add_optimization_profile(profile)
    targets = hooks.set_targets(trt, config, request)
    hooks.set_build_cache(trt, config, request)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        reason = logger.errors[-1] if logger.errors else "no reason given"
        raise InceptionDeployError(f"{flavour.title} {trt.__version__} could not build {request.onnx_path}: {reason}")
    plan = bytes(serialized)
    report = hooks.layer_report(trt, plan, logger)
    return BuildOutput(plan, report, trt.__version__, targets, hooks.build_cache_bytes(config), list(logger.warnings),
                       list(logger.messages))


def describe_parser_issues(onnx_path: Path, builder: str, issues: list[ParserIssue]) -> str:
    """One line: every node the parser rejected, with its op type and the parser's reason."""
    if not issues:
        return f"{onnx_path}: {builder}'s ONNX parser rejected the model without naming a node"
    listed = "; ".join(f"{issue.op_type} '{issue.node_name}' (node {issue.node_index}): {issue.description}"
                       for issue in issues)
    return (f"{onnx_path}: {builder}'s ONNX parser rejected {len(issues)} node(s): {listed}; "
            f"see `inception-deploy lint {onnx_path}`")


class TensorRTHooks:
    """TensorRT 10/11: builds for the GPU at hand, with a timing cache; the inspector gives the layers."""

    reads_build_log = False

    def load(self):
        from .flavours import TENSORRT

        try:
            import tensorrt as trt
        except ImportError as exc:
            raise import_error(TENSORRT, exc) from None
        return trt

    def network_flags(self, trt) -> int:
        if int(str(trt.__version__).split(".")[0]) >= 11:
            return 0  # every TensorRT 11 network is strongly typed; the flag is gone
        return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)

    def set_targets(self, trt, config, request: BuildRequest) -> list[str]:
        from .cuda_memory import gpu_identity

        name, capability = gpu_identity()
        built_on = f"{name} (sm {capability})"
        if request.hardware_compatibility == "none":
            return [built_on]
        levels = {"ampere-plus": trt.HardwareCompatibilityLevel.AMPERE_PLUS,
                  "same-compute-capability": trt.HardwareCompatibilityLevel.SAME_COMPUTE_CAPABILITY}
        config.hardware_compatibility_level = levels[request.hardware_compatibility]
        if request.hardware_compatibility == "ampere-plus":
            return [f"Ampere and newer GPUs (hardware compatible; built on {built_on})"]
        return [f"GPUs of compute capability {capability} (hardware compatible; built on {built_on})"]

    def set_build_cache(self, trt, config, request: BuildRequest) -> None:
        cache = config.create_timing_cache(request.timing_cache or b"")
        if not config.set_timing_cache(cache, False):
            # A cache from another GPU or TensorRT version does not apply; start a fresh one.
            config.set_timing_cache(config.create_timing_cache(b""), False)

    def build_cache_bytes(self, config) -> Optional[bytes]:
        return bytes(config.get_timing_cache().serialize())

    def layer_report(self, trt, plan: bytes, logger) -> LayerReport:
        runtime = trt.Runtime(logger)
        engine = runtime.deserialize_cuda_engine(plan)
        inspector = engine.create_engine_inspector()
        report = parse_inspector_json(inspector.get_engine_information(trt.LayerInformationFormat.JSON))
        totals = memory_totals(logger.messages)
        report.weights_bytes, report.activation_bytes = totals.get("weights_bytes"), totals.get("activation_bytes")
        return report

    def execution_context(self, trt, engine, plan_path: Path):
        return engine.create_execution_context()

    def release_context(self, context, plan_path: Path) -> None:
        """Nothing to keep: TensorRT plans carry their kernels."""


HOOKS = TensorRTHooks()
