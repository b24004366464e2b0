"""Rules: explicit quantization TensorRT accepts and fuses (stage: lint).

TensorRT 11 builds INT8 only from QuantizeLinear/DequantizeLinear pairs: symmetric int8
(zero point 0), positive constant scales, per-tensor activations, per-channel weights on
the output-channel axis, a DQ on both inputs of every quantized Conv/Gemm, float biases,
and one shared scale on all inputs of a Concat so TensorRT can elide it.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import onnx
from onnx import TensorProto

from .base import NodeRule, Rule
from .graph import GraphView, attribute, input_at
from .operators import QUANTIZED_TYPES, type_name

QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})
WEIGHTED_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})


def has_qdq(view: GraphView) -> bool:
    return any(node.op_type in QDQ_OPS for node in view.nodes)


def dq_feeding(view: GraphView, tensor: str) -> Optional[onnx.NodeProto]:
    node = view.producer_skipping_identity(tensor) if tensor else None
    return node if node is not None and node.op_type == "DequantizeLinear" else None


def quantized_type(view: GraphView, node: onnx.NodeProto) -> int:
    """The integer side's type: zero point's type, else output_dtype (Q) or input type (DQ), else INT8."""
    zero_point = input_at(node, 2)
    if zero_point and view.elem_type(zero_point):
        return view.elem_type(zero_point)
    if node.op_type == "QuantizeLinear":
        return attribute(node, "output_dtype", 0) or TensorProto.INT8
    return view.elem_type(input_at(node, 0)) or TensorProto.INT8


def scale_value(view: GraphView, node: onnx.NodeProto) -> Optional[np.ndarray]:
    return view.constant(input_at(node, 1))


def quant_axis(view: GraphView, node: onnx.NodeProto) -> int:
    return attribute(node, "axis", 1 if view.opset >= 13 else 0)


def weight_axis(view: GraphView, op: onnx.NodeProto) -> int:
    """The output-channel axis of a weighted op's weight input."""
    if op.op_type == "Gemm":
        return 0 if attribute(op, "transB", 0) else 1
    if op.op_type == "MatMul":
        return -1
    if op.op_type == "ConvTranspose":
        return 1
    return 0


class QDQScaleRule(NodeRule):
    id = "qdq-scale"
    description = "Q/DQ scales are build-time constants, all positive"
    op_types = QDQ_OPS

    def check_node(self, view, target, node):
        where = view.name(node)
        scale = scale_value(view, node)
        if len(node.input) < 2 or not node.input[1]:
            yield self.error(where, "no scale input; TensorRT needs one")
        elif scale is None:
            yield self.error(where, f"scale '{node.input[1]}' is computed at run time; TensorRT needs a constant scale")
        elif scale.size == 0 or not np.all(np.asarray(scale, dtype=np.float64) > 0):
            lowest = f"{float(np.min(scale)):.6g}" if scale.size else "none"
            yield self.error(where, f"scale '{node.input[1]}' has values <= 0 (min {lowest}); "
                                    "scales must be positive")


class QDQZeroPointRule(NodeRule):
    id = "qdq-zero-point"
    description = "zero points are absent or a constant 0 of the scale's size (symmetric quantization)"
    op_types = QDQ_OPS

    def check_node(self, view, target, node):
        zero_point = input_at(node, 2)
        if not zero_point:
            return
        where = view.name(node)
        value = view.constant(zero_point)
        if value is None:
            yield self.error(where, f"zero point '{zero_point}' is computed at run time; it must be a constant 0")
            return
        if np.any(np.asarray(value, dtype=np.float64) != 0):
            flat = np.asarray(value).ravel()
            nonzero = flat[np.flatnonzero(flat.astype(np.float64))[0]].item()
            yield self.error(where, f"zero point '{zero_point}' holds {nonzero!r}; TensorRT quantizes symmetrically "
                                    "and rejects a non-zero zero point")
        scale = scale_value(view, node)
        if scale is not None and value.size != scale.size:
            yield self.error(where, f"zero point has {value.size} values, scale {scale.size}; they must match")


class QDQTypeRule(NodeRule):
    id = "qdq-int8"
    description = "the quantized type is INT8 (TensorRT also takes FP8/INT4/FP4; never UINT8 or INT32)"
    op_types = QDQ_OPS

    def check_node(self, view, target, node):
        where = view.name(node)
        qtype = quantized_type(view, node)
        if node.op_type == "DequantizeLinear" and view.elem_type(input_at(node, 0)) == TensorProto.INT32:
            yield self.error(where, f"dequantizes INT32 '{node.input[0]}' (a quantized bias); TensorRT rejects it: "
                                    "keep biases float (quantize with bias quantization off)")
        elif qtype == TensorProto.UINT8:
            yield self.error(where, "UINT8 quantization is asymmetric; TensorRT on the GPU takes INT8 only "
                                    "(zero point int8 0)")
        elif qtype != TensorProto.INT8 and qtype in QUANTIZED_TYPES:
            yield self.warning(where, f"{type_name(qtype)} quantization: TensorRT accepts it, but this project's "
                                      "INT8 path (calibration, validation) expects INT8")
        elif qtype not in QUANTIZED_TYPES:
            yield self.error(where, f"{type_name(qtype)} is not a quantized type TensorRT takes (INT8, FP8, INT4, FP4)")


class QDQScaleShapeRule(NodeRule):
    id = "qdq-scale-shape"
    description = "scale is per-tensor (1 value) or per-channel with one value per channel on the axis"
    op_types = QDQ_OPS

    def check_node(self, view, target, node):
        scale = scale_value(view, node)
        if scale is None or scale.size <= 1:
            return
        where = view.name(node)
        data = input_at(node, 0)
        data_shape = view.shape(data)
        rank = len(data_shape) if data_shape is not None else None
        if scale.ndim == 1:
            if view.opset < 13:
                yield self.error(where, f"per-channel scale needs opset >= 13 (the axis attribute); model has {view.opset}")
                return
            axis = quant_axis(view, node)
            if rank is not None and not -rank <= axis < rank:
                yield self.error(where, f"axis {axis} is outside the input's rank {rank}")
                return
            channels = view.static_dim(data, axis)
            if channels is not None and channels != scale.size:
                yield self.error(where, f"per-channel scale has {scale.size} values but '{data}' has {channels} "
                                        f"channels on axis {axis}; give one scale per channel")
        elif rank is not None and scale.ndim != rank:
            yield self.error(where, f"scale of rank {scale.ndim} for an input of rank {rank}: neither per-tensor, "
                                    "per-channel (1-D) nor block (same rank)")


class QDQPairRule(NodeRule):
    id = "qdq-pairs"
    description = "every QuantizeLinear feeds DequantizeLinear nodes only (Q/DQ come in pairs)"
    op_types = frozenset({"QuantizeLinear"})

    def check_node(self, view, target, node):
        output = node.output[0]
        others = [c for c in view.consumers.get(output, []) if c.op_type != "DequantizeLinear"]
        if output in view.graph_output_names:
            # A warning, not an error: TensorRT-RTX builds it with an Int8 engine output (measured on
            # the lint corpus), and strongly typed TensorRT takes Int8 I/O tensors.
            yield self.warning(view.name(node), f"quantized '{output}' is a graph output: the engine returns "
                                                "INT8 values its caller must dequantize; end the pair with a "
                                                "DequantizeLinear to return floats")
        for consumer in others:
            yield self.error(view.name(node), f"quantized '{output}' feeds {view.name(consumer)}; a QuantizeLinear "
                                              "must feed DequantizeLinear nodes only")


class QDQWeightedInputsRule(NodeRule):
    id = "qdq-conv-inputs"
    description = "a quantized Conv/Gemm has a DequantizeLinear on both its data and weight inputs"
    op_types = WEIGHTED_OPS

    def check_node(self, view, target, node):
        if not has_qdq(view):
            return
        data_dq, weight_dq = dq_feeding(view, input_at(node, 0)), dq_feeding(view, input_at(node, 1))
        where = view.name(node)
        if bool(data_dq) != bool(weight_dq):
            quantized, plain = ("weight", "data") if weight_dq else ("data", "weight")
            yield self.error(where, f"its {quantized} input is dequantized but its {plain} input "
                                    f"'{input_at(node, 0 if plain == 'data' else 1)}' is not; TensorRT runs it in float: "
                                    f"put a Q/DQ pair on the {plain} input too (or on neither)")
        elif not data_dq and node.op_type in ("Conv", "Gemm"):
            reason = view.kept_float.get(node.name)
            if reason is not None:
                yield self.info(where, f"kept float on purpose by quantize ({reason or 'excluded'})")
            else:
                yield self.warning(where, "no Q/DQ on its inputs: it stays in float inside an INT8 graph")


class QDQActivationPerTensorRule(NodeRule):
    id = "qdq-activation-per-tensor"
    description = "activations entering a Conv/Gemm are quantized per tensor (one scale)"
    op_types = WEIGHTED_OPS

    def check_node(self, view, target, node):
        dq = dq_feeding(view, input_at(node, 0))
        scale = scale_value(view, dq) if dq is not None else None
        if scale is not None and scale.size > 1:
            yield self.error(view.name(node), f"its data input is dequantized per channel ({scale.size} scales, "
                                              f"{view.name(dq)}); quantize activations per tensor")


class QDQWeightAxisRule(NodeRule):
    id = "qdq-weight-axis"
    description = "weights are quantized per output channel: axis 0 of Conv weights (K, C, kh, kw)"
    op_types = WEIGHTED_OPS

    def check_node(self, view, target, node):
        dq = dq_feeding(view, input_at(node, 1))
        if dq is None:
            return
        scale = scale_value(view, dq)
        if scale is None:
            return
        where = view.name(node)
        if scale.size <= 1:
            yield self.warning(where, f"weights quantized per tensor ({view.name(dq)}); per-channel scales on the "
                                      "output-channel axis keep more accuracy")
            return
        expected = weight_axis(view, node)
        axis = quant_axis(view, dq)
        rank = len(view.shape(dq.input[0]) or []) or None
        normalized = axis % rank if rank else axis
        wanted = expected % rank if rank else expected
        if normalized != wanted:
            yield self.error(where, f"weights quantized along axis {axis} ({view.name(dq)}); {node.op_type} weights "
                                    f"are quantized per output channel, axis {expected}")


class QDQBiasRule(NodeRule):
    id = "qdq-bias"
    description = "biases stay float (no DequantizeLinear on a Conv/Gemm bias)"
    op_types = frozenset({"Conv", "ConvTranspose", "Gemm"})

    def check_node(self, view, target, node):
        dq = dq_feeding(view, input_at(node, 2))
        if dq is not None:
            yield self.error(view.name(node), f"its bias is dequantized ({view.name(dq)}); TensorRT takes float biases: "
                                              "quantize with bias quantization off")


class QDQConcatScaleRule(NodeRule):
    id = "qdq-concat-scale"
    description = "all quantized inputs of a Concat and the Q after it share one scale"
    op_types = frozenset({"Concat"})

    def check_node(self, view, target, node):
        dqs = [(tensor, dq_feeding(view, tensor)) for tensor in node.input if tensor]
        if not any(dq for _, dq in dqs):
            return
        where = view.name(node)
        float_inputs = [tensor for tensor, dq in dqs if dq is None and not view.is_constant(tensor)]
        if float_inputs:
            yield self.error(where, f"inputs {', '.join(repr(t) for t in float_inputs)} are float while others are "
                                    "dequantized; quantize every branch so TensorRT can elide the Concat")
        scales = {}
        for tensor, dq in dqs:
            scale = scale_value(view, dq) if dq is not None else None
            if scale is not None:
                scales[tensor] = scale
        for consumer in view.consumers.get(node.output[0], []):
            if consumer.op_type == "QuantizeLinear" and scale_value(view, consumer) is not None:
                scales[f"output Q {view.name(consumer)}"] = scale_value(view, consumer)
        distinct = {tuple(np.asarray(v, dtype=np.float64).ravel().round(12)) for v in scales.values()}
        if len(distinct) > 1:
            # A warning: TensorRT builds it and rescales the branches at the Concat (TensorRT-RTX keeps
            # the Q/DQ around it in the fused kernel; build-engine's plan report says "requantized").
            listed = ", ".join(f"{k}: {_short(v)}" for k, v in scales.items())
            yield self.warning(where, f"inputs are quantized with {len(distinct)} different scales ({listed}), so "
                                      "TensorRT requantizes here instead of eliding the Concat; give all Concat "
                                      "inputs and the Q after it one scale (the max of their amax)")


class QDQBetweenConvReluRule(Rule):
    id = "qdq-conv-relu"
    description = "no Q/DQ between a Conv and its Relu (TensorRT fuses Conv+Relu; quantize after the Relu)"

    def check(self, view, target):
        for node in view.nodes:
            if node.op_type != "Relu":
                continue
            dq = dq_feeding(view, node.input[0])
            q = view.producer_skipping_identity(dq.input[0]) if dq is not None else None
            if q is not None and q.op_type == "QuantizeLinear":
                source = view.producer_skipping_identity(q.input[0])
                if source is not None and source.op_type in ("Conv", "ConvTranspose", "BatchNormalization"):
                    yield self.warning(view.name(node), f"Q/DQ sits between {view.name(source)} and this Relu; "
                                                        "move the Q after the Relu so TensorRT fuses them")


class QDQAveragePoolRule(NodeRule):
    id = "qdq-avgpool"
    description = "a quantized AveragePool has a DQ on its input and a Q on its output (it does not commute)"
    op_types = frozenset({"AveragePool"})

    def check_node(self, view, target, node):
        if dq_feeding(view, node.input[0]) is None:
            return
        consumers = view.consumers.get(node.output[0], [])
        if not consumers or any(c.op_type != "QuantizeLinear" for c in consumers):
            yield self.warning(view.name(node), "dequantized input but no QuantizeLinear on its output: TensorRT "
                                                "runs this AveragePool in float")


class QDQScalarConstantRule(NodeRule):
    id = "qdq-scalar-constant"
    description = "a DequantizeLinear of a constant dequantizes a tensor of rank >= 1"
    op_types = frozenset({"DequantizeLinear"})

    def check_node(self, view, target, node):
        value = view.constant(input_at(node, 0))
        if value is None or value.ndim != 0:
            return
        # Found by building onnxruntime quantize_static's Inception v3 graph (its transform_input
        # scalars) with TensorRT-RTX 1.7: "Quantized constant (...) is only allowed before DQ or
        # PLUGIN_V2 or kPLUGIN_V3 node"; the same constant with shape [1] builds. Not confirmed on
        # TensorRT 10/11, so a warning there.
        message = (f"dequantizes the 0-d constant '{input_at(node, 0)}'; TensorRT-RTX's builder refuses a quantized "
                   "scalar constant (give it shape [1], or keep it float)")
        yield (self.error if target.rtx else self.warning)(view.name(node), message)


def _short(values: np.ndarray) -> str:
    flat = np.asarray(values).ravel()
    return f"{float(flat[0]):.6g}" if flat.size == 1 else f"[{float(flat[0]):.6g}, ...]({flat.size})"


RULES = [QDQScaleRule(), QDQZeroPointRule(), QDQTypeRule(), QDQScaleShapeRule(), QDQPairRule(),
         QDQWeightedInputsRule(), QDQActivationPerTensorRule(), QDQWeightAxisRule(), QDQBiasRule(),
         QDQConcatScaleRule(), QDQBetweenConvReluRule(), QDQAveragePoolRule(), QDQScalarConstantRule()]
