"""Helpers over onnx.ModelProto graphs, shared by every stage that reads a graph (stage: all).

lint, passes, precision, validate, inspect and engine ask the same questions of a graph:
an attribute with its default, the constant behind a tensor (the legacy exporter repeats
shared initializers as Identity nodes; Q/DQ graphs put weights behind DequantizeLinear),
the PyTorch module a node came from, a copy that also outputs intermediate tensors. They
are answered here once. (The onnx-ir passes have their own small set in passes/base.py:
they work on onnx-ir objects, not protos.)
"""

from __future__ import annotations

from typing import Callable, Iterable, Optional

import numpy as np
import onnx
from onnx import numpy_helper

DEFAULT_DOMAINS = ("", "ai.onnx")
MAX_CHAIN = 16  # how many pass-through nodes a constant lookup follows before giving up


def attribute(node: onnx.NodeProto, name: str, default=None):
    """The value of attribute `name` (strings decoded), or `default` when the node has none."""
    for attr in node.attribute:
        if attr.name == name:
            value = onnx.helper.get_attribute_value(attr)
            return value.decode() if isinstance(value, bytes) else value
    return default


def input_at(node: onnx.NodeProto, index: int) -> str:
    """The node's input name at `index`, '' when absent (optional inputs)."""
    return node.input[index] if len(node.input) > index else ""


def default_opset(model: onnx.ModelProto) -> int:
    """The default-domain opset the graph imports, 0 when it imports none."""
    return next((entry.version for entry in model.opset_import if entry.domain in DEFAULT_DOMAINS), 0)


def producers(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    """Tensor name -> the node that writes it."""
    return {out: node for node in model.graph.node for out in node.output if out}


def consumers(model: onnx.ModelProto) -> dict[str, list[tuple[onnx.NodeProto, int]]]:
    """Tensor name -> the (node, input index) pairs that read it."""
    found: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
    for node in model.graph.node:
        for index, name in enumerate(node.input):
            if name:
                found.setdefault(name, []).append((node, index))
    return found


class GraphIndex:
    """A graph's name -> initializer and tensor -> producer maps, made once for many constant
    lookups (rebuilding both per lookup cost 0.8 s of a quantize on Inception v3). A caller
    that adds initializers while using it registers them with `add`."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.initializers = {i.name: i for i in model.graph.initializer}
        self.producers = producers(model)

    def add(self, tensor: onnx.TensorProto) -> None:
        self.initializers[tensor.name] = tensor


def source_initializer(model: onnx.ModelProto, tensor: str, through: Iterable[str] = ("Identity",),
                       max_steps: int = MAX_CHAIN, index: Optional[GraphIndex] = None) -> Optional[onnx.TensorProto]:
    """The initializer behind `tensor`, following the first input of `through` ops (Identity
    by default; add DequantizeLinear, Cast ... to find a Q/DQ graph's float or int8 weight);
    None for a computed tensor. `index`: the graph's maps, when the caller made them."""
    index = index or GraphIndex(model)
    initializers, written_by = index.initializers, index.producers
    through = set(through)
    for _ in range(max_steps + 1):
        if tensor in initializers:
            return initializers[tensor]
        node = written_by.get(tensor)
        if node is None or node.op_type not in through or not node.input:
            return None
        tensor = node.input[0]
    return None


def constant_source(model: onnx.ModelProto, tensor: str, index: Optional[GraphIndex] = None) -> Optional[str]:
    """The name of the initializer behind `tensor` through Identity nodes, None when computed."""
    found = source_initializer(model, tensor, index=index)
    return None if found is None else found.name


def constant_value(tensor: str, initializers: dict, written_by: dict) -> Optional[np.ndarray]:
    """The tensor's value when it is known before a build (initializer, Constant node, and
    Identity / Cast of either), else None. `initializers` and `written_by` are the graph's
    name -> TensorProto and tensor -> producer maps (made once by the caller)."""
    if not tensor:
        return None
    if tensor in initializers:
        return numpy_helper.to_array(initializers[tensor])
    node = written_by.get(tensor)
    if node is None:
        return None
    if node.op_type in ("Identity", "Cast") and node.input:
        value = constant_value(node.input[0], initializers, written_by)
        if value is None or node.op_type == "Identity":
            return value
        return value.astype(onnx.helper.tensor_dtype_to_np_dtype(attribute(node, "to")))
    if node.op_type == "Constant":
        for attr in node.attribute:
            if attr.name == "value":
                return numpy_helper.to_array(attr.t)
            if attr.name in ("value_float", "value_int", "value_floats", "value_ints"):
                return np.array(onnx.helper.get_attribute_value(attr))
    return None


def module_path(node_name: str) -> str:
    """'/inception4c/branch2/branch2.1/conv/Conv' -> 'inception4c.branch2.1'.

    The TorchScript exporter writes one scope per module; a child of an nn.Sequential is
    scoped by its full relative name ('branch2.1' inside 'branch2'), so a part that
    extends the previous one replaces it. The trailing op type, and BasicConv2d's inner
    'conv', are dropped: the module a user recognises is the BasicConv2d.
    """
    parts = [p for p in node_name.split("/") if p]
    if len(parts) <= 1:
        return node_name
    scopes: list[str] = []
    for part in parts[:-1]:
        if scopes and part.startswith(scopes[-1] + "."):
            scopes[-1] = part
        else:
            scopes.append(part)
    if len(scopes) > 1 and scopes[-1] in ("conv", "bn"):
        scopes.pop()
    return ".".join(scopes)


def serialized_with_outputs(model: onnx.ModelProto, tensors: Iterable[str]) -> bytes:
    """`model` serialized as if its graph also output `tensors` (FLOAT; graph inputs and outputs
    as they are), without a copy of the model: the outputs are added, the model serialized and
    the outputs taken off again. (with_outputs' copy held a second 95 MB Inception v3 at every
    calibration session's creation, the peak of quantize.)"""
    graph = model.graph
    present = {o.name for o in graph.output} | {i.name for i in graph.input}
    before = len(graph.output)
    for name in dict.fromkeys(tensors):
        if name not in present:
            graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    try:
        return model.SerializeToString()
    finally:
        del graph.output[before:]


def with_outputs(model: onnx.ModelProto, tensors: Iterable[str], infer_types: bool = False) -> onnx.ModelProto:
    """A copy of `model` whose graph also outputs `tensors` (graph inputs and existing outputs
    are left as they are). Element types are FLOAT, or from shape inference with
    `infer_types` (FP16 and Q/DQ graphs); shapes are left to ONNX Runtime."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    types: dict[str, int] = {}
    if infer_types:
        try:
            inferred = onnx.shape_inference.infer_shapes(out)
            types = {vi.name: vi.type.tensor_type.elem_type for vi in inferred.graph.value_info}
        except Exception:  # noqa: BLE001 - inference only gives the element types; FLOAT is the fallback
            types = {}
    present = {o.name for o in out.graph.output} | {i.name for i in out.graph.input}
    for name in dict.fromkeys(tensors):
        if name not in present:
            out.graph.output.append(onnx.helper.make_tensor_value_info(name, types.get(name, onnx.TensorProto.FLOAT), None))
    return out


SKELETON_MAX_ELEMENTS = 1024  # initializers up to this size keep their values (shapes, axes)
_DIMS_MEMO: dict[str, dict[str, list[int]]] = {}


def _skeleton(model: onnx.ModelProto) -> onnx.ModelProto:
    """`model` without its weights: each large initializer becomes a typed graph input. Shape
    inference needs only their shapes, and serializing the weights to the C++ inference cost
    0.45 s a call on Inception v3 (95 MB), five calls a quantize."""
    out = onnx.ModelProto(ir_version=model.ir_version, producer_name=model.producer_name)
    out.opset_import.extend(model.opset_import)
    out.functions.extend(model.functions)
    graph, source = out.graph, model.graph
    graph.name = source.name
    graph.node.extend(source.node)
    graph.input.extend(source.input)
    graph.output.extend(source.output)
    graph.value_info.extend(source.value_info)
    declared = {i.name for i in source.input}
    for init in source.initializer:
        if int(np.prod(init.dims, dtype=np.int64)) <= SKELETON_MAX_ELEMENTS:
            graph.initializer.append(init)
        elif init.name not in declared:
            graph.input.append(onnx.helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
    return out


def inferred_dims(model: onnx.ModelProto) -> dict[str, list[int]]:
    """Tensor -> its dims from ONNX shape inference (0 where unknown), inputs and outputs included.
    Remembered by the graph's structure: equalization, calibration and bias correction ask it
    of the same graph (and of its equalized twin, which has the same shapes)."""
    import hashlib

    skeleton = _skeleton(model)
    key = hashlib.sha256(skeleton.SerializeToString()).hexdigest()
    found = _DIMS_MEMO.get(key)
    if found is None:
        inferred = onnx.shape_inference.infer_shapes(skeleton)
        # The weights made inputs, unless the graph itself gave them a value_info.
        added = {i.name for i in skeleton.graph.input[len(model.graph.input):]} - {v.name for v in model.graph.value_info}
        found = {value.name: [d.dim_value for d in value.type.tensor_type.shape.dim]
                 for value in [*inferred.graph.value_info, *inferred.graph.output, *inferred.graph.input]
                 if value.name not in added}
        if len(_DIMS_MEMO) >= 8:
            _DIMS_MEMO.pop(next(iter(_DIMS_MEMO)))
        _DIMS_MEMO[key] = found
    return {name: list(dims) for name, dims in found.items()}


def drop_unused_initializers(model: onnx.ModelProto, keep: Iterable[str] = ()) -> None:
    """Remove, in place, the initializers no node reads (and that are not in `keep`). Deleted
    one by one: emptying the list and extending it with the kept ones copied every weight
    once more into the model's protobuf arena, which frees nothing until the model goes."""
    used = {i for n in model.graph.node for i in n.input} | set(keep)
    initializers = model.graph.initializer
    for position in reversed([k for k, init in enumerate(initializers) if init.name not in used]):
        del initializers[position]


def copy_fields(source, target, keep: Callable[[object], bool]) -> None:
    """Copy into the protobuf message `target` each set field of `source` whose descriptor
    `keep` accepts (repeated fields extended, messages copied, scalars set)."""
    for field, value in source.ListFields():
        if not keep(field):
            continue
        slot = getattr(target, field.name)
        if hasattr(slot, "extend"):  # repeated
            slot.extend(value)
        elif hasattr(slot, "CopyFrom"):  # a message
            slot.CopyFrom(value)
        else:
            setattr(target, field.name, value)


def copy_without_initializers(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of `model` with every field but the graph's initializers, for a caller that
    writes new weights: copying them first and then replacing each held both the old and the
    new bytes (a protobuf arena keeps replaced data until the whole message is freed)."""
    out = onnx.ModelProto()
    copy_fields(model, out, lambda field: field.name != "graph")
    copy_fields(model.graph, out.graph, lambda field: field.name != "initializer")
    return out
