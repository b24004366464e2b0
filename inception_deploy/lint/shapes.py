"""Rules: dynamic dimensions a single batch profile covers (stage: lint).

build-engine gives TensorRT one optimization profile over the batch axis (min/opt/max).
Any other dynamic input dimension has no profile, and a Reshape that hard-codes the
batch size breaks every batch but one.
"""

from __future__ import annotations

from .base import NodeRule, Rule


class DynamicDimsRule(Rule):
    id = "dynamic-dims"
    description = "graph inputs are dynamic only in the batch axis (axis 0), which the profile covers"

    def check(self, view, target):
        for value in view.graph_inputs:
            if not value.type.tensor_type.HasField("shape"):
                continue  # io-types reports it
            for axis, dim in enumerate(value.type.tensor_type.shape.dim):
                if axis == 0 or dim.HasField("dim_value"):
                    continue
                label = f"'{dim.dim_param}'" if dim.dim_param else "unknown"
                yield self.error(f"input '{value.name}'", f"axis {axis} is dynamic ({label}); the engine's profile "
                                                          "covers only the batch axis: export with fixed "
                                                          "channel/height/width")


class ReshapeBatchRule(NodeRule):
    id = "reshape-batch"
    description = "a Reshape of a dynamic-batch tensor keeps the batch (0 or -1), never a fixed number"
    op_types = frozenset({"Reshape"})

    def check_node(self, view, target, node):
        data_shape = view.shape(node.input[0])
        target_shape = view.constant(node.input[1]) if len(node.input) > 1 else None
        if not data_shape or target_shape is None or target_shape.size == 0:
            return
        if not isinstance(data_shape[0], int) and int(target_shape.ravel()[0]) > 0:
            yield self.error(view.name(node), f"reshapes a dynamic batch to the fixed shape {target_shape.tolist()}; "
                                              "use 0 or -1 for the batch so every profile batch size works")


RULES = [DynamicDimsRule(), ReshapeBatchRule()]
