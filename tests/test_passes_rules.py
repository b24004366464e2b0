"""Each pass on small hand-built graphs (stage: optimize): what it rewrites, what it keeps and why.

Every rewrite is run on ONNX Runtime before and after; kept patterns must say why.
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from inception_deploy.errors import UserError
from inception_deploy.passes import PassContext, REGISTRY, optimize_onnx
from passes_helpers import apply, assert_close, make_model, ops, run, tensor

RNG = np.random.default_rng(0)


def _bn_params(c, prefix="bn"):
    return {f"{prefix}.g": RNG.uniform(0.5, 2, c).astype(np.float32), f"{prefix}.b": RNG.standard_normal(c).astype(np.float32),
            f"{prefix}.m": RNG.standard_normal(c).astype(np.float32), f"{prefix}.v": RNG.uniform(0.1, 2, c).astype(np.float32)}


def _bn(x, y, prefix="bn", **attrs):
    return helper.make_node("BatchNormalization", [x, f"{prefix}.g", f"{prefix}.b", f"{prefix}.m", f"{prefix}.v"], [y],
                            name=f"/{prefix}/BatchNormalization", **attrs)


def _check(model, names, feed, expect_ops):
    before = run(model, feed)
    optimized, records = apply(model, names)
    assert ops(optimized) == expect_ops, records[-1].notes
    for ref, out in zip(before, run(optimized, feed)):
        assert_close(ref, out)
    return optimized, records


def test_registry_names_and_docstrings():
    assert set(REGISTRY) >= {"eliminate-dropout-identity", "fold-batchnorm", "fold-constants", "fuse-pad",
                             "flatten-concat", "strip-aux-heads"}
    assert all(cls.description() for cls in REGISTRY.values())


def test_bn_after_gemm_transb_and_beta():
    init = {"W": RNG.standard_normal((6, 5)).astype(np.float32), "C": RNG.standard_normal(6).astype(np.float32), **_bn_params(6)}
    nodes = [helper.make_node("Gemm", ["x", "W", "C"], ["g"], name="/fc/Gemm", transB=1, beta=0.5), _bn("g", "y")]
    model = make_model(nodes, [tensor("x", [3, 5])], [tensor("y", [3, 6])], init)
    _check(model, ["fold-batchnorm"], {"x": RNG.standard_normal((3, 5)).astype(np.float32)}, ["Gemm"])


def test_bn_after_matmul_becomes_scaled_weights_and_add():
    init = {"W": RNG.standard_normal((5, 6)).astype(np.float32), **_bn_params(6)}
    nodes = [helper.make_node("MatMul", ["x", "W"], ["mm"], name="/fc/MatMul"), _bn("mm", "y")]
    model = make_model(nodes, [tensor("x", [3, 5])], [tensor("y", [3, 6])], init)
    _check(model, ["fold-batchnorm"], {"x": RNG.standard_normal((3, 5)).astype(np.float32)}, ["MatMul", "Add"])


def test_bn_without_producer_becomes_mul_add():
    model = make_model([_bn("x", "y")], [tensor("x", [2, 4, 3, 3])], [tensor("y", [2, 4, 3, 3])], _bn_params(4))
    _check(model, ["fold-batchnorm"], {"x": RNG.standard_normal((2, 4, 3, 3)).astype(np.float32)}, ["Mul", "Add"])


def test_bn_after_conv_whose_output_is_also_read_elsewhere_is_not_folded_into_it():
    init = {"W": RNG.standard_normal((4, 2, 3, 3)).astype(np.float32), **_bn_params(4)}
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], name="/conv/Conv"), _bn("c", "y"),
             helper.make_node("Relu", ["c"], ["r"], name="/relu")]
    model = make_model(nodes, [tensor("x", [1, 2, 5, 5])], [tensor("y", None), tensor("r", None)], init)
    _check(model, ["fold-batchnorm"], {"x": RNG.standard_normal((1, 2, 5, 5)).astype(np.float32)}, ["Conv", "Mul", "Add", "Relu"])


def test_training_mode_bn_is_kept_with_reason():
    model = make_model([_bn("x", "y", training_mode=1)], [tensor("x", [2, 4, 3, 3])], [tensor("y", None)], _bn_params(4))
    optimized, records = apply(model, ["fold-batchnorm"])
    assert ops(optimized) == ["BatchNormalization"]
    assert records[0].notes == ["kept BatchNormalization '/bn/BatchNormalization': training_mode=1 (it normalizes by "
                                "batch statistics); export the model in eval mode"]


def test_shared_conv_weight_is_copied_not_rewritten():
    init = {"W": RNG.standard_normal((4, 4, 1, 1)).astype(np.float32), **_bn_params(4)}
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], name="/a/Conv"), _bn("c", "y"),
             helper.make_node("Conv", ["x", "W"], ["z"], name="/b/Conv")]
    model = make_model(nodes, [tensor("x", [1, 4, 3, 3])], [tensor("y", None), tensor("z", None)], init)
    _check(model, ["fold-batchnorm"], {"x": RNG.standard_normal((1, 4, 3, 3)).astype(np.float32)}, ["Conv", "Conv"])


def test_dropout_training_mode_true_is_kept_and_identity_output_keeps_name():
    init = {"r": np.asarray(0.5, np.float32), "t": np.asarray(True), "f": np.asarray(False)}
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="/relu"),
             helper.make_node("Dropout", ["a", "r", "f"], ["b"], name="/drop_eval/Dropout"),
             helper.make_node("Identity", ["b"], ["y"], name="/id"),
             helper.make_node("Dropout", ["x", "r", "t"], ["z"], name="/drop_train/Dropout")]
    model = make_model(nodes, [tensor("x", [2, 3])], [tensor("y", [2, 3]), tensor("z", [2, 3])], init)
    optimized, records = apply(model, ["eliminate-dropout-identity"])
    assert ops(optimized) == ["Relu", "Dropout"]
    assert [o.name for o in optimized.graph.output] == ["y", "z"] and optimized.graph.node[0].output[0] == "y"
    assert records[0].notes == ["kept Dropout '/drop_train/Dropout': training_mode is True (the output is random); "
                                "export the model in eval mode"]


@pytest.mark.parametrize("op, value, attrs, fused", [
    ("Conv", 0.0, {}, True),
    ("MaxPool", -np.inf, {"kernel_shape": [3, 3]}, True),
    ("MaxPool", 0.0, {"kernel_shape": [3, 3]}, False),
    ("AveragePool", 0.0, {"kernel_shape": [3, 3]}, True),
    ("AveragePool", 0.0, {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}, False),
    ("Conv", 1.0, {}, False),
])
def test_fuse_pad(op, value, attrs, fused):
    init = {"pads": np.asarray([0, 0, 1, 2, 0, 0, 2, 1], np.int64), "value": np.asarray(value, np.float32)}
    inputs = ["p"]
    if op == "Conv":
        init["W"] = RNG.standard_normal((3, 2, 3, 3)).astype(np.float32)
        inputs.append("W")
    nodes = [helper.make_node("Pad", ["x", "pads", "value"], ["p"], name="/pad/Pad"),
             helper.make_node(op, inputs, ["y"], name=f"/{op}", **attrs)]
    model = make_model(nodes, [tensor("x", [1, 2, 6, 7])], [tensor("y", None)], init)
    optimized, records = _check(model, ["fuse-pad"], {"x": RNG.standard_normal((1, 2, 6, 7)).astype(np.float32)},
                                [op] if fused else ["Pad", op])
    assert bool(records[0].notes) != fused


def test_reflect_pad_is_kept():
    init = {"pads": np.asarray([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "W": RNG.standard_normal((3, 2, 3, 3)).astype(np.float32)}
    nodes = [helper.make_node("Pad", ["x", "pads"], ["p"], name="/pad/Pad", mode="reflect"),
             helper.make_node("Conv", ["p", "W"], ["y"], name="/conv/Conv")]
    model = make_model(nodes, [tensor("x", [1, 2, 6, 6])], [tensor("y", None)], init)
    _, records = _check(model, ["fuse-pad"], {"x": RNG.standard_normal((1, 2, 6, 6)).astype(np.float32)}, ["Pad", "Conv"])
    assert records[0].notes == ["kept Pad '/pad/Pad' before Conv '/conv/Conv': mode 'reflect' has no pads equivalent"]


def test_flatten_concat_merges_nested_same_axis_only():
    nodes = [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Neg", ["x"], ["b"]),
             helper.make_node("Concat", ["a", "b"], ["ab"], axis=1, name="/inner/Concat"),
             helper.make_node("Concat", ["x", "ab", "x"], ["y"], axis=-1, name="/outer/Concat"),
             helper.make_node("Concat", ["a", "b"], ["c0"], axis=0, name="/axis0a/Concat"),
             helper.make_node("Concat", ["b", "a"], ["c1"], axis=0, name="/axis0b/Concat"),
             helper.make_node("Concat", ["c0", "c1"], ["z"], axis=1, name="/outer_axis1/Concat")]
    model = make_model(nodes, [tensor("x", [2, 3])], [tensor("y", None), tensor("z", None)], {})
    optimized, _ = _check(model, ["flatten-concat"], {"x": RNG.standard_normal((2, 3)).astype(np.float32)},
                          ["Relu", "Neg", "Concat", "Concat", "Concat", "Concat"])
    outer = next(n for n in optimized.graph.node if n.name == "/outer/Concat")
    assert list(outer.input) == ["x", "a", "b", "x"]


def test_fold_constants_folds_weight_transpose_into_one_initializer():
    init = {"Wt": RNG.standard_normal((6, 5)).astype(np.float32)}
    nodes = [helper.make_node("Transpose", ["Wt"], ["W"], perm=[1, 0]),
             helper.make_node("MatMul", ["x", "W"], ["y"], name="/fc/MatMul")]
    model = make_model(nodes, [tensor("x", [3, 5])], [tensor("y", None)], init)
    optimized, _ = _check(model, ["fold-constants"], {"x": RNG.standard_normal((3, 5)).astype(np.float32)}, ["MatMul"])
    assert optimized.graph.node[0].name == "/fc/MatMul"


def test_keep_output_unknown_in_pass_context_is_a_user_error():
    model = make_model([helper.make_node("Relu", ["x"], ["y"])], [tensor("x", [1, 2])], [tensor("y", None)], {})
    with pytest.raises(UserError, match="^--keep-output: the graph has no output 'nope'; its outputs: y$"):
        apply(model, ["strip-aux-heads"], PassContext(keep_outputs=["nope"]))


def test_foreign_graph_checked_on_random_inputs(tmp_path):
    """A non-image graph from elsewhere: no recipe, random inputs, still written with a manifest."""
    import onnx

    path = tmp_path / "m.onnx"
    onnx.save(make_model([_bn("x", "y")], [tensor("x", [2, 4, 3, 3])], [tensor("y", None)], _bn_params(4)), path)
    result = optimize_onnx(path)
    assert result.path == tmp_path / "m.opt.onnx" and result.counts_after == {"Add": 1, "Mul": 1}
    assert result.check_inputs == "random normal inputs (x)"
    assert result.comparisons["y"].relative_error <= 1e-6
