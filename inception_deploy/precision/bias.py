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

from ..graph_utils import GraphIndex, attribute, constant_source, drop_unused_initializers

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


def _channel_sums(value: np.ndarray) -> np.ndarray:
    """Per-channel (axis 1) float64 sums: over the images first, then each channel's positions
    (as equalize._channel_absmax, the faster order on small maps)."""
    return value.sum(axis=0, dtype=np.float64).reshape(value.shape[1], -1).sum(axis=1)


def _means(sess, tensors: list[str], inputs: np.ndarray, feeds: dict, batch_size: int) -> dict[str, np.ndarray]:
    input_name = sess.get_inputs()[0].name
    sums: dict[str, np.ndarray] = {}
    counts = dict.fromkeys(tensors, 0)
    for start in range(0, len(inputs), batch_size):
        outputs = sess.run(tensors, {input_name: inputs[start:start + batch_size], **feeds})
        for name, value in zip(tensors, outputs):
            part = _channel_sums(value)
            sums[name] = sums[name] + part if name in sums else part
            counts[name] += value.size // value.shape[1]
    return {name: sums[name] / counts[name] for name in tensors}


def layer_inputs(float_model) -> dict[str, str]:
    """Corrected layer -> the activation it reads (its first input)."""
    return {n.name: n.input[0] for n in float_model.graph.node if n.op_type in CORRECTED_OPS}


# Weight bytes per ONNX Runtime session of means_through_layers: small sessions, so that
# deriving the reference never holds a second copy of every weight at once.
LAYER_CHUNK_BYTES = 16 << 20


def means_through_layers(float_model, input_means: dict[str, np.ndarray]) -> Optional[dict[str, np.ndarray]]:
    """Each Conv/Gemm output's per-channel mean in the FP32 graph, from the per-position mean
    of its input over the same images (`input_means`: tensor -> that mean, batch axis gone).

    Exact by linearity: Conv and Gemm are affine, zero padding included, so the mean over
    images of W * x + b at each position is W * E[x] + b; averaging over positions then gives
    the channel means the reference pass measured by running the FP32 graph again (one whole
    pass, 1.8 s of 24 on Inception v3, and the peak memory of quantize). Each layer runs once,
    on its mean input, a few layers per session. None when a layer's weight is computed at
    run time or its input's mean is missing (the caller measures instead)."""
    from onnx import TensorProto, helper

    from ..backends.onnxruntime_backend import create_session

    lookup = GraphIndex(float_model)
    layers = [n for n in float_model.graph.node if n.op_type in CORRECTED_OPS]
    chunks, chunk, weight_bytes = [], [], 0
    for node in layers:
        if node.input[0] not in input_means:
            return None
        constants = []
        for name in node.input[1:]:
            if not name:
                constants.append(None)
                continue
            source = constant_source(float_model, name, lookup)
            if source is None:
                return None
            constants.append(lookup.initializers[source])
        size = sum(len(c.raw_data) or 4 * int(np.prod(c.dims)) for c in constants if c is not None)
        if chunk and weight_bytes + size > LAYER_CHUNK_BYTES:
            chunks.append(chunk)
            chunk, weight_bytes = [], 0
        chunk.append((node, constants))
        weight_bytes += size
    if chunk:
        chunks.append(chunk)
    means: dict[str, np.ndarray] = {}
    for chunk in chunks:
        nodes, inits, feeds = [], {}, {}
        for node, constants in chunk:
            copy = helper.make_node(node.op_type, [node.input[0]] + [c.name if c is not None else "" for c in constants],
                                    [node.output[0]], name=node.name)
            copy.attribute.extend(node.attribute)
            nodes.append(copy)
            inits.update({c.name: c for c in constants if c is not None})
            feeds[node.input[0]] = input_means[node.input[0]][None].astype(np.float32)
        graph = helper.make_graph(
            nodes, "layer_means",
            [helper.make_tensor_value_info(name, TensorProto.FLOAT, list(value.shape)) for name, value in feeds.items()],
            [helper.make_tensor_value_info(n.output[0], TensorProto.FLOAT, None) for n in nodes], list(inits.values()))
        model = helper.make_model(graph, opset_imports=float_model.opset_import)
        model.ir_version = float_model.ir_version
        # ORT's full optimizations, as the measured pass had them: the two then agree within
        # 4.6e-6 of the largest channel mean on the digits GoogLeNet (2.7e-5 with the
        # unoptimized kernels; either is float rounding, and an FP32 reference has no Q/DQ).
        session = create_session(model)
        names = [n.output[0] for n in nodes]
        for name, value in zip(names, session.run(names, feeds)):
            means[name] = value.mean(axis=tuple(a for a in range(value.ndim) if a != 1), dtype=np.float64)
    return means


def correctable_layers(quantized, channels: dict[str, int]) -> dict[str, float]:
    """The layers of `channels` (layer -> output channels) whose bias a per-channel shift can
    follow (a constant bias of one value per channel, or none) -> the divisor of a shift
    (Gemm's beta, else 1)."""
    from onnx import numpy_helper

    lookup = GraphIndex(quantized)
    initializers = lookup.initializers
    found = {}
    for node in quantized.graph.node:
        if node.name not in channels:
            continue
        if len(node.input) > 2 and node.input[2]:
            source = constant_source(quantized, node.input[2], lookup)
            if source is None or numpy_helper.to_array(initializers[source]).size != channels[node.name]:
                continue  # computed at run time, or broadcast in a way a per-channel shift cannot follow
        divisor = float(attribute(node, "beta", 1.0)) if node.op_type == "Gemm" else 1.0
        if divisor != 0.0:
            found[node.name] = divisor
    return found


def _segments(quantized, depths: dict[str, int]):
    """The Q/DQ graph cut by depth: segment k computes the corrected layers of depth k and every
    other node at depth k - 1 (the Relu, Q/DQ, pools and Concat after the depth k - 1 layers).
    Nodes that read only constants (weight DequantizeLinear) go into each segment that needs them.
    Returns [(depth, nodes, inputs, outputs)], inputs/outputs the tensors crossing segments."""
    graph = quantized.graph
    constants = {i.name for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output if o}
    level: dict[str, int] = {}  # tensor -> depth (corrected layers on the longest path to it)
    constant_nodes, constant_outputs = [], set()
    for node in graph.node:  # graph order is topological (onnx.checker)
        inputs = [i for i in node.input if i]
        if inputs and all(i in constants or i in constant_outputs for i in inputs):
            constant_nodes.append(node)
            constant_outputs.update(o for o in node.output if o)
            continue
        value = max((level.get(i, 0) for i in inputs), default=0) + (1 if node.name in depths else 0)
        for out in node.output:
            level[out] = value
    top = max(depths.values(), default=0)
    segment_of = {}
    for node in graph.node:
        if node.output[0] in constant_outputs:
            continue
        own = level[node.output[0]]
        segment_of[node.name] = own if node.name in depths else own + 1
    by_segment: dict[int, list] = {k: [] for k in range(1, top + 1)}
    for node in graph.node:
        k = segment_of.get(node.name)
        if k is not None and k <= top:
            by_segment[k].append(node)
    needed_later: dict[str, int] = {}  # tensor -> the last segment that reads it
    for node in graph.node:
        k = segment_of.get(node.name)
        for name in node.input:
            if name and name not in constants and name not in constant_outputs and k is not None:
                needed_later[name] = max(needed_later.get(name, 0), k)
    result = []
    for k, nodes in by_segment.items():
        made = {o for n in nodes for o in n.output}
        inputs = sorted({i for n in nodes for i in n.input
                         if i and i not in made and i not in constants and i not in constant_outputs})
        outputs = [o for n in nodes for o in n.output
                   if o and (n.name in depths or needed_later.get(o, 0) > k)]
        wanted = {i for n in nodes for i in n.input}
        closure = set()
        stack = [i for i in wanted if i in constant_outputs]
        while stack:  # the constant nodes these nodes read, and theirs
            node = producer[stack.pop()]
            if node.name in closure:
                continue
            closure.add(node.name)
            stack.extend(i for i in node.input if i in constant_outputs)
        nodes = [n for n in constant_nodes if n.name in closure] + nodes
        result.append((k, nodes, inputs, outputs))
    return result


def _segment_model(quantized, nodes, inputs: list[str], outputs: list[str], types: dict[str, int]):
    from onnx import TensorProto, helper

    used = {i for n in nodes for i in n.input}
    graph = helper.make_graph(
        nodes, "segment", [helper.make_tensor_value_info(i, types.get(i, TensorProto.FLOAT), None) for i in inputs],
        [helper.make_tensor_value_info(o, types.get(o, TensorProto.FLOAT), None) for o in outputs],
        [i for i in quantized.graph.initializer if i.name in used])
    model = helper.make_model(graph, opset_imports=quantized.opset_import)
    model.ir_version = quantized.ir_version
    return model


# Segment outputs stay in memory up to this many bytes in all; beyond it they go to disk.
# Writing and reading back every output took 0.84 s of 2.8 on the digits GoogLeNet at 256
# images (cProfile). Measured there, bias correction's wall s / peak RSS MB: all on disk
# 2.5-2.6 / 284-286, 24 MiB held 2.7 / 290-293, 48 MiB 1.8-2.1 / 301-304 (at 64 images
# 0.9-1.1 -> 0.8-1.0 s, 269-277 MB either way). Inception v3 needs the disk (8 MB an image).
SPILL_MEMORY_BYTES = 48 << 20


class _Spilled:
    """Per-batch tensors, read back batch by batch, each minus its tensor's correction: the
    outputs later segments read, for every image. Up to SPILL_MEMORY_BYTES of them stay in
    memory as ORT returned them; the rest go to files in a scratch folder (on Inception v3 up
    to 8 MB an image)."""

    def __init__(self, folder, memory_bytes: int = SPILL_MEMORY_BYTES) -> None:
        self.folder, self.where, self.shifts, self.files = folder, {}, {}, 0
        self.memory_bytes, self.held = memory_bytes, 0

    def put(self, name: str, array: np.ndarray) -> None:
        if name not in self.where:
            self.where[name], self.files = (str(self.files), []), self.files + 1
        stem, parts = self.where[name]
        if self.held + array.nbytes <= self.memory_bytes:
            parts.append(array)
            self.held += array.nbytes
            return
        with open(self.folder / f"{stem}.bin", "ab") as handle:
            parts.append((handle.tell(), array.shape, array.dtype))
            array.tofile(handle)

    def get(self, name: str, batch: int) -> np.ndarray:
        stem, parts = self.where[name]
        part = parts[batch]
        shift = self.shifts.get(name)
        if isinstance(part, np.ndarray):  # held: a later segment may read it again, so never in place
            if shift is None:
                return part
            return part - shift.astype(part.dtype, copy=False).reshape((1, -1) + (1,) * (part.ndim - 2))
        offset, shape, dtype = part
        array = np.fromfile(self.folder / f"{stem}.bin", dtype=dtype, count=int(np.prod(shape)), offset=offset)
        array = array.reshape(shape)
        if shift is not None:  # in place: the array is read fresh from disk (shift is float32 as the array)
            np.subtract(array, shift.astype(dtype, copy=False).reshape((1, -1) + (1,) * (array.ndim - 2)), out=array)
        return array

    def drop(self, name: str) -> None:
        stem, parts = self.where.pop(name)
        self.held -= sum(part.nbytes for part in parts if isinstance(part, np.ndarray))
        (self.folder / f"{stem}.bin").unlink(missing_ok=True)
        self.shifts.pop(name, None)


def measure_bias_corrections(float_model, quantized, inputs: np.ndarray, progress: bool = False,
                             batch_size: int = 32, reference: Optional[dict] = None) -> dict[str, np.ndarray]:
    """Layer -> the per-channel amount to subtract from its bias so that, on `inputs`, the
    mean of its output in the corrected Q/DQ graph equals the FP32 graph's. `quantized` is
    left as it is; apply the result with correct_bias. `reference`: the FP32 graph's
    per-channel Conv/Gemm output means on these same images when the caller has them
    (means_through_layers, from the calibration pass); else a pass of the FP32 graph measures them.

    Depth by depth, in one pass over the Q/DQ graph: the graph is cut into one segment per
    depth (_segments) and the images go through segment k once. The outputs later segments
    read are spilled to disk (_Spilled), the corrected layers' outputs read back minus their
    correction, so segment k + 1 sees exactly what the corrected graph gives it. (One
    full-graph ORT pass per depth, as before, cost 85% of quantize: 22 passes on GoogLeNet,
    48 on Inception v3.) ORT runs the segments with its graph optimizations off: the exact
    ONNX Q/DQ semantics TensorRT implements (evaluate.py)."""
    import onnx

    from ..backends.onnxruntime_backend import create_session
    from ..fileio import scratch_dir
    from ..progress import track

    from .collect import calibration_batch_size

    depths = layer_depths(float_model)
    outputs = {n.name: n.output[0] for n in float_model.graph.node if n.name in depths}
    # The reference pass returns every Conv/Gemm output: batches capped like calibration's.
    batch_size = calibration_batch_size(float_model, list(outputs.values()), batch_size)
    if reference is None:
        reference = channel_means(float_model, list(outputs.values()), inputs, batch_size)
    divisors = correctable_layers(quantized, {layer: reference[t].shape[0] for layer, t in outputs.items()})
    segments = _segments(quantized, depths)
    types = {vi.name: vi.type.tensor_type.elem_type
             for vi in onnx.shape_inference.infer_shapes(quantized).graph.value_info}
    input_name = quantized.graph.input[0].name
    starts = range(0, len(inputs), batch_size)
    shifts: dict[str, np.ndarray] = {}
    with scratch_dir("bias") as folder:
        store = _Spilled(folder)
        for start in starts:
            store.put(input_name, inputs[start:start + batch_size])
        for k, nodes, needs, makes in track(segments, "bias correction", len(segments), progress,
                                            about="the Q/DQ graph segment by segment, one per depth level, "
                                                  "each over the calibration images once"):
            if not makes:
                continue
            sess = create_session(_segment_model(quantized, nodes, needs, makes, types), optimization="disable")
            measured = [layer for layer in (n.name for n in nodes) if layer in divisors and depths.get(layer) == k]
            sums = {layer: 0.0 for layer in measured}
            counts = dict.fromkeys(measured, 0)
            for b in range(len(starts)):
                values = dict(zip(makes, sess.run(makes, {name: store.get(name, b) for name in needs})))
                for layer in measured:
                    value = values[outputs[layer]]
                    sums[layer] = sums[layer] + _channel_sums(value)
                    counts[layer] += value.size // value.shape[1]
                for name in makes:
                    store.put(name, values[name])
            for layer in measured:
                shifts[layer] = (sums[layer] / counts[layer] - reference[outputs[layer]]).astype(np.float32)
                store.shifts[outputs[layer]] = shifts[layer]
            later = {name for depth, _, reads, _ in segments if depth > k for name in reads}
            for name in [name for name in store.where if name not in later]:
                store.drop(name)  # read by no later segment
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

    lookup = GraphIndex(model)
    initializers = lookup.initializers
    corrected = []
    for node in model.graph.node:
        shift = shifts.get(node.name)
        if node.op_type not in CORRECTED_OPS or shift is None:
            continue
        if len(node.input) > 2 and node.input[2]:
            source = constant_source(model, node.input[2], lookup)
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
        lookup.add(model.graph.initializer[-1])
        while len(node.input) < 3:
            node.input.append("")
        node.input[2] = name
        corrected.append(node.name)
    drop_unused_initializers(model)
    return corrected
