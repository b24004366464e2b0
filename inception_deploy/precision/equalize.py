"""Activation equalization before INT8 (stage: quantize).

TensorRT quantizes activations per tensor, and an Inception module's Concat makes its four
branches share one scale: a channel whose values span a tenth of the tensor's range gets a
tenth of the int8 levels, so rounding noise is ten times larger relative to it. Relu,
MaxPool, Concat, average pooling and Flatten commute with a positive per-channel scale, so
scaling output channel i of a Conv (weights and bias) by s_i and dividing the weights that
read channel i downstream (every Conv/Gemm the tensor reaches through those ops) by s_i
leaves the FP32 function unchanged while the channel fills more of the shared int8 range.

    s_i = clip((R / r_i) ** strength, 1, max_scale)

with r_i the channel's observed |x| max and R the range of the quantized tensors it flows
through (their int8 scale groups' max, the tightest along the way, so no tensor's range
grows). strength 1 would fill the range completely but moves the same factor onto the
downstream weights' rounding; 0.5 balances the two (the geometric mean, as in Nagel et al.'s
cross-layer equalization). Measured on the digits GoogLeNet (calibration/README.md).

Written here because no ONNX tool does this for Q/DQ graphs: onnxruntime's quantizer has no
equalization, and Model Optimizer's SmoothQuant targets MatMul activations, not Conv chains
through Concat.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional

import numpy as np

from ..graph_utils import GraphIndex, attribute, constant_source, consumers, inferred_dims

# Ops between a Relu and the next Conv/Gemm that commute with a positive per-channel scale.
PASS_THROUGH = {"Relu", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "Flatten", "Concat"}


@dataclass
class ScalableChannels:
    """A Conv -> Relu whose output channels may be rescaled: `reader_weights` are the
    downstream (node, channel offset) pairs whose weights read those channels."""

    conv: str
    relu_output: str
    channels: int
    tensors: list[str] = field(default_factory=list)  # every tensor the channels flow through
    readers: list[tuple[str, int]] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)  # where the channels sit in each of `tensors`


def find_scalable(model) -> list[ScalableChannels]:
    """Every Conv -> Relu pair whose channels reach only Conv/Gemm weights (group 1, constant
    weights) through PASS_THROUGH ops and never a graph output."""
    graph = model.graph
    readers_of = consumers(model)
    outputs = {o.name for o in graph.output}
    shapes = inferred_dims(model)
    channels = {name: dims[1] for name, dims in shapes.items() if len(dims) >= 2 and dims[1] > 0}
    lookup = GraphIndex(model)
    found = []
    for node in graph.node:
        if node.op_type != "Conv" or constant_source(model, node.input[1], lookup) is None:
            continue
        after = readers_of.get(node.output[0], [])
        if len(after) != 1 or after[0][0].op_type != "Relu" or node.output[0] in outputs:
            continue
        relu = after[0][0]
        item = ScalableChannels(node.name, relu.output[0], channels.get(node.output[0], 0))
        if item.channels <= 0:
            continue
        ok, stack = True, [(relu.output[0], 0)]
        while stack and ok:
            tensor, offset = stack.pop()
            item.tensors.append(tensor)
            item.offsets.append(offset)
            ok = tensor not in outputs
            for reader, index in readers_of.get(tensor, []):
                if reader.op_type in ("Conv", "Gemm"):
                    ok = ok and index == 0 and constant_source(model, reader.input[1], lookup) is not None
                    ok = ok and attribute(reader, "group", 1) == 1 and not attribute(reader, "transA", 0)
                    item.readers.append((reader.name, offset))
                elif reader.op_type == "Concat" and attribute(reader, "axis", 1) == 1:
                    before = sum(channels.get(i, -10**9) for i in reader.input[:index])
                    ok = ok and before >= 0
                    stack.append((reader.output[0], offset + before))
                elif reader.op_type == "Flatten":
                    # Channel c stays feature c only when each channel is one value (after a
                    # global pool); otherwise it spreads over H*W features.
                    dims = shapes.get(tensor, [])
                    ok = ok and len(dims) >= 2 and all(d == 1 for d in dims[2:])
                    stack.append((reader.output[0], offset))
                elif reader.op_type in PASS_THROUGH and reader.op_type != "Concat":
                    stack.append((reader.output[0], offset))
                else:
                    ok = False
        if ok and item.readers:
            found.append(item)
    return found


def _channel_absmax(value: np.ndarray) -> np.ndarray:
    """max |x| per channel (axis 1), without a full-size |x| copy. Over the images first (an
    elementwise max of contiguous rows), then over each channel's positions: reducing the
    positions first was 3-20x slower on the small maps of deep layers (32 x 1024 x 2 x 2:
    5.9 ms against 0.3), and the whole pass's fold took 1.8 s on the digits GoogLeNet."""
    high, low = value.max(axis=0), value.min(axis=0)
    channels = value.shape[1]
    return np.maximum(high.reshape(channels, -1).max(axis=1), -low.reshape(channels, -1).min(axis=1))


def channel_absmax(model, tensors: list[str], batches: Iterable[np.ndarray], session=None,
                   record: Optional[tuple[list[str], Callable[[int, dict], None]]] = None) -> dict[str, np.ndarray]:
    """Per-channel max |x| of each tensor over the images (one streamed ORT pass: memory does
    not grow with the number of images). As in collect.collect_statistics, ORT runs batch
    k + 1 in a worker thread (non-spinning threads, one per core) while this thread reduces
    batch k. `session`: a session of `model` that already returns `tensors` (else one is made).
    `record`: (names, keep): the session returns these too, and keep(k, {name: array}) gets
    them for the k-th batch (int8.equalize records what calibration would run again)."""
    from concurrent.futures import ThreadPoolExecutor

    from ..backends.onnxruntime_backend import create_session
    from ..cpu import cores

    kept, keep = record if record is not None else ([], None)
    fetched = list(dict.fromkeys(list(tensors) + list(kept)))
    sess = session or create_session(model, threads=cores(), spinning=False, extra_outputs=fetched)
    input_name = sess.get_inputs()[0].name
    result: dict[str, np.ndarray] = {}

    def fold(number: int, outputs) -> None:
        values = dict(zip(fetched, outputs))
        for name in tensors:
            part = _channel_absmax(values[name])
            result[name] = part if name not in result else np.maximum(result[name], part)
        if keep is not None:
            keep(number, {name: values[name] for name in kept})

    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = None
        for number, batch in enumerate(batches):
            running = pool.submit(sess.run, fetched, {input_name: batch})
            if pending is not None:
                fold(number - 1, pending.result())
            pending = running
        if pending is not None:
            fold(number, pending.result())
    return result


def measured_tensors(model, scalable: Optional[list[ScalableChannels]] = None) -> list[str]:
    """The tensors equalization_scales reads the channel ranges of (`scalable`: find_scalable's, when at hand)."""
    return sorted({t for item in (find_scalable(model) if scalable is None else scalable) for t in item.tensors})


def equalization_scales(model, batches: Iterable[np.ndarray], strength: float = 0.5, max_scale: float = 16.0,
                        session=None, record=None) -> dict[str, np.ndarray]:
    """Conv name -> per-output-channel scale s_i >= 1, from the channel ranges on `batches`.
    `session`: a session of `model` returning at least measured_tensors(model); `record`: as
    channel_absmax's."""
    from .placement import plan_quantization

    scalable = find_scalable(model)
    tensors = measured_tensors(model, scalable)
    ranges = channel_absmax(model, tensors, batches, session, record)
    plan = plan_quantization(model)
    group_range: dict[str, float] = {}
    for tensor in tensors:
        root = plan.groups.get(tensor, tensor)
        group_range[root] = max(group_range.get(root, 0.0), float(ranges[tensor].max()))
    scales = {}
    for item in scalable:
        limit = min(group_range[plan.groups.get(t, t)] for t in item.tensors)
        own = np.maximum(ranges[item.relu_output].astype(np.float64), 1e-12)
        scale = np.clip((limit / own) ** strength, 1.0, max_scale)
        scale[ranges[item.relu_output] == 0] = 1.0  # a dead channel: nothing to gain
        scales[item.conv] = scale.astype(np.float32)
    return scales


def tensor_scales(model, scales: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Tensor -> the per-channel factor by which the equalized graph's tensor is the input
    graph's (Relu, pools, Concat and Flatten carry the scaled Conv channels through; 1 on the
    channels of unscaled branches), for every tensor the scaled channels reach. So one pass of
    the input graph yields the equalized graph's statistics, up to float rounding."""
    shapes = inferred_dims(model)
    found: dict[str, np.ndarray] = {}
    for item in find_scalable(model):
        scale = scales.get(item.conv)
        if scale is None:
            continue
        for tensor, offset in zip(item.tensors, item.offsets):
            dims = shapes.get(tensor, [])
            channels = dims[1] if len(dims) >= 2 and dims[1] > 0 else offset + len(scale)
            factors = found.setdefault(tensor, np.ones(channels, dtype=np.float32))
            factors[offset:offset + len(scale)] = scale
    return found


def apply_equalization(model, scales: dict[str, np.ndarray]):
    """A copy of `model` with each listed Conv's output channels scaled by s and the weights
    reading them divided by s: the same FP32 function. Initializers shared by several nodes
    are copied before they are changed. The copy is made without the weights and gets each
    one once, new or as it was (graph_utils.copy_without_initializers says why)."""
    from onnx import numpy_helper

    from ..graph_utils import copy_without_initializers

    out = copy_without_initializers(model)
    nodes = {n.name: n for n in out.graph.node}
    items = {item.conv: item for item in find_scalable(model)}
    users: dict[str, int] = {}
    for node in out.graph.node:
        for name in node.input:
            users[name] = users.get(name, 0) + 1
    lookup = GraphIndex(model)  # the input's weights and producers (the copy's nodes write the same tensors)
    initializers = lookup.initializers
    arrays: dict[str, np.ndarray] = {}  # initializer -> its new values (private copies included)

    def owned(node, index: int) -> str:
        """The initializer behind node.input[index], made private to this node when shared."""
        current = node.input[index]
        if current in arrays:  # already this node's own (or made private for it)
            return current
        source = constant_source(model, current, lookup)
        name = source if current == source and users.get(source, 0) <= 1 else \
            f"{node.name.replace('/', '_').strip('_')}_equalized_{index}"
        node.input[index] = name
        arrays[name] = numpy_helper.to_array(initializers[source]).astype(np.float32)  # a new array
        return name

    for conv_name, scale in scales.items():
        item = items.get(conv_name)
        if item is None or len(scale) != item.channels:
            raise ValueError(f"equalization scales for '{conv_name}' do not fit this graph")
        conv = nodes[conv_name]
        weight = owned(conv, 1)
        arrays[weight] *= scale.reshape(-1, *([1] * (arrays[weight].ndim - 1)))
        if len(conv.input) > 2 and conv.input[2]:
            bias = owned(conv, 2)
            arrays[bias] *= scale
        for reader_name, offset in item.readers:
            reader = nodes[reader_name]
            weight = owned(reader, 1)
            window = slice(offset, offset + len(scale))
            if reader.op_type == "Conv":
                arrays[weight][:, window] /= scale.reshape(1, -1, *([1] * (arrays[weight].ndim - 2)))
            elif attribute(reader, "transB", 0):
                arrays[weight][:, window] /= scale.reshape(1, -1)
            else:
                arrays[weight][window] /= scale.reshape(-1, 1)
    read = {name for node in out.graph.node for name in node.input}
    for init in model.graph.initializer:  # in the input's order, then the private copies
        if init.name in arrays:
            out.graph.initializer.append(numpy_helper.from_array(arrays.pop(init.name), init.name))
        elif init.name in read:
            out.graph.initializer.append(init)
    for name, array in arrays.items():
        out.graph.initializer.append(numpy_helper.from_array(array, name))
    return out
