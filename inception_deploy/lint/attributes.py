"""Rules: attributes and constant inputs TensorRT's ONNX importers reject (stage: lint).

Conv (bias, group, kernel, padding), pooling (rank, dilations, Indices output), inference-only
Dropout and BatchNormalization, Cast targets, and inputs that must be build-time constants.
"""

from __future__ import annotations

from onnx import TensorProto

from .base import NodeRule
from .graph import attribute, input_at
from .operators import QUANTIZED_TYPES, type_name

_POOLS = frozenset({"MaxPool", "AveragePool", "LpPool"})
_AUTO_PADS = {"NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER"}


class AutoPadRule(NodeRule):
    id = "auto-pad"
    description = "auto_pad is NOTSET/VALID/SAME_*; SAME_* comes without explicit pads"
    op_types = frozenset({"Conv", "ConvTranspose"}) | _POOLS

    def check_node(self, view, target, node):
        auto_pad = attribute(node, "auto_pad", "NOTSET")
        if auto_pad not in _AUTO_PADS:
            yield self.error(view.name(node), f"auto_pad '{auto_pad}' is not one of {', '.join(sorted(_AUTO_PADS))}")
        elif auto_pad.startswith("SAME") and attribute(node, "pads") is not None:
            yield self.error(view.name(node), f"auto_pad {auto_pad} together with explicit pads is rejected; "
                                              "keep one of them")


class ConvWeightsRule(NodeRule):
    id = "conv-shape"
    description = "Conv input rank 3-5, kernel_shape matches W, W.shape[1] * group = input channels"
    op_types = frozenset({"Conv"})

    def check_node(self, view, target, node):
        where = view.name(node)
        x_shape, w_shape = view.shape(input_at(node, 0)), view.shape(input_at(node, 1))
        if x_shape is not None and not 3 <= len(x_shape) <= 5:
            yield self.error(where, f"input rank {len(x_shape)}; TensorRT convolves 1D, 2D or 3D inputs (rank 3-5)")
        if w_shape is None:
            return
        kernel = attribute(node, "kernel_shape")
        if kernel is not None and list(kernel) != list(w_shape[2:]):
            yield self.error(where, f"kernel_shape {list(kernel)} differs from the weight's spatial dims {w_shape[2:]}")
        if x_shape is not None and len(x_shape) != len(w_shape):
            yield self.error(where, f"input rank {len(x_shape)} and weight rank {len(w_shape)} differ")
        channels = view.static_dim(input_at(node, 0), 1)
        group = attribute(node, "group", 1)
        if channels is not None and isinstance(w_shape[1], int) and w_shape[1] * group != channels:
            yield self.error(where, f"W.shape[1] ({w_shape[1]}) x group ({group}) != input channels ({channels})")


class ConvBiasRule(NodeRule):
    id = "conv-bias"
    description = "with constant weights, the Conv bias is a constant 1-D tensor of length K"
    op_types = frozenset({"Conv"})

    def check_node(self, view, target, node):
        bias = input_at(node, 2)
        weights = view.constant(input_at(node, 1))
        if not bias or weights is None:
            return  # the multi-input path (weights from a DequantizeLinear) takes any bias
        value = view.constant(bias)
        kernels = weights.shape[0]
        if value is None:
            yield self.error(view.name(node), f"bias '{bias}' is computed at run time; with constant weights "
                                              "TensorRT needs a constant bias (an initializer)")
        elif value.ndim > 1 or value.size != kernels:
            yield self.error(view.name(node), f"bias '{bias}' has shape {list(value.shape)}; it must be 1-D with "
                                              f"{kernels} values (one per output channel)")


class PoolingRule(NodeRule):
    id = "pool-shape"
    description = "pooling is 2D/3D (1D unsqueezed), dilations all 1, MaxPool without an Indices output"
    op_types = _POOLS

    def check_node(self, view, target, node):
        where = view.name(node)
        kernel = attribute(node, "kernel_shape")
        if kernel is not None and len(kernel) not in (1, 2, 3):
            yield self.error(where, f"{len(kernel)}-D kernel_shape; TensorRT pools 2D or 3D")
        dilations = attribute(node, "dilations")
        if dilations is not None and any(d != 1 for d in dilations):
            yield self.error(where, f"dilations {list(dilations)}; TensorRT pools only with dilations 1")
        if node.op_type == "MaxPool" and len(node.output) > 1 and node.output[1]:
            yield self.error(where, f"second output '{node.output[1]}' (Indices) is not supported; drop it")


class InferenceOnlyRule(NodeRule):
    id = "inference-only"
    description = "Dropout training_mode is a constant false; BatchNormalization in inference form"
    op_types = frozenset({"Dropout", "BatchNormalization"})

    def check_node(self, view, target, node):
        where = view.name(node)
        if node.op_type == "Dropout":
            mode = input_at(node, 2)
            if mode:
                value = view.constant(mode)
                if value is None:
                    yield self.error(where, f"training_mode '{mode}' must be an initializer (constant false)")
                elif bool(value.any()):
                    yield self.error(where, "training_mode is true; export the model in eval mode")
        else:
            if attribute(node, "training_mode", 0) or len([o for o in node.output if o]) > 1:
                yield self.error(where, "training-mode BatchNormalization (running stats outputs); "
                                        "export the model in eval mode")
            for index in range(1, 5):
                tensor = input_at(node, index)
                if tensor and not view.is_constant(tensor):
                    yield self.warning(where, f"statistic '{tensor}' is not a constant; TensorRT folds BN "
                                              "only with constant scale/bias/mean/var")


class CastTargetRule(NodeRule):
    id = "cast-target"
    description = "Cast targets a type TensorRT casts to; quantized types come from QuantizeLinear"
    op_types = frozenset({"Cast"})
    _ALLOWED = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.INT32,
                TensorProto.INT64, TensorProto.UINT8, TensorProto.BOOL, TensorProto.DOUBLE}

    def check_node(self, view, target, node):
        to = attribute(node, "to")
        if to in QUANTIZED_TYPES and target.rtx:
            # TensorRT-RTX 1.7 builds it (a saturating cast, the engine's output Int8): measured on
            # the lint corpus. TensorRT 10/11 keep the error: the 10.15 matrix has no such Cast target.
            yield self.warning(view.name(node), f"Cast to {type_name(to)} saturates, it does not quantize (no "
                                                "scale); TensorRT-RTX builds it, TensorRT 10/11 do not: use "
                                                "QuantizeLinear/DequantizeLinear")
        elif to in QUANTIZED_TYPES:
            yield self.error(view.name(node), f"Cast to {type_name(to)} is not a way to quantize in TensorRT; "
                                              "use QuantizeLinear/DequantizeLinear")
        elif to not in self._ALLOWED:
            yield self.error(view.name(node), f"Cast to {type_name(to)} is not supported by TensorRT")


class ConstantInputRule(NodeRule):
    """Inputs TensorRT must know at build time (axes, K, depth, training flags)."""

    id = "constant-input"
    description = "axes, K, depth and similar inputs are build-time constants"
    _CONSTANT_INPUTS = {
        "CumSum": (1, "axis"), "OneHot": (1, "depth"), "TopK": (1, "K"),
        "Squeeze": (1, "axes"), "Unsqueeze": (1, "axes"),
        **{op: (1, "axes") for op in ("ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax",
                                      "ReduceMean", "ReduceMin", "ReduceProd", "ReduceSum", "ReduceSumSquare")},
    }
    op_types = frozenset(_CONSTANT_INPUTS)

    def check_node(self, view, target, node):
        index, what = self._CONSTANT_INPUTS[node.op_type]
        tensor = input_at(node, index)
        where = view.name(node)
        if tensor and not view.is_constant(tensor):
            yield self.error(where, f"{what} '{tensor}' is computed at run time; TensorRT needs it as an "
                                    "initializer (a build-time constant)")
        if node.op_type == "Squeeze" and not tensor and attribute(node, "axes") is None and not target.at_least(11, 5):
            yield self.error(where, f"Squeeze without axes is imported from TensorRT 11.5, not by {target.name}; "
                                    "give the axes")
        if node.op_type == "TopK":
            k = view.constant(tensor) if tensor else None
            if k is not None and int(k.max()) >= 3840:
                yield self.error(where, f"K = {int(k.max())}; TensorRT's TopK takes K < 3840")
            if attribute(node, "sorted", 1) != 1:
                yield self.error(where, "sorted = 0; TensorRT's TopK returns sorted values only")


class ResizeModeRule(NodeRule):
    id = "resize-mode"
    description = "Resize modes, coordinate modes and aspect policy TensorRT implements"
    op_types = frozenset({"Resize", "Upsample"})
    _COORDS = {"half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric", "align_corners"}
    _NEAREST = {"floor", "ceil", "round_prefer_floor", "round_prefer_ceil"}

    def check_node(self, view, target, node):
        where = view.name(node)
        mode = attribute(node, "mode", "nearest")
        if mode not in ("nearest", "linear"):
            yield self.error(where, f"mode '{mode}'; TensorRT resizes with nearest or linear")
        coords = attribute(node, "coordinate_transformation_mode", "half_pixel")
        if node.op_type == "Resize" and coords not in self._COORDS:
            yield self.error(where, f"coordinate_transformation_mode '{coords}' is not supported")
        nearest = attribute(node, "nearest_mode", "round_prefer_floor")
        if mode == "nearest" and nearest not in self._NEAREST:
            yield self.error(where, f"nearest_mode '{nearest}' is not supported")
        if attribute(node, "antialias", 0):
            yield self.error(where, "antialias is not supported")
        if attribute(node, "keep_aspect_ratio_policy", "stretch") != "stretch":
            yield self.error(where, "keep_aspect_ratio_policy other than 'stretch' is not supported")


class ConstantAttributeRule(NodeRule):
    id = "constant-form"
    description = "Constant nodes hold dense numeric tensors; ScatterND without reduction"
    op_types = frozenset({"Constant", "ScatterND"})

    def check_node(self, view, target, node):
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name in ("sparse_value", "value_string", "value_strings"):
                    yield self.error(view.name(node), f"Constant with {attr.name} is not supported")
        elif attribute(node, "reduction", "none") != "none":
            yield self.error(view.name(node), "ScatterND reduction must be 'none' in TensorRT")


RULES = [AutoPadRule(), ConvWeightsRule(), ConvBiasRule(), PoolingRule(), InferenceOnlyRule(),
         CastTargetRule(), ConstantInputRule(), ResizeModeRule(), ConstantAttributeRule()]
