"""Helpers over onnx.ModelProto graphs, shared by every stage that reads a graph (stage: all).

lint, passes, precision, validate, inspect and engine ask the same questions of a graph:
an attribute with its default, the constant behind a tensor (the legacy exporter repeats
shared initializers as Identity nodes; Q/DQ graphs put weights behind DequantizeLinear),
the PyTorch module a node came from, a copy that also outputs intermediate tensors. They
are answered here once. (The onnx-ir passes have their own small set in passes/base.py:
they work on onnx-ir objects, not protos.)
"""

from __future__ import annotations

from typing import Iterable, Optional

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


def source_initializer(model: onnx.ModelProto, tensor: str, through: Iterable[str] = ("Identity",),
                       max_steps: int = MAX_CHAIN) -> Optional[onnx.TensorProto]:
    """The initializer behind `tensor`, following the first input of `through` ops (Identity
    by default; add DequantizeLinear, Cast ... to find a Q/DQ graph's float or int8 weight);
    None for a computed tensor."""
    initializers = {i.name: i for i in model.graph.initializer}
    written_by = producers(model)
    through = set(through)
    for _ in range(max_steps + 1):
        if tensor in initializers:
            return initializers[tensor]
        node = written_by.get(tensor)
        if node is None or node.op_type not in through or not node.input:
            return None
        tensor = node.input[0]
    return None


def constant_source(model: onnx.ModelProto, tensor: str) -> Optional[str]:
    """The name of the initializer behind `tensor` through Identity nodes, None when computed."""
    found = source_initializer(model, tensor)
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


def inferred_dims(model: onnx.ModelProto) -> dict[str, list[int]]:
    """Tensor -> its dims from ONNX shape inference (0 where unknown), inputs and outputs included."""
    inferred = onnx.shape_inference.infer_shapes(model)
    return {value.name: [d.dim_value for d in value.type.tensor_type.shape.dim]
            for value in [*inferred.graph.value_info, *inferred.graph.output, *inferred.graph.input]}


def drop_unused_initializers(model: onnx.ModelProto, keep: Iterable[str] = ()) -> None:
    """Remove, in place, the initializers no node reads (and that are not in `keep`)."""
    used = {i for n in model.graph.node for i in n.input} | set(keep)
    kept = [i for i in model.graph.initializer if i.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
