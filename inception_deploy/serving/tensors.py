"""What an artifact serves (stage: package): its I/O tensors, precision, batch range and targets.

Everything Triton's config needs is read from the artifact itself, never assumed: an ONNX
graph's inputs and outputs (names, element types, dims; a symbolic dim is -1) and its
manifest; a plan's manifest (`X.plan.json`: builder and version, compute capabilities, the
optimization profile, the I/O tensors it records). A plan whose manifest predates the I/O
record is read through the ONNX it was built from, when that file is still there unchanged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ..errors import UserError

ONNX_SUFFIXES = (".onnx",)


# Compute capabilities of Ampere and newer GPUs, as Triton's cc_model_filenames keys: where an
# `--hardware-compatibility ampere-plus` TensorRT plan is listed (A100 8.0, A10/RTX 30 8.6,
# Orin 8.7, L4/L40/RTX 40 8.9, H100/H200 9.0, B200 10.0, B300 10.3, RTX 50/RTX PRO 12.0, GB10 12.1).
AMPERE_PLUS_CC_KEYS = ("8.0", "8.6", "8.7", "8.9", "9.0", "10.0", "10.3", "12.0", "12.1")

@dataclass
class TensorSpec:
    name: str
    dtype: str  # numpy name: float32, float16, int64 ...
    shape: list[int]  # the full shape, batch axis included; -1 where the artifact leaves a dim open

    @property
    def batched(self) -> bool:
        return bool(self.shape) and self.shape[0] == -1


@dataclass
class ServedArtifact:
    path: Path
    kind: str  # "onnx" | "plan"
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    precision: str  # fp32 | fp16 | int8
    manifest: Optional[dict]
    batch_range: Optional[tuple[int, int, int]] = None  # a plan's optimization profile on the batch axis
    builder: Optional[str] = None  # tensorrt | tensorrt-rtx
    builder_version: Optional[str] = None
    compute_capabilities: list[str] = field(default_factory=list)  # "8.6", as Triton's cc_model_filenames keys
    external_data: list[Path] = field(default_factory=list)  # ONNX weights stored beside the graph

    @property
    def recipe_name(self) -> Optional[str]:
        return (self.manifest or {}).get("recipe")

    @property
    def class_names(self) -> Optional[list[str]]:
        names = ((self.manifest or {}).get("model") or {}).get("class_names")
        return list(names) if names else None

    def signature(self) -> tuple:
        """What two artifacts served as one model must share: I/O names, types and per-sample dims."""
        return tuple((t.name, t.dtype, tuple(t.shape[1:])) for t in self.inputs + self.outputs)


def read_artifact(path: str | Path) -> ServedArtifact:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"artifact not found: {path}")
    if path.suffix in ONNX_SUFFIXES:
        return _onnx_artifact(path)
    from ..engine.plan_files import is_plan

    if is_plan(path):
        return _plan_artifact(path)
    raise UserError(f"{path}: cannot serve a '{path.suffix}' file; give an .onnx graph or a TensorRT .plan")


def onnx_tensors(model) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Graph inputs (initializers excluded) and outputs as TensorSpecs."""
    import onnx

    def spec(value) -> TensorSpec:
        tensor_type = value.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor_type.shape.dim]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type).name
        return TensorSpec(value.name, dtype, dims)

    initializers = {t.name for t in model.graph.initializer}
    return ([spec(v) for v in model.graph.input if v.name not in initializers],
            [spec(v) for v in model.graph.output])


def _onnx_artifact(path: Path) -> ServedArtifact:
    from ..manifest import read_onnx_manifest
    from ..onnx_reader import read_onnx
    from ..validate.verdict import onnx_precision

    model = read_onnx(path)
    inputs, outputs = onnx_tensors(model)
    try:
        manifest = read_onnx_manifest(model)
    except UserError as exc:
        raise UserError(f"{path}: {exc}") from None
    external = sorted({entry.value for init in model.graph.initializer if init.data_location == 1
                       for entry in init.external_data if entry.key == "location"})
    return ServedArtifact(path, "onnx", inputs, outputs, onnx_precision(model), manifest,
                          external_data=[path.parent / name for name in external])


def _plan_artifact(path: Path) -> ServedArtifact:
    from ..engine.manifest import manifest_path, read_manifest

    manifest = read_manifest(path)
    if manifest is None:
        raise UserError(f"{path}: no manifest beside it ({manifest_path(path).name}), so its inputs, outputs, "
                        "batch profile and target GPUs are unknown; build it with `inception-deploy build-engine`")
    raw = json.loads(manifest_path(path).read_text())
    inputs, outputs = _plan_tensors(path, manifest, raw)
    batch = _batch_range(path, manifest, inputs)
    if manifest.builder == "tensorrt-rtx":
        capabilities = [_cc_key(sm) for sm in manifest.compute_capabilities]
    elif manifest.hardware_compatibility == "ampere-plus" and manifest.compute_capability:
        capabilities = list(AMPERE_PLUS_CC_KEYS)  # one hardware-compatible plan serves every one of them
    else:
        capabilities = [manifest.compute_capability] if manifest.compute_capability else []
    if not capabilities:
        raise UserError(f"{manifest_path(path)}: records no compute capability, so Triton cannot be told which GPU "
                        "the plan is for; rebuild it with `inception-deploy build-engine`")
    return ServedArtifact(path, "plan", inputs, outputs, manifest.precision, raw, batch, manifest.builder,
                          manifest.tensorrt_version, capabilities)


def _plan_tensors(path: Path, manifest, raw: dict) -> tuple[list[TensorSpec], list[TensorSpec]]:
    recorded = raw.get("tensors") or {}
    if recorded and all(name in recorded for name in manifest.inputs + manifest.outputs):
        def spec(name: str) -> TensorSpec:
            return TensorSpec(name, recorded[name]["dtype"], list(recorded[name]["shape"]))

        return [spec(n) for n in manifest.inputs], [spec(n) for n in manifest.outputs]
    # Manifests written before the I/O record: the ONNX the plan was built from, if unchanged.
    from ..fileio import sha256_file
    from ..onnx_reader import read_onnx

    source = Path(manifest.onnx_path)
    if not source.is_file() or sha256_file(source) != manifest.onnx_sha256:
        raise UserError(f"{path}: its manifest does not record the I/O types and {source} (the graph it was built "
                        "from) is gone or changed; rebuild the plan with `inception-deploy build-engine`")
    inputs, outputs = onnx_tensors(read_onnx(source))
    return inputs, outputs


def _batch_range(path: Path, manifest, inputs: list[TensorSpec]) -> Optional[tuple[int, int, int]]:
    """(min, opt, max) of the batch axis over the profiles of the batched inputs; None for a fixed batch."""
    batched = [t for t in inputs if t.batched]
    if not batched:
        return None
    ranges = set()
    for tensor in batched:
        profile = manifest.profile.get(tensor.name)
        if not profile:
            raise UserError(f"{path}: input '{tensor.name}' has a dynamic batch axis but the manifest records no "
                            "optimization profile for it; rebuild with `inception-deploy build-engine`")
        ranges.add(tuple(int(profile[key][0]) for key in ("min", "opt", "max")))
    if len(ranges) > 1:
        raise UserError(f"{path}: its inputs' profiles disagree on the batch range ({sorted(ranges)}); Triton batches "
                        "every input alike: rebuild with one --min-batch/--max-batch")
    return ranges.pop()


def _cc_key(sm: str) -> str:
    """'sm86' -> '8.6', 'sm120' -> '12.0': the compute capability as Triton reports it."""
    digits = sm.removeprefix("sm")
    return f"{digits[:-1]}.{digits[-1]}"
