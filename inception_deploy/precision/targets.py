"""INT8 deployment targets (stage: quantize): how the Q/DQ graph is typed for the runtime it is for.

One calibration, one placement (placement.py), two ways of writing the numbers:

- `tensorrt` (the default): int8 activations, symmetric (zero point 0), float biases. This
  is what TensorRT's explicit quantization accepts ("Non-zero zero point is not supported").
- `ort-cpu`: what ONNX Runtime's CPU kernels run fastest. Measured on ORT 1.31 with the
  digits GoogLeNet, 1 thread, batch 8, vs FP32 (benchmarks/README.md): the tensorrt graph
  2.05x slower (ORT drops a Relu before a Q only when the Q's zero point is the bottom of its
  range, so no DQ -> Conv -> Relu -> Q becomes QLinearConv); uint8 activations with zero point
  0 0.55x (53 of 57 Convs fused); with a Q/DQ before the classifier's Flatten too 0.30x (all
  57 Convs, every Concat and the global pool fused: the last module no longer falls back to
  float and out of ORT's NHWC layout). So: a tensor never below zero gets [0, amax] over 255
  levels (zero point 0); a signed one (the normalized image) an asymmetric range
  [max(min, -amax), amax]. Biases are int32 behind their own DequantizeLinear (scale = input
  scale x weight scale, zero point 0), the form QLinearConv takes and ORT's own quantizer
  writes; ORT fused float biases too here, at the same speed (0.535x vs 0.546x), so this is
  about a graph another runtime reads as ORT's, not speed. TensorRT refuses such a graph,
  so lint's tensorrt-* targets reject it (lint/deployment_target.py) and build-engine too.

Each target is a small object: `activation(amax, low)` -> (scale, zero point), and `finish`,
run on the graph after bias correction (the corrections go into the float biases first).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MIN_SCALE = 1e-8
TARGETS = ("tensorrt", "ort-cpu")
# The manifest's quantize stage records the target under this key (lint and build-engine read it).
MANIFEST_KEY = "int8_target"


@dataclass(frozen=True)
class TensorRTTarget:
    """Symmetric int8 (or, with precision.int8.unsigned_activations, uint8 of the same scale)."""

    unsigned_activations: bool = False
    name: str = "tensorrt"
    read_quantized: tuple = ()  # placement.plan_quantization: only Conv/Gemm inputs

    def activation(self, amax: float, low: float | None) -> tuple[float, np.ndarray]:
        scale = max(amax / 127.0, MIN_SCALE)
        unsigned = self.unsigned_activations and low is not None and low >= 0.0
        return scale, np.array(0, dtype=np.uint8 if unsigned else np.int8)

    def finish(self, model) -> int:
        return 0


@dataclass(frozen=True)
class OrtCpuTarget:
    """uint8 activations over their measured range, int32 biases behind their own DQ."""

    name: str = "ort-cpu"
    # Q/DQ before the Flatten of the classifier too: the last Concat and the GlobalAveragePool
    # become QLinearConcat / QLinearGlobalAveragePool, and the Convs feeding them QLinearConv
    # (without it, 4 Convs and that Concat stayed float on the digits GoogLeNet: 0.55x FP32, not 0.30x).
    read_quantized: tuple = ("Flatten",)

    def activation(self, amax: float, low: float | None) -> tuple[float, np.ndarray]:
        low = -amax if low is None else max(min(low, 0.0), -amax)  # unknown min: symmetric
        zero_point = int(np.clip(np.rint(-low * 255.0 / max(amax - low, MIN_SCALE)), 0, 255))
        # The scale that keeps both ends representable after the zero point's rounding: a
        # normalized image in [-1, 1] gets zero point 128 and scale 1/127, so its white pixels
        # stay exactly 1.0 (scale 2/255 would clip them to 0.996, doubling the max logit error).
        scale = max(amax / (255 - zero_point), -low / zero_point if zero_point else 0.0, MIN_SCALE)
        return scale, np.array(zero_point, dtype=np.uint8)

    def finish(self, model) -> int:
        """Int32 biases for every Conv/Gemm whose input and weight come through a DQ; the count."""
        return quantize_biases(model)


def manifest_target(manifest) -> str | None:
    """The INT8 target the last quantize stage in a manifest recorded (None: none recorded)."""
    for entry in reversed((manifest or {}).get("history", [])):
        if entry.get("stage") == "quantize":
            return entry.get(MANIFEST_KEY)
    return None


def make_target(name: str, unsigned_activations: bool = False):
    if name == "ort-cpu":
        return OrtCpuTarget()
    return TensorRTTarget(unsigned_activations)


def quantize_biases(model) -> int:
    """Replace the float bias of each quantized Conv/Gemm by int32 values behind a
    DequantizeLinear of scale input_scale x weight_scale (per output channel), zero point 0:
    the bias QLinearConv / QGemm take, as ORT's own quantize_static writes it."""
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    producers = {o: n for n in graph.node for o in n.output}

    def dq_scale(tensor: str):
        node = producers.get(tensor)
        if node is None or node.op_type != "DequantizeLinear" or node.input[1] not in inits:
            return None
        return numpy_helper.to_array(inits[node.input[1]]).astype(np.float64)

    added, new_nodes, count = [], {}, 0
    for node in graph.node:
        if node.op_type not in ("Conv", "Gemm") or len(node.input) < 3 or node.input[2] not in inits:
            continue
        x_scale, w_scale = dq_scale(node.input[0]), dq_scale(node.input[1])
        if x_scale is None or w_scale is None or x_scale.size != 1:
            continue
        bias = numpy_helper.to_array(inits[node.input[2]]).astype(np.float64)
        scale = np.broadcast_to(x_scale.reshape(()) * w_scale.reshape(-1), bias.shape)
        scale = np.maximum(scale, MIN_SCALE).astype(np.float32)
        q = np.clip(np.rint(bias / scale), -2**31, 2**31 - 1).astype(np.int32)
        base = node.input[2].replace("/", "_").replace(":", "_") + "_int32"
        added += [numpy_helper.from_array(q, base), numpy_helper.from_array(scale, base + "_scale"),
                  numpy_helper.from_array(np.zeros(scale.shape, dtype=np.int32), base + "_zero_point")]
        new_nodes[node.name] = helper.make_node("DequantizeLinear", [base, base + "_scale", base + "_zero_point"],
                                                [base + "_dequantized"], axis=0, name=base + "_DequantizeLinear")
        node.input[2] = base + "_dequantized"
        count += 1
    ordered = []
    for node in graph.node:  # each bias DQ right before its reader: the order stays topological
        if node.name in new_nodes:
            ordered.append(new_nodes[node.name])
        ordered.append(node)
    del graph.node[:]
    graph.node.extend(ordered)
    graph.initializer.extend(added)
    from ..graph_utils import drop_unused_initializers

    drop_unused_initializers(model, keep={o.name for o in graph.output})
    return count
