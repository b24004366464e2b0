"""Property test of fold-batchnorm (stage: optimize): random Conv -> BN graphs are equal before/after.

Hypothesis draws the conv's channels, groups (depthwise included), bias or not, kernel,
stride, asymmetric padding, dilation, and the BN's epsilon and statistics (negative
gamma, tiny variances); each graph is run before and after the fold on ONNX Runtime CPU
with its own optimizations off, so the original BN is evaluated as written.
"""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings, strategies as st
from onnx import helper

from passes_helpers import apply, assert_close, make_model, ops, run, tensor


@st.composite
def conv_bn_graphs(draw):
    groups = draw(st.integers(1, 4))
    depthwise = draw(st.booleans())
    in_per_group = 1 if depthwise else draw(st.integers(1, 3))
    out_per_group = draw(st.integers(1, 3))
    cin, cout = groups * in_per_group, groups * out_per_group
    kernel = [draw(st.integers(1, 3)), draw(st.integers(1, 3))]
    stride = [draw(st.integers(1, 3)), draw(st.integers(1, 2))]
    dilation = [draw(st.integers(1, 2)), draw(st.integers(1, 2))]
    pads = [draw(st.integers(0, 2)) for _ in range(4)]
    size = draw(st.integers(6, 9))
    bias = draw(st.booleans())
    epsilon = draw(st.sampled_from([1e-6, 1e-5, 1e-3, 0.1]))
    seed = draw(st.integers(0, 2**31 - 1))
    return dict(groups=groups, cin=cin, cout=cout, kernel=kernel, stride=stride, dilation=dilation, pads=pads,
                size=size, bias=bias, epsilon=epsilon, seed=seed)


def build(p):
    rng = np.random.default_rng(p["seed"])
    init = {"W": rng.standard_normal((p["cout"], p["cin"] // p["groups"], *p["kernel"])).astype(np.float32),
            "gamma": rng.uniform(-2, 2, p["cout"]).astype(np.float32),
            "beta": rng.standard_normal(p["cout"]).astype(np.float32),
            "mean": rng.standard_normal(p["cout"]).astype(np.float32),
            "var": rng.uniform(1e-4, 3, p["cout"]).astype(np.float32)}
    conv_inputs = ["x", "W"]
    if p["bias"]:
        init["B"] = rng.standard_normal(p["cout"]).astype(np.float32)
        conv_inputs.append("B")
    nodes = [
        helper.make_node("Conv", conv_inputs, ["c"], name="/layer/conv/Conv", group=p["groups"], kernel_shape=p["kernel"],
                         strides=p["stride"], dilations=p["dilation"], pads=p["pads"]),
        helper.make_node("BatchNormalization", ["c", "gamma", "beta", "mean", "var"], ["y"], name="/layer/bn/BatchNormalization",
                         epsilon=p["epsilon"]),
    ]
    model = make_model(nodes, [tensor("x", [2, p["cin"], p["size"], p["size"]])], [tensor("y", None)], init)
    x = rng.standard_normal((2, p["cin"], p["size"], p["size"])).astype(np.float32)
    return model, x


@settings(max_examples=220, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(conv_bn_graphs())
def test_fold_batchnorm_random_conv_bn_graphs(p):
    model, x = build(p)
    (before,) = run(model, {"x": x})
    folded, records = apply(model, ["fold-batchnorm"])
    assert ops(folded) == ["Conv"], records[0].notes
    conv = folded.graph.node[0]
    assert conv.name == "/layer/conv/Conv" and conv.output[0] == "y"  # names kept
    (after,) = run(folded, {"x": x})
    assert_close(before, after)
