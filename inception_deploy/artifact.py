"""ONNX artifacts in and out (stage: all): load one with its manifest, save one atomically.

Every stage that reads an .onnx file (optimize, quantize, validate, inspect, benchmark)
loads it with `load_onnx`, which makes the checks each of them needs in one place: the
file is there, and onnx_reader.read_onnx parses it and checks its structure (inputs,
cycles, initializer data, external data inside its folder, finite weights); it imports a
default-domain opset, its manifest parses, and, for stages that want an FP32 graph, it is
not already quantized or FP16. Every stage that writes one uses `save_onnx`:
manifest stored, weights in an external `.data` file beside the graph past protobuf's
2 GB limit, onnx.checker run on the written file, and the file renamed into place only
when all of that (and the caller's own check, `verify`) has passed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from .errors import UserError
from .fileio import atomic_path

TWO_GB = 2 * 1024**3
EXTERNAL_DATA_MARGIN = 64 << 20  # the graph itself and protobuf framing beside the weights


@dataclass
class OnnxArtifact:
    path: Path
    model: object  # onnx.ModelProto
    manifest: Optional[dict]

    def release_model(self):
        """The parsed graph, handed over: the artifact keeps none (so a stage that frees it
        frees the memory; the file is still there to read again)."""
        model, self.model = self.model, None
        return model

    @property
    def opset(self) -> int:
        from .graph_utils import default_opset

        return default_opset(self.model)

    @property
    def precision(self) -> str:
        """'int8' (Q/DQ graph), 'fp16' or 'fp32': the graph's own precision, as validate judges it."""
        from .validate.verdict import onnx_precision

        return onnx_precision(self.model)


def load_onnx(path, missing: str = "model not found: {path}", load_external_data: bool = True,
              require_float: bool = False) -> OnnxArtifact:
    """Load an .onnx artifact and its manifest, or raise one UserError line naming the file.

    missing: the message for a file that is not there ({path} is filled in); require_float:
    refuse Q/DQ and FP16 graphs (for stages that need the FP32 model)."""
    from .onnx_reader import read_onnx

    path = Path(path)
    if not path.is_file():
        raise UserError(missing.format(path=path))
    artifact = OnnxArtifact(path, read_onnx(path, load_external_data=load_external_data), None)
    artifact.manifest = _manifest(artifact.model, path)
    if artifact.opset == 0:
        raise UserError(f"{path}: the graph imports no default-domain (ai.onnx) opset; re-export it")
    if require_float:
        _require_float(artifact.model, path)
    return artifact


def _manifest(model, path: Path) -> Optional[dict]:
    from .manifest import read_onnx_manifest

    try:
        return read_onnx_manifest(model)
    except UserError as exc:
        raise UserError(f"{path}: {exc}") from None


def _require_float(model, path: Path) -> None:
    import onnx

    if {n.op_type for n in model.graph.node} & {"QuantizeLinear", "DequantizeLinear"}:
        raise UserError(f"{path}: the graph is already quantized (it has Q/DQ nodes); quantize the FP32 model")
    if any(i.data_type == onnx.TensorProto.FLOAT16 for i in model.graph.initializer):
        raise UserError(f"{path}: the graph already holds FP16 weights; quantize the FP32 model")


def save_onnx(model, path, manifest: Optional[dict] = None, what: str = "the graph", full_check: bool = False,
              verify: Optional[Callable[[Path], None]] = None) -> Path:
    """Write `model` (with `manifest` stored in it, when given) to `path` atomically.

    Past protobuf's 2 GB limit the weights go to PATH.data beside it. onnx.checker runs on
    the written file (`full_check`: with shape inference); `verify(tmp_path)` may run further
    checks on the written file; any failure leaves nothing behind."""
    import onnx

    from .manifest import write_onnx_manifest

    path = Path(path)
    if manifest is not None:
        write_onnx_manifest(model, manifest)
    with atomic_path(path) as tmp:
        if model.ByteSize() > TWO_GB - EXTERNAL_DATA_MARGIN:
            onnx.save_model(model, str(tmp), save_as_external_data=True, all_tensors_to_one_file=True,
                            location=path.name + ".data")
        else:
            onnx.save_model(model, str(tmp))
        try:
            onnx.checker.check_model(str(tmp), full_check=full_check)
        except onnx.checker.ValidationError as exc:
            raise UserError(f"{what} fails onnx.checker: {str(exc).splitlines()[0]}") from None
        if verify is not None:
            verify(tmp)
    return path
