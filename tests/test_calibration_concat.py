"""Calibration (stage: quantize): Concat statistics derived from their inputs' statistics
must equal measuring the Concat output itself."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from inception_deploy.precision.calibration_set import CalibrationSet
from inception_deploy.precision.calibrators import EntropyCalibrator, MaxCalibrator, MseCalibrator, PercentileCalibrator
from inception_deploy.precision.collect import collect_statistics, derived_concats
from inception_deploy.precision.placement import plan_quantization
from inception_deploy.precision.statistics import TensorStats

CALIBRATORS = (MaxCalibrator(), PercentileCalibrator(99.9), EntropyCalibrator(), MseCalibrator())


def _assert_same(derived: TensorStats, direct: TensorStats, name: str) -> None:
    assert (derived.min, derived.max, derived.count, derived.zeros) == \
        (direct.min, direct.max, direct.count, direct.zeros), name
    assert derived.width == direct.width, name
    assert np.array_equal(derived.hist, direct.hist), name  # bit-equal, not close
    for calibrator in CALIBRATORS:
        assert calibrator.amax(derived) == calibrator.amax(direct), (name, calibrator.method)


def test_concat_stats_derived_from_inputs_equal_measured_ones_on_the_digits_googlenet(digits_opt_onnx, digits_recipe):
    model = onnx.load(str(digits_opt_onnx))
    tensors = list(plan_quantization(model).activations)
    derived = derived_concats(model, tensors)
    assert len(derived) == 9  # every inception block's output

    def collect(derive: bool) -> dict[str, TensorStats]:
        batches = CalibrationSet(digits_recipe, "digits-train", 32).batches(8)
        return collect_statistics(model, tensors, batches, derive_concats=derive)

    direct, merged = collect(False), collect(True)
    assert list(merged) == tensors
    for name in tensors:
        _assert_same(merged[name], direct[name], name)


def test_nested_concats_with_signed_and_all_zero_inputs_merge_exactly():
    """Concat(Concat(Relu(a), b), c): nested, inputs of very different ranges (different
    histogram widths to coarsen), a signed input, and a Relu that is all zeros on some batches."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 2, 3, 5])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    scales = [helper.make_tensor(f"s{i}", TensorProto.FLOAT, [], [v]) for i, v in enumerate((0.01, 37.0, -3.0))]
    nodes = [helper.make_node("Mul", ["x", "s0"], ["m0"]), helper.make_node("Relu", ["m0"], ["a"]),
             helper.make_node("Mul", ["x", "s1"], ["b"]), helper.make_node("Mul", ["x", "s2"], ["m2"]),
             helper.make_node("Sin", ["m2"], ["c"]),
             helper.make_node("Concat", ["a", "b"], ["ab"], axis=1),
             helper.make_node("Concat", ["ab", "c", "a"], ["abca"], axis=1),
             helper.make_node("Identity", ["abca"], ["y"])]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y], scales), opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    tensors = ["a", "b", "c", "ab", "abca"]
    assert list(derived_concats(model, tensors)) == ["ab", "abca"]
    assert derived_concats(model, ["a", "ab", "abca"]) == {}  # "b" not calibrated: measure "ab", then "abca" cannot merge

    rng = np.random.default_rng(0)
    batches = [rng.normal(0, 1, size=(3, 2, 3, 5)).astype(np.float32) for _ in range(4)]
    batches[1] = -np.abs(batches[1])  # Relu(0.01 x) all zeros on this batch
    batches[2] *= 40  # range grows after the first batch: histograms merge pairwise
    direct = collect_statistics(model, tensors, batches, bins=64, derive_concats=False)
    merged = collect_statistics(model, tensors, batches, bins=64)
    assert direct["a"].width != direct["b"].width  # coarsening really happens
    for name in tensors:
        assert merged[name].width == direct[name].width and np.array_equal(merged[name].hist, direct[name].hist)
        assert merged[name].zeros == direct[name].zeros
    _assert_same(merged["abca"], direct["abca"], "abca")


def test_histogram_width_depends_only_on_the_final_range():
    """Power-of-two widths: the same values in any batch order give the same histogram."""
    rng = np.random.default_rng(3)
    batches = [rng.laplace(0, s, size=4000).astype(np.float32) for s in (0.01, 1.0, 30.0, 0.2)]
    forward, backward = TensorStats("f", bins=128), TensorStats("b", bins=128)
    for b in batches:
        forward.update(b)
    for b in reversed(batches):
        backward.update(b)
    assert forward.width == backward.width and np.array_equal(forward.hist, backward.hist)
    assert forward.width * 128 >= forward.absmax > forward.width * 64
    assert np.log2(forward.width) == int(np.log2(forward.width))


def test_non_finite_activations_are_refused_with_the_tensor_name():
    from inception_deploy.errors import UserError

    stats = TensorStats("/conv1/Relu_output_0")
    with pytest.raises(UserError, match="calibration tensor '/conv1/Relu_output_0' has non-finite values"):
        stats.update(np.array([1.0, np.inf], dtype=np.float32))


def test_ranges_outside_float32_scaling_use_the_exact_float64_path():
    """|x| max ~1e-37: 1/width does not fit in float32, so the bins are counted in float64
    (same for more than 65535 bins); counts are still exactly ceil(|x| / width)."""
    rng = np.random.default_rng(4)
    for scale, bins in ((2.0 ** -125, 256), (1.0, 70_000)):
        values = (rng.laplace(0, 1.0, size=3000) * scale).astype(np.float32)
        values[:7] = 0.0
        stats = TensorStats("t", bins=bins)
        stats.update(values)
        if bins == 256:
            assert 1.0 / stats.width > 2.0 ** 127  # really the fallback
        expected = np.bincount(np.ceil(np.abs(values.astype(np.float64)) / stats.width).astype(np.int64),
                               minlength=bins + 1)
        assert stats.zeros == expected[0] == 7 and np.array_equal(stats.hist, expected[1:])
