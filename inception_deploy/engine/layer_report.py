"""The engine's per-layer report, read from either source into one structure (stage: build-engine).

Two things describe the layers of a built engine, with the same information:

- the engine inspector's JSON (`IEngineInspector.get_engine_information(JSON)`, engines built
  with ProfilingVerbosity.DETAILED). It needs a deserialized engine, hence a GPU. TensorRT
  10.x writes one "Format/Datatype" string per tensor and a "Bindings" list of names; 11.x
  splits that field into "Format" and "DataType" and replaces "Bindings" by "I/O Tensors"
  objects (NVIDIA's "Migrating IEngineInspector Usage from TensorRT 10.x to 11.x").
- the builder's log at VERBOSE with ProfilingVerbosity.DETAILED, which TensorRT-RTX writes
  on a machine without a GPU: a "Layers:" block with one line per engine layer in the 11.x
  keys written as text (`Name: ..., LayerType: correlation, Inputs: [ { Name: ..., Datatype:
  Int8, Format: ... }], Constants: [...], Outputs: [...], TacticName: ..., Metadata: [ONNX
  Layer: /conv1/Conv][ONNX Layer: ...]`), then "I/O Tensors:" and the memory totals
  ("Total Weights Memory: N bytes", "Total Activation Memory: N bytes").

Both become a LayerReport: per engine layer its kind, the datatypes of its inputs, constants
(weights) and outputs, and the ONNX nodes fused into it (`Metadata`). Pure functions: no
TensorRT needed, so they are unit-tested on committed real reports.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Iterable, Mapping, Optional, Sequence

from ..errors import UserError

# Words in TensorRT's datatype and format strings ("Int8", "Half", "Thirty-two wide channel
# vectorized row major Int8 format.", "Row major linear FP16 format (kLINEAR)") and what they mean.
_DATATYPE_WORDS = [
    (r"uint8", "UINT8"), (r"int8", "INT8"), (r"int4", "INT4"), (r"fp8|e4m3", "FP8"), (r"fp4|e2m1", "FP4"),
    (r"bfloat16|bf16", "BF16"), (r"fp16|half", "FP16"), (r"fp32|float", "FP32"),
    (r"int32", "INT32"), (r"int64", "INT64"), (r"bool", "BOOL"),
]
_DATATYPE_PATTERNS = [(re.compile(rf"\b(?:{words})\b", re.IGNORECASE), name) for words, name in _DATATYPE_WORDS]
_ONNX_ORIGIN = re.compile(r"\[ONNX Layer: ([^\]\x1e\x1f]+)\]")
_MEMORY = {"weights_bytes": re.compile(r"Total Weights Memory: (\d+) bytes"),
           "activation_bytes": re.compile(r"Total Activation Memory: (\d+) bytes")}

# Layer kinds, from TensorRT-RTX's LayerType and TensorRT 10/11's ParameterType / LayerType,
# matched in order on the lower-cased type ("CaskGemmConvolution" is a convolution).
_KIND_WORDS = [
    ("scheduling", ("signal", "wait", "shape_call")),
    ("convolution", ("correlation", "convolution")),
    ("gemm", ("gemm", "matrixmultiply", "fullyconnected")),
    ("pooling", ("pool",)),
    ("reformat", ("reformat", "shuffle", "copy")),
    ("quantize", ("quantize",)),
    ("cast", ("cast",)),
    ("concat", ("concat",)),
]
COMPUTE_KINDS = ("convolution", "gemm")


def datatype_of(description: Optional[str]) -> str:
    """'INT8', 'FP16', 'FP32', ... from a datatype or format string; 'UNKNOWN' when none is named."""
    if not description:
        return "UNKNOWN"
    for pattern, name in _DATATYPE_PATTERNS:
        if pattern.search(str(description)):
            return name
    return "UNKNOWN"


@dataclass(frozen=True)
class TensorInfo:
    name: str
    datatype: str  # INT8 / FP16 / FP32 / ... / UNKNOWN
    dims: Optional[tuple[int, ...]] = None
    format: str = ""

    @property
    def elements(self) -> int:
        """Element count with dynamic axes (-1) taken as 1; 0 when the shape is unknown."""
        if self.dims is None:
            return 0
        count = 1
        for d in self.dims:
            count *= max(int(d), 1)
        return count


@dataclass(frozen=True)
class EngineLayer:
    name: str
    layer_type: str  # as the source names it: correlation, kgen, CaskConvolution, ...
    kind: str  # convolution | gemm | pooling | reformat | quantize | cast | concat | fused | scheduling
    inputs: tuple[TensorInfo, ...] = ()
    constants: tuple[TensorInfo, ...] = ()  # weights, bias, scales baked into the layer
    outputs: tuple[TensorInfo, ...] = ()
    onnx_nodes: tuple[str, ...] = ()  # the ONNX nodes fused into this layer, from Metadata
    tactic: str = ""

    @property
    def is_compute(self) -> bool:
        return self.kind in COMPUTE_KINDS

    @property
    def data_type(self) -> str:
        """The datatype of its first input: the precision its kernel reads activations in."""
        return self.inputs[0].datatype if self.inputs else "UNKNOWN"

    @property
    def weights_type(self) -> Optional[str]:
        """The datatype of its largest constant (the weights; bias and scales are smaller), else of
        its second input (a GEMM whose weights arrive as a tensor); None when it has neither."""
        if self.constants:
            return max(self.constants, key=lambda t: t.elements).datatype
        if self.is_compute and len(self.inputs) > 1:
            return self.inputs[1].datatype
        return None

    @property
    def output_type(self) -> str:
        return self.outputs[0].datatype if self.outputs else "UNKNOWN"


@dataclass
class LayerReport:
    source: str  # "TensorRT-RTX builder log" | "inspector JSON (TensorRT 10.x)" | "inspector JSON (TensorRT 11.x)"
    layers: list[EngineLayer] = field(default_factory=list)
    io_tensors: list[TensorInfo] = field(default_factory=list)
    weights_bytes: Optional[int] = None
    activation_bytes: Optional[int] = None

    @property
    def engine_layers(self) -> list[EngineLayer]:
        """Layers that compute or move data (stream signal/wait and shape calls left out)."""
        return [layer for layer in self.layers if layer.kind != "scheduling"]

    def layers_of(self, onnx_node: str) -> list[EngineLayer]:
        return [layer for layer in self.engine_layers if onnx_node in layer.onnx_nodes]

    def to_dict(self) -> dict:
        return asdict(self)


# --- the builder log (TensorRT-RTX, and TensorRT at VERBOSE) -----------------------------------

class _RecordParser:
    """Reads the builder log's `Key: value, Key: [ { ... }, ... ], ...` records.

    Written by hand because the format is TensorRT's own (neither JSON nor YAML): values are
    bare text (which may hold spaces, parentheses and brackets), [lists] of numbers or
    { records }. `Metadata` runs to the end of the line (its value is `[ONNX Layer: a][...]`).
    """

    def __init__(self, text: str):
        self.text, self.pos = text, 0

    def record(self, closing: str = "") -> dict:
        values: dict = {}
        while True:
            self._skip_spaces()
            if self.pos >= len(self.text) or (closing and self.text[self.pos] == closing):
                return values
            key = self._key()
            if key == "Metadata" and not closing:
                values[key] = self.text[self.pos:].strip()
                self.pos = len(self.text)
                return values
            values[key] = self._value(closing)
            self._skip_spaces()
            if self.pos < len(self.text) and self.text[self.pos] == ",":
                self.pos += 1

    def _skip_spaces(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] == " ":
            self.pos += 1

    def _key(self) -> str:
        end = self.text.find(": ", self.pos)
        if end < 0:
            raise ValueError(f"no key at {self.text[self.pos:self.pos + 40]!r}")
        key = self.text[self.pos:end]
        self.pos = end + 2
        return key

    def _value(self, closing: str):
        self._skip_spaces()
        if self.text.startswith("[", self.pos) and self._is_list():
            return self._list()
        return self._scalar(closing)

    def _is_list(self) -> bool:
        """'[ {' or '[-1,3,...]' or '[]' start a list; '[ONNX Layer: ...' or '[Convolution]' do not."""
        rest = self.text[self.pos + 1:self.pos + 3].lstrip()
        return rest[:1] in ("{", "]", "-") or rest[:1].isdigit()

    def _list(self) -> list:
        self.pos += 1  # '['
        items: list = []
        while True:
            self._skip_spaces()
            char = self.text[self.pos] if self.pos < len(self.text) else "]"
            if char == "]":
                self.pos += 1
                return items
            if char == ",":
                self.pos += 1
                continue
            if char == "{":
                self.pos += 1
                items.append(self.record(closing="}"))
                self.pos += 1  # '}'
            else:
                end = self.pos
                while end < len(self.text) and self.text[end] not in ",]":
                    end += 1
                token = self.text[self.pos:end].strip()
                items.append(int(token) if re.fullmatch(r"-?\d+", token) else token)
                self.pos = end

    def _scalar(self, closing: str) -> str:
        """Text up to the ', Key: ' that starts the next field, or the record's end."""
        depth, start = 0, self.pos
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if char == "[":
                depth += 1
            elif char == "]":
                if depth == 0:
                    break
                depth -= 1
            elif depth == 0 and char == closing:
                break
            elif depth == 0 and char == "," and re.match(r", ?[A-Za-z][\w/ ]*: ", self.text[self.pos:]):
                break
            self.pos += 1
        return self.text[start:self.pos].strip()


def parse_record(line: str) -> dict:
    """One `Key: value, ...` line of the builder log as a dict."""
    try:
        return _RecordParser(line.strip() + " ").record()  # the space keeps a last empty field ("Metadata: ")
    except (ValueError, IndexError) as exc:
        raise UserError(f"cannot read the builder's layer line {line[:80]!r}... ({exc})") from None


def parse_builder_log(log: str | Iterable[str]) -> LayerReport:
    """The layer report in a builder log (text, or the logged messages in order)."""
    text = log if isinstance(log, str) else "\n".join(log)
    layers: list[EngineLayer] = []
    io_tensors: list[TensorInfo] = []
    section = None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped in ("Layers:", "I/O Tensors:", "Bindings:") or line.endswith("] Layers:"):
            section = "io" if stripped in ("I/O Tensors:", "Bindings:") else "layers"
            continue
        if section == "layers" and line.startswith("Name: "):
            layers.append(_layer_from_record(parse_record(line), name_fallback=False))
        elif section == "io" and stripped.startswith("Name: "):
            record = parse_record(stripped)
            io_tensors.append(_tensor(record))
        elif section == "io" and stripped and not stripped.startswith("Name: "):
            section = None
    if not layers:
        raise UserError("the builder log has no layer report; build with ProfilingVerbosity.DETAILED and a "
                        "logger that keeps VERBOSE messages")
    totals = {key: int(m.group(1)) for key, pattern in _MEMORY.items() for m in [pattern.search(text)] if m}
    return LayerReport("TensorRT-RTX builder log", layers, io_tensors, **totals)


def memory_totals(log: str | Iterable[str]) -> dict[str, int]:
    """Weights and activation memory the builder logged (TensorRT 10/11 and TensorRT-RTX, INFO)."""
    text = log if isinstance(log, str) else "\n".join(log)
    return {key: int(m.group(1)) for key, pattern in _MEMORY.items() for m in [pattern.search(text)] if m}


# --- the engine inspector's JSON (TensorRT 10.x and 11.x, on a GPU) -----------------------------

def parse_inspector_json(info: str | bytes | Mapping) -> LayerReport:
    """Per-layer information from IEngineInspector's JSON, in the 10.x or the 11.x layout."""
    try:
        data = json.loads(info) if isinstance(info, (str, bytes)) else info
    except json.JSONDecodeError as exc:
        raise UserError(f"engine inspector output is not JSON ({exc.msg}); build with "
                        "ProfilingVerbosity.DETAILED") from None
    raw_layers = data.get("Layers", [data]) if isinstance(data, Mapping) else data
    layers = []
    for raw in raw_layers:
        if not isinstance(raw, Mapping):
            # LAYER_NAMES_ONLY verbosity gives bare strings: nothing to check precision with.
            raise UserError("engine inspector lists layer names only; build with ProfilingVerbosity.DETAILED")
        layers.append(_layer_from_record(raw, name_fallback=True))
    io_tensors = []
    if isinstance(data, Mapping) and "I/O Tensors" in data:
        io_tensors = [_tensor(t) for t in data["I/O Tensors"]]
        layout = "11.x"
    elif isinstance(data, Mapping) and "Bindings" in data:
        io_tensors = [TensorInfo(str(name), "UNKNOWN") for name in data["Bindings"]]
        layout = "10.x"
    else:
        layout = "11.x" if any("DataType" in t or "Datatype" in t for l in raw_layers
                               for t in (l.get("Inputs") or []) if isinstance(t, Mapping)) else "10.x"
    return LayerReport(f"inspector JSON (TensorRT {layout})", layers, io_tensors)


def _tensor(raw: Mapping) -> TensorInfo:
    datatype = "UNKNOWN"
    for key in ("DataType", "Datatype", "Format/Datatype", "Format"):  # 11.x | RTX text | 10.x
        datatype = datatype_of(raw.get(key))
        if datatype != "UNKNOWN":
            break
    dims = raw.get("Dimensions")
    dims = tuple(int(d) for d in dims) if isinstance(dims, Sequence) and not isinstance(dims, str) else None
    return TensorInfo(str(raw.get("Name", "")), datatype, dims, str(raw.get("Format", raw.get("Format/Datatype", ""))))


def _weights(raw: Mapping) -> list[TensorInfo]:
    """TensorRT 10/11 JSON gives weights and bias as {"Type": "Int8", "Count": N}."""
    constants = []
    for key in ("Weights", "Bias"):
        entry = raw.get(key)
        if isinstance(entry, Mapping) and entry.get("Count", 1):
            constants.append(TensorInfo(key.lower(), datatype_of(entry.get("Type")), (int(entry.get("Count", 0)),)))
    return constants


def layer_kind(layer_type: str, name: str = "") -> str:
    lowered = layer_type.lower()
    if lowered == "runtime_fusion":
        # TensorRT-RTX's fused GEMM kernels (__myl_FcAdd..., a 1x1 conv run as GEMM); other fusions stay fused.
        return "gemm" if re.search(r"Fc|Gemm|MatMul", name) else "fused"
    for kind, words in _KIND_WORDS:
        if any(word in lowered for word in words):
            return kind
    return "fused"


def _layer_from_record(raw: Mapping, name_fallback: bool) -> EngineLayer:
    name = str(raw.get("Name", "?"))
    layer_type = str(raw.get("ParameterType") or raw.get("LayerType") or "")
    inputs = tuple(_tensor(t) for t in raw.get("Inputs") or [] if isinstance(t, Mapping))
    outputs = tuple(_tensor(t) for t in raw.get("Outputs") or [] if isinstance(t, Mapping))
    constants = tuple(_tensor(t) for t in raw.get("Constants") or [] if isinstance(t, Mapping)) or tuple(_weights(raw))
    origins = tuple(_ONNX_ORIGIN.findall(str(raw.get("Metadata") or "")))
    if not origins and name_fallback and "Metadata" not in raw:
        # Without Metadata, TensorRT 10/11 name fused layers after their ONNX nodes: "/conv1/Conv + /conv1/Relu".
        origins = tuple(part.strip() for part in re.split(r" \+ |\x1e|\x1f", name) if part.strip())
    return EngineLayer(name, layer_type, layer_kind(layer_type, name), inputs, constants, outputs, origins,
                       str(raw.get("TacticName", "")))
