"""A read-only view of an ONNX graph for lint rules (stage: lint).

Shape and type inference run once here; rules ask for a tensor's type, shape, constant
value (looked up through Identity/Constant chains, as TensorRT's parser does), producer
and consumers.
"""

from __future__ import annotations

from functools import cached_property
from typing import Optional

import numpy as np
import onnx

from ..graph_utils import attribute, constant_value, default_opset, input_at

__all__ = ["GraphView", "attribute", "describe_node", "input_at"]  # attribute, input_at: shared helpers


def describe_node(node: onnx.NodeProto, index: int | None = None) -> str:
    name = node.name or (f"#{index}" if index is not None else (node.output[0] if node.output else "?"))
    return f"{node.op_type} '{name}'"


class GraphView:
    def __init__(self, model: onnx.ModelProto):
        self.model = model
        try:
            self.inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
        except Exception:  # inference is a help here, never a requirement
            self.inferred = model
        self.graph = model.graph
        self.nodes = list(self.graph.node)
        self.initializers = {t.name: t for t in self.graph.initializer}
        self.names = {id(n): describe_node(n, i) for i, n in enumerate(self.nodes)}

    @cached_property
    def kept_float(self) -> dict[str, str]:
        """Nodes the last quantize run kept out of INT8 on purpose, name -> reason (the exclusions
        its manifest records); empty for a graph without a manifest."""
        from ..errors import UserError
        from ..manifest import read_onnx_manifest

        try:
            manifest = read_onnx_manifest(self.model) or {}
        except UserError:  # an unreadable manifest is no reason to stop linting the graph
            return {}
        runs = [entry for entry in manifest.get("history", []) if entry.get("stage") == "quantize"]
        excluded = runs[-1].get("excluded", []) if runs else []
        return {item["node"]: item.get("reason", "") for item in excluded if isinstance(item, dict) and "node" in item}

    # --- structure -------------------------------------------------------------------
    @cached_property
    def producers(self) -> dict[str, onnx.NodeProto]:
        return {out: node for node in self.nodes for out in node.output if out}

    @cached_property
    def consumers(self) -> dict[str, list[onnx.NodeProto]]:
        found: dict[str, list[onnx.NodeProto]] = {}
        for node in self.nodes:
            for name in node.input:
                if name:
                    found.setdefault(name, []).append(node)
        return found

    @cached_property
    def graph_inputs(self) -> list[onnx.ValueInfoProto]:
        return [v for v in self.graph.input if v.name not in self.initializers]

    @cached_property
    def graph_output_names(self) -> set[str]:
        return {v.name for v in self.graph.output}

    def name(self, node: onnx.NodeProto) -> str:
        return self.names[id(node)]

    def producer(self, tensor: str) -> Optional[onnx.NodeProto]:
        return self.producers.get(tensor)

    def producer_skipping_identity(self, tensor: str) -> Optional[onnx.NodeProto]:
        node = self.producers.get(tensor)
        while node is not None and node.op_type == "Identity":
            node = self.producers.get(node.input[0])
        return node

    @cached_property
    def opset(self) -> int:
        return default_opset(self.model)

    # --- types and shapes -------------------------------------------------------------
    @cached_property
    def _value_infos(self) -> dict[str, onnx.ValueInfoProto]:
        graph = self.inferred.graph
        infos = {}
        for value in list(graph.value_info) + list(graph.input) + list(graph.output):
            infos[value.name] = value
        return infos

    def elem_type(self, tensor: str) -> int:
        """ONNX element type, 0 when unknown."""
        if tensor in self.initializers:
            return self.initializers[tensor].data_type
        info = self._value_infos.get(tensor)
        if info is not None and info.type.HasField("tensor_type"):
            return info.type.tensor_type.elem_type
        const = self.constant(tensor)
        if const is not None:
            return onnx.helper.np_dtype_to_tensor_dtype(const.dtype)
        return 0

    def shape(self, tensor: str) -> Optional[list]:
        """Dims as ints (static) or str (symbolic) or None (unknown); None if no shape."""
        if tensor in self.initializers:
            return list(self.initializers[tensor].dims)
        info = self._value_infos.get(tensor)
        if info is None or not info.type.tensor_type.HasField("shape"):
            const = self.constant(tensor)
            return list(const.shape) if const is not None else None
        dims = []
        for dim in info.type.tensor_type.shape.dim:
            if dim.HasField("dim_value"):
                dims.append(dim.dim_value)
            elif dim.HasField("dim_param"):
                dims.append(dim.dim_param)
            else:
                dims.append(None)
        return dims

    def static_dim(self, tensor: str, axis: int) -> Optional[int]:
        dims = self.shape(tensor)
        if dims is None or not -len(dims) <= axis < len(dims):
            return None
        dim = dims[axis]
        return dim if isinstance(dim, int) else None

    # --- constants --------------------------------------------------------------------
    def constant(self, tensor: str) -> Optional[np.ndarray]:
        """The tensor's value when it is known before the build, else None."""
        return constant_value(tensor, self.initializers, self.producers)

    def is_constant(self, tensor: str) -> bool:
        return self.constant(tensor) is not None

