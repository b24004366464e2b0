"""The manifest written beside every plan, and the checks that read it (stage: build-engine, runtime).

A TensorRT plan runs only under the builder version it was built by, and on the GPU it was
built for (TensorRT 10/11) or one of the compute capabilities it targets (TensorRT-RTX). The
manifest (`model.plan.json`) records both, with the precision, the ONNX it came from
(sha256), the profile shapes, the truth check, the plan report and the per-layer table, so a
runner can refuse a plan with a sentence instead of a deserialization failure.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from pydantic import BaseModel, ConfigDict, ValidationError

from .. import __version__
from ..errors import UserError
from ..fileio import write_json_atomic

MANIFEST_FORMAT = "inception-deploy/engine-manifest/1"


class EngineManifest(BaseModel):
    model_config = ConfigDict(extra="allow")

    format: str = MANIFEST_FORMAT
    toolkit_version: str = __version__
    builder: str = "tensorrt"  # "tensorrt" (10/11) | "tensorrt-rtx"
    tensorrt_version: str  # the builder's version (tensorrt or tensorrt_rtx)
    gpu_name: Optional[str] = None  # TensorRT: the GPU it was built on
    compute_capability: Optional[str] = None  # TensorRT: that GPU's, "9.0"
    compute_capabilities: list[str] = []  # TensorRT-RTX: the targets, "sm86", ...
    hardware_compatibility: str = "none"  # TensorRT: none | ampere-plus | same-compute-capability
    precision: str
    strongly_typed: bool = True
    onnx_path: str
    onnx_sha256: str
    plan_sha256: str
    inputs: list[str] = []
    outputs: list[str] = []
    profile: dict[str, dict[str, list[int]]] = {}  # input -> {"min": [...], "opt": [...], "max": [...]}
    # I/O name -> {"dtype": "float32", "shape": [-1, 3, 224, 224]} (-1: dynamic), what serving configs need
    tensors: dict[str, dict] = {}
    workspace_mb: int
    optimization_level: int
    timing_cache: Optional[str] = None
    lint_target: str
    build_seconds: float
    built_at: str
    layer_precisions: dict = {}  # the precision truth check, per ONNX Conv/Gemm
    plan_report: dict = {}  # plan_report.PlanReport.to_dict(), its "layers" the per-layer table

    @property
    def targets(self) -> str:
        if self.builder == "tensorrt-rtx":
            return ", ".join(self.compute_capabilities)
        if self.hardware_compatibility == "ampere-plus":
            return f"Ampere and newer GPUs (built on {self.gpu_name}, sm {self.compute_capability})"
        if self.hardware_compatibility == "same-compute-capability":
            return f"sm {self.compute_capability} GPUs (built on {self.gpu_name})"
        return f"{self.gpu_name} (sm {self.compute_capability})"


def manifest_path(plan: str | Path) -> Path:
    plan = Path(plan)
    return plan.with_name(plan.name + ".json")


def write_manifest(plan: str | Path, manifest: EngineManifest) -> Path:
    return write_json_atomic(manifest_path(plan), manifest.model_dump(mode="json"))


def read_manifest(plan: str | Path) -> Optional[EngineManifest]:
    """The manifest beside `plan`, None when there is none; UserError when it is unreadable."""
    path = manifest_path(plan)
    if not path.is_file():
        return None
    try:
        return EngineManifest.model_validate(json.loads(path.read_text()))
    except (json.JSONDecodeError, ValidationError) as exc:
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else exc.errors()[0]["msg"]
        raise UserError(f"{path}: not a valid engine manifest ({reason}); rebuild the plan with "
                        "`inception-deploy build-engine`") from None


def check_runtime_compatibility(plan: str | Path, manifest: EngineManifest, plan_sha256: str,
                                tensorrt_version: str, gpu_name: str, compute_capability: str) -> None:
    """Refuse a plan built by another builder version or for another GPU, naming both sides."""
    plan = Path(plan)
    if manifest.plan_sha256 != plan_sha256:
        raise UserError(f"{manifest_path(plan)} describes another plan (sha256 differs from {plan.name}); "
                        "rebuild with `inception-deploy build-engine` or delete the stale manifest")
    same_trt = manifest.tensorrt_version == tensorrt_version
    if manifest.builder == "tensorrt-rtx":
        here_sm = "sm" + compute_capability.replace(".", "")
        if same_trt and here_sm in manifest.compute_capabilities:
            return
        from .flavours import COMPUTE_CAPABILITIES

        what = (f"TensorRT-RTX {manifest.tensorrt_version} built it, this machine has {tensorrt_version}"
                if not same_trt else f"this GPU, {gpu_name}, is {here_sm}")
        rebuild = (f"--compute-capability {here_sm}" if here_sm in COMPUTE_CAPABILITIES else
                   f"--builder tensorrt` here ({here_sm} is not a TensorRT-RTX target: it needs TensorRT 10/11)")
        raise UserError(f"{plan} is a TensorRT-RTX plan for {manifest.targets}; {what}: rebuild it with "
                        f"`inception-deploy build-engine {manifest.onnx_path} {rebuild}"
                        + ("`" if here_sm in COMPUTE_CAPABILITIES else ""))
    same_gpu = manifest.gpu_name == gpu_name and manifest.compute_capability == compute_capability
    if manifest.hardware_compatibility == "ampere-plus":
        same_gpu = _capability_number(compute_capability) >= 8.0
    elif manifest.hardware_compatibility == "same-compute-capability":
        same_gpu = manifest.compute_capability == compute_capability
    if same_trt and same_gpu:
        return
    built = (f"TensorRT {manifest.tensorrt_version} on {manifest.gpu_name} (sm {manifest.compute_capability})"
             if manifest.hardware_compatibility == "none" else f"TensorRT {manifest.tensorrt_version} for {manifest.targets}")
    here = f"TensorRT {tensorrt_version} on {gpu_name} (sm {compute_capability})"
    what = "TensorRT version and GPU differ" if not (same_trt or same_gpu) else (
        "TensorRT version differs" if not same_trt else "GPU differs")
    raise UserError(f"{plan} was built by {built}; this machine has {here} ({what}): rebuild it here with "
                    f"`inception-deploy build-engine {manifest.onnx_path}`")


def _capability_number(capability: str) -> float:
    """'8.6' -> 8.6 ('12.0' -> 12.0): compute capabilities compare by major, then minor."""
    major, _, minor = str(capability).partition(".")
    return int(major) + int(minor or 0) / 10
