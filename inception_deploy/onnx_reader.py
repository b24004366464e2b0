"""A safe reader for ONNX files given by the user (stage: any stage's input).

`read_onnx` parses a file (truncated or random bytes are one line, not a protobuf
DecodeError) and `check_graph` refuses, before ONNX Runtime or our own passes see it, what
they would crash on or misreport: no inputs or outputs, zero-sized or negative input dims,
a node reading a tensor nothing provides, a cycle, initializers whose data does not match
their declared shape (a 142-byte graph "holding" 3.3 trillion parameters), and external
data outside the model's folder or shorter than declared. onnx.checker does some of this
but not all (data sizes, cycles are reported as ordering) and stops at the first of many
unrelated rules, so the structural checks are written here.
"""

from __future__ import annotations

import os
from pathlib import Path
import numpy as np

from .errors import UserError

_FLOAT_TYPES = (1, 10, 11, 16)  # FLOAT, FLOAT16, DOUBLE, BFLOAT16
MAX_INPUT_ELEMENTS = 1 << 28  # values per sample: 3 x 9459 x 9459, far beyond any classifier input
_FIX = "export it again (inception-deploy export) or give the .onnx it was made from"


# One graph parsed and checked ahead of its command (cli/preflight.py), handed to the command's
# read_onnx once if the file has not changed since: parsing and checking Inception v3 (95 MB)
# twice cost 1.7 s of every quantize.
_CHECKED: dict[tuple, object] = {}


def _file_key(path: Path) -> tuple:
    stat = path.stat()
    return (str(path.resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ino)


def check_ahead(path: str | os.PathLike, keep: bool = False) -> None:
    """Check `path` before the command's work: a UserError names the first structural problem.
    An unparsable file passes here: the command's own reader says so, in its words. With
    `keep`, the parsed graph waits for the command's read_onnx of the same, unchanged file
    (one at a time)."""
    path = Path(path)
    try:
        model = _parse(path)
    except UserError:
        return
    check_graph(model, path)
    _CHECKED.clear()
    if keep:
        _CHECKED[_file_key(path)] = model


def _parse(path: Path):
    import onnx

    if not path.is_file():
        raise UserError(f"model not found: {path}")
    if path.stat().st_size == 0:
        raise UserError(f"{path}: the file is empty; {_FIX}")
    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf raises DecodeError, ValueError, RuntimeWarning...
        raise UserError(f"{path}: not a readable ONNX model ({type(exc).__name__}: truncated, or another format); "
                        f"{_FIX}") from None


def read_onnx(path: str | os.PathLike, load_external_data: bool = False):
    """Parse an ONNX file, structure-checked; external data stays on disk unless asked for."""
    path = Path(path)
    model = _CHECKED.pop(_file_key(path), None) if path.is_file() else None
    if model is None:
        model = _parse(path)
        check_graph(model, path)
    if load_external_data:
        from onnx.external_data_helper import load_external_data_for_model

        load_external_data_for_model(model, str(path.parent))
    return model


def check_graph(model, path: str | os.PathLike) -> None:
    """Raise UserError naming `path` for the first structural problem of `model`'s main graph."""
    import onnx

    graph = model.graph
    initializers = {init.name for init in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    if not inputs:
        raise UserError(f"{path}: the graph has no inputs (nothing to feed an image to); {_FIX}")
    if not graph.output:
        raise UserError(f"{path}: the graph has no outputs; {_FIX}")
    for graph_input in inputs:
        shape = graph_input.type.tensor_type.shape
        for axis, dim in enumerate(shape.dim):
            if dim.HasField("dim_value") and dim.dim_value <= 0:
                raise UserError(f"{path}: input '{graph_input.name}' has a dimension of {dim.dim_value} (axis {axis}); "
                                f"an image input needs sizes of at least 1; {_FIX}")
        per_sample = int(np.prod([d.dim_value for d in shape.dim[1:] if d.HasField("dim_value")], dtype=object))
        if per_sample > MAX_INPUT_ELEMENTS:
            raise UserError(f"{path}: input '{graph_input.name}' declares {per_sample:,} values per sample "
                            f"({[d.dim_value or d.dim_param for d in shape.dim]}); an image network takes far fewer "
                            f"(Inception v3: 268,203); {_FIX}")
    for init in graph.initializer:
        _check_initializer(init, Path(path), onnx)
        _check_finite(init, Path(path))
    _check_dataflow(graph, Path(path))


def _check_finite(init, path: Path) -> None:
    """NaN anywhere, or Inf in a weight tensor (more than one value), is an error: such a graph
    answers NaN, which no comparison may call 'close'. A scalar +-Inf stays (Clip bounds, pads)."""
    import onnx
    from onnx import numpy_helper

    if init.data_location == onnx.TensorProto.EXTERNAL or init.data_type not in _FLOAT_TYPES:
        return
    from .finite import describe, first_non_finite

    values = numpy_helper.to_array(init)
    found = first_non_finite(values.astype(np.float32) if values.dtype.kind != "f" else values)
    if found is not None and (found[1] != found[1] or values.size > 1):
        raise UserError(f"{path}: initializer '{init.name}' holds {describe(found)} (the first non-finite weight); "
                        "a graph with NaN/Inf weights answers NaN: export it again from finite weights")


def _check_initializer(init, path: Path, onnx) -> None:
    dims = list(init.dims)
    if any(d < 0 for d in dims):
        raise UserError(f"{path}: initializer '{init.name}' has a negative dimension {dims}; {_FIX}")
    count = int(np.prod(dims, dtype=object)) if dims else 1
    if init.data_type in (onnx.TensorProto.STRING, onnx.TensorProto.UNDEFINED):
        return
    try:
        itemsize = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(init.data_type)).itemsize
    except (KeyError, TypeError, ValueError):
        raise UserError(f"{path}: initializer '{init.name}' has an unknown data type {init.data_type}; {_FIX}") from None
    packed = init.data_type in (onnx.TensorProto.INT4, onnx.TensorProto.UINT4)
    nbytes = (count + 1) // 2 if packed else count * itemsize
    if init.data_location == onnx.TensorProto.EXTERNAL:
        _check_external(init, path, nbytes)
        return
    if init.HasField("raw_data"):
        held, wanted, unit = len(init.raw_data), nbytes, "bytes"
    else:  # typed fields: one entry per element (two per complex, one per pair of 4-bit values)
        field = {onnx.TensorProto.FLOAT: "float_data", onnx.TensorProto.COMPLEX64: "float_data",
                 onnx.TensorProto.DOUBLE: "double_data", onnx.TensorProto.COMPLEX128: "double_data",
                 onnx.TensorProto.INT64: "int64_data", onnx.TensorProto.UINT64: "uint64_data",
                 onnx.TensorProto.UINT32: "uint64_data"}.get(init.data_type, "int32_data")
        per = 2 if init.data_type in (onnx.TensorProto.COMPLEX64, onnx.TensorProto.COMPLEX128) else 1
        held, wanted, unit = len(getattr(init, field)), ((count + 1) // 2 if packed else count * per), "values"
    if held != wanted:
        raise UserError(f"{path}: initializer '{init.name}' declares shape {dims} ({count:,} values) but holds "
                        f"{held:,} {unit} of data, not {wanted:,}; the file is damaged or was written by a broken tool; {_FIX}")


def _check_external(init, path: Path, expected: int) -> None:
    info = {entry.key: entry.value for entry in init.external_data}
    location = info.get("location", "")
    folder = path.resolve().parent
    target = (folder / location).resolve()
    if not location or os.path.isabs(location) or folder not in target.parents:
        raise UserError(f"{path}: initializer '{init.name}' points at external data '{location}' outside the model's "
                        "folder, which is never read; keep the .data file beside the .onnx")
    if not target.is_file():
        raise UserError(f"{path}: initializer '{init.name}' needs its external data file {location}, which is missing; "
                        "copy it beside the .onnx")
    offset, length = int(info.get("offset", 0) or 0), int(info.get("length", expected) or expected)
    if length != expected or offset + length > target.stat().st_size:
        raise UserError(f"{path}: initializer '{init.name}' needs {expected:,} bytes of {location} at offset {offset}, "
                        f"which holds {target.stat().st_size:,}; the external data file is truncated or not this model's")


def _check_dataflow(graph, path: Path) -> None:
    """Every node input must come from a graph input, an initializer or some node; the nodes
    must admit a topological order (ONNX Runtime reports a cycle as an obscure session error)."""
    available = {i.name for i in graph.input} | {init.name for init in graph.initializer} | {""}
    producer: dict[str, int] = {}
    for index, node in enumerate(graph.node):
        for out in node.output:
            if out:
                producer[out] = index
    for node in graph.node:
        for name in node.input:
            if name not in available and name not in producer:
                raise UserError(f"{path}: node '{node.name or node.op_type}' reads '{name}', which no input, "
                                f"initializer or node provides; {_FIX}")
    for out in graph.output:
        if out.name not in available and out.name not in producer:
            raise UserError(f"{path}: output '{out.name}' is produced by no node; {_FIX}")
    # Kahn's algorithm over node indices.
    waiting = [sum(1 for name in set(node.input) if name in producer) for node in graph.node]
    readers: dict[str, list[int]] = {}
    for index, node in enumerate(graph.node):
        for name in set(node.input):
            if name in producer:
                readers.setdefault(name, []).append(index)
    ready = [i for i, n in enumerate(waiting) if n == 0]
    done = 0
    while ready:
        index = ready.pop()
        done += 1
        for out in graph.node[index].output:
            for reader in readers.get(out, ()):
                waiting[reader] -= 1
                if waiting[reader] == 0:
                    ready.append(reader)
    if done != len(graph.node):
        stuck = next(node for node, n in zip(graph.node, waiting) if n > 0)
        raise UserError(f"{path}: the graph has a cycle (node '{stuck.name or stuck.op_type}' depends on its own "
                        f"output); {_FIX}")


def first_graph_input(model):
    """The first input that is not an initializer (check_graph guarantees there is one)."""
    initializers = {init.name for init in model.graph.initializer}
    return next(i for i in model.graph.input if i.name not in initializers)
