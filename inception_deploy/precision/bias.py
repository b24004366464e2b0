"""Bias correction of an INT8 Q/DQ graph (stage: quantize).

Int8 rounding moves the mean of every Conv/Gemm output: weight rounding by (W_q - W) E[x],
and activation rounding because Relu outputs pile up near zero, so more of them round down
to 0 than up to one step (a dead zone that biases every layer's input low). The shifts add
up along the network. Empirical bias correction measures, per output channel, the mean of
each layer's output in the Q/DQ graph and in the FP32 graph on calibration images, and
subtracts the difference from the layer's float bias (TensorRT adds biases in float after
the int8 convolution, so this costs nothing at run time).

Measured sequentially, in depth order: a layer is measured only after every Conv/Gemm
before it is corrected, so each correction sees the inputs the final graph will give it.
Layers of one depth (an Inception module's parallel branches) are measured together, one
ORT pass per depth. Excluded float layers (the classifier) are corrected too: their
inputs carry the shift of the quantized layers in front of them.

Why by hand: onnxruntime's and Model Optimizer's PTQ have no bias correction for ONNX
graphs. Measured on the digits GoogLeNet (numbers in calibration/README.md).
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from ..graph_utils import attribute, constant_source, drop_unused_initializers

CORRECTED_OPS = ("Conv", "Gemm")


def layer_depths(model) -> dict[str, int]:
    """Conv/Gemm node -> the number of Conv/Gemm nodes on the longest path from the input
    to it, itself included (1 for the first conv)."""
    producers = {o: n for n in model.graph.node for o in n.output}
    depth: dict[str, int] = {}

    def of_tensor(tensor: str) -> int:
        # Iterative depth-first walk: Inception v3 is deep enough to hit Python's recursion limit.
        stack = [tensor]
        while stack:
            current = stack[-1]
            if current in depth:
                stack.pop()
                continue
            node = producers.get(current)
            if node is None:
                depth[current] = 0
                stack.pop()
                continue
            missing = [i for i in node.input if i and i not in depth]
            if missing:
                stack.extend(missing)
                continue
            value = max((depth[i] for i in node.input if i), default=0)
            depth[current] = value + (1 if node.op_type in CORRECTED_OPS else 0)
            stack.pop()
        return depth[tensor]

    return {n.name: of_tensor(n.output[0]) for n in model.graph.node if n.op_type in CORRECTED_OPS}


def channel_means(model, tensors: list[str], inputs: np.ndarray, batch_size: int = 32) -> dict[str, np.ndarray]:
    """Per-channel mean of each tensor over the images (and positions), axis 1 the channel."""
    from ..backends.onnxruntime_backend import create_session

    return _means(create_session(model, extra_outputs=tensors), tensors, inputs, {}, batch_size)


def _means(sess, tensors: list[str], inputs: np.ndarray, feeds: dict, batch_size: int) -> dict[str, np.ndarray]:
    input_name = sess.get_inputs()[0].name
    sums: dict[str, np.ndarray] = {}
    counts = dict.fromkeys(tensors, 0)
    for start in range(0, len(inputs), batch_size):
        outputs = sess.run(tensors, {input_name: inputs[start:start + batch_size], **feeds})
        for name, value in zip(tensors, outputs):
            part = value.sum(axis=tuple(a for a in range(value.ndim) if a != 1), dtype=np.float64)
            sums[name] = sums[name] + part if name in sums else part
            counts[name] += value.size // value.shape[1]
    return {name: sums[name] / counts[name] for name in tensors}


def _biases_as_inputs(quantized, layers: dict[str, int], channels: dict[str, int]):
    """A copy of the Q/DQ graph whose listed layers read their bias from a graph input, so one
    ORT session serves every depth (a new session per depth cost ~1.5 s each on Inception v3).
    Returns (graph, layer -> (input name, bias now, divisor: Gemm's beta or 1))."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    working = onnx.ModelProto()
    working.CopyFrom(quantized)
    initializers = {i.name: i for i in working.graph.initializer}
    fed = {}
    for node in working.graph.node:
        if node.name not in layers:
            continue
        count = channels[node.name]
        if len(node.input) > 2 and node.input[2]:
            source = constant_source(working, node.input[2])
            if source is None:
                continue  # computed at run time
            bias = numpy_helper.to_array(initializers[source]).astype(np.float32).reshape(-1)
            if bias.size != count:
                continue  # broadcast in a way a per-channel shift cannot follow
        else:
            bias = np.zeros(count, dtype=np.float32)
        divisor = float(attribute(node, "beta", 1.0)) if node.op_type == "Gemm" else 1.0
        if divisor == 0.0:
            continue
        name = f"{node.name}::bias"
        while len(node.input) < 3:
            node.input.append("")
        node.input[2] = name
        working.graph.input.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [count]))
        fed[node.name] = (name, bias, divisor)
    return working, fed


def measure_bias_corrections(float_model, quantized, inputs: np.ndarray, progress: bool = False,
                             batch_size: int = 32) -> dict[str, np.ndarray]:
    """Layer -> the per-channel amount to subtract from its bias so that, on `inputs`, the
    mean of its output in the corrected Q/DQ graph equals the FP32 graph's. `quantized` is
    left as it is; apply the result with correct_bias."""
    from ..backends.onnxruntime_backend import create_session
    from ..progress import track

    depths = layer_depths(float_model)
    outputs = {n.name: n.output[0] for n in float_model.graph.node if n.name in depths}
    reference = channel_means(float_model, list(outputs.values()), inputs, batch_size)
    channels = {layer: reference[tensor].shape[0] for layer, tensor in outputs.items()}
    working, fed = _biases_as_inputs(quantized, depths, channels)
    sess = create_session(working, extra_outputs=[outputs[layer] for layer in fed])
    feeds = {name: bias for name, bias, _ in fed.values()}
    shifts: dict[str, np.ndarray] = {}
    levels = sorted({depths[layer] for layer in fed})
    for level in track(levels, "bias correction", len(levels), progress,
                       about="one ONNX Runtime pass per depth level over the calibration images, "
                             "usually the longest step of quantize"):
        layers = [layer for layer in fed if depths[layer] == level]
        measured = _means(sess, [outputs[layer] for layer in layers], inputs, feeds, batch_size)
        for layer in layers:
            shift = (measured[outputs[layer]] - reference[outputs[layer]]).astype(np.float32)
            name, _, divisor = fed[layer]
            feeds[name] = (feeds[name] - shift / divisor).astype(np.float32)
            shifts[layer] = shift
    return shifts


def bias_key(layers: list[str], excluded: list[str], unsigned: Optional[set], amax: dict[str, float]) -> str:
    """What a set of corrections depends on besides the calibration itself: which layers are
    int8, which activations are uint8, and the scales. A cache's corrections serve only a
    graph with the same key."""
    from ..fileio import sha256_json

    return sha256_json({"int8_layers": sorted(layers), "float_layers": sorted(excluded),
                        "unsigned": sorted(unsigned or ()), "amax": {k: round(v, 9) for k, v in sorted(amax.items())}})


def correct_bias(model, shifts: dict[str, np.ndarray]) -> list[str]:
    """Subtract each Conv/Gemm layer's shift (measure_bias_corrections) from its float
    bias, in place on `model` (the Q/DQ graph); a layer without a bias gets one. Biases stay
    float (TensorRT adds them in float after the int8 convolution). Returns the layers
    corrected."""
    from onnx import numpy_helper

    initializers = {i.name: i for i in model.graph.initializer}
    corrected = []
    for node in model.graph.node:
        shift = shifts.get(node.name)
        if node.op_type not in CORRECTED_OPS or shift is None:
            continue
        if len(node.input) > 2 and node.input[2]:
            source = constant_source(model, node.input[2])
            if source is None:
                continue  # a bias computed at run time: leave it
            bias = numpy_helper.to_array(initializers[source]).astype(np.float32)
        else:
            bias = np.zeros(shift.shape, dtype=np.float32)
        if node.op_type == "Gemm":
            beta = attribute(node, "beta", 1.0)
            if beta == 0.0:
                continue
            shift = shift / beta
        if bias.size == shift.size:
            new = bias - shift.reshape(bias.shape)
        elif bias.size == 1:  # a scalar Gemm C broadcast over the outputs
            new = bias.reshape(-1)[0] - shift
        else:
            continue  # broadcast in a way a per-channel shift cannot follow
        new = new.astype(np.float32)
        name = f"{node.name.replace('/', '_').strip('_')}_bias_corrected"
        tensor = numpy_helper.from_array(new, name)
        model.graph.initializer.append(tensor)
        initializers[name] = tensor
        while len(node.input) < 3:
            node.input.append("")
        node.input[2] = name
        corrected.append(node.name)
    drop_unused_initializers(model)
    return corrected
