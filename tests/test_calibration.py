"""Streaming statistics, calibrators, calibration caches and calibration data handling."""

from __future__ import annotations

import json
import struct

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import numpy_helper

from inception_deploy.cli import main
from inception_deploy.errors import UserError
from inception_deploy.precision import quantize_onnx
from inception_deploy.precision.cache import BUNDLED_DIR, graph_sha256, read_cache, tensorrt_cache_text
from inception_deploy.precision.calibrators import EntropyCalibrator, MaxCalibrator, MseCalibrator, PercentileCalibrator
from inception_deploy.precision.calibrators.entropy import _divergence_from_groups
from inception_deploy.precision.statistics import TensorStats


def test_histogram_merges_batches_exactly_and_keeps_a_fixed_size():
    rng = np.random.default_rng(0)
    stats = TensorStats("t", bins=256)
    batches = [rng.normal(0, s, size=5000).astype(np.float32) for s in (0.1, 1.0, 4.0, 0.5)]
    batches[0][:100] = 0.0
    for b in batches:
        stats.update(b)
        assert stats.hist.shape == (256,)
    everything = np.concatenate(batches)
    assert stats.zeros == 100 and stats.hist.sum() == everything.size - 100
    assert stats.absmax == pytest.approx(np.abs(everything).max())
    edges = np.arange(257) * stats.width
    expected, _ = np.histogram(np.abs(everything[everything != 0]), bins=edges)
    assert np.abs(expected - stats.hist).sum() <= 4  # float rounding at bin edges only


def test_calibrators_on_known_distributions():
    rng = np.random.default_rng(1)
    stats = TensorStats("t", bins=4096)
    values = rng.uniform(-1, 1, size=200_000).astype(np.float32)
    values[:5] = 50.0  # a few far outliers
    stats.update(values)
    assert MaxCalibrator().amax(stats) == pytest.approx(50.0)
    assert PercentileCalibrator(99.0).amax(stats) == pytest.approx(0.99, abs=0.02)
    laplace = TensorStats("l", bins=4096)
    laplace.update(rng.laplace(0, 1, size=200_000).astype(np.float32))
    assert 3.0 < EntropyCalibrator().amax(laplace) < 0.8 * laplace.absmax  # clips the long tail, not the bulk
    gaussian = TensorStats("g", bins=4096)
    for _ in range(4):
        gaussian.update(rng.normal(0, 1, size=100_000).astype(np.float32))
    mse = MseCalibrator().amax(gaussian)
    assert 2.5 < mse < 0.95 * gaussian.absmax  # MSE-optimal int8 clipping of a Gaussian: a few sigma
    # The tolerance takes the largest threshold within 2% of the least error, never a smaller one.
    strict = MseCalibrator(tolerance=0.0).amax(gaussian)
    assert 2.5 < strict <= mse
    # 400k Gaussian samples: the KL curve is flat (within 1e-4) from ~4.2 sigma to the sample max, so
    # any threshold there is TensorRT's answer; what matters is that the bulk is never clipped.
    assert 4.0 < EntropyCalibrator().amax(gaussian) <= gaussian.absmax


def test_cache_reused_without_data_and_refused_for_another_model(digits_onnx, tmp_path):
    cache = tmp_path / "digits.calib.json"
    first = quantize_onnx(digits_onnx, tmp_path / "a.int8.onnx", calib_data="digits-train", calib_count=48,
                          calib_method="max", calib_cache=cache, progress=False)
    stored = read_cache(cache)
    assert first.calibration == "max on 48 images of digits-train"
    assert stored["data"]["images"] == 48 and stored["model_sha256"] == graph_sha256(onnx.load(str(digits_onnx)))
    assert stored["preprocessing"]["size"] == [64, 64]
    reused = quantize_onnx(digits_onnx, tmp_path / "b.int8.onnx", calib_cache=cache, progress=False)
    assert reused.calibration == f"reused {cache}"
    assert onnx.load(str(tmp_path / "b.int8.onnx")).graph == onnx.load(str(tmp_path / "a.int8.onnx")).graph

    other = onnx.load(str(digits_onnx))
    weight = other.graph.initializer[0]
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * 1.01, weight.name))
    other_path = tmp_path / "other.onnx"
    onnx.save(other, str(other_path))
    result = CliRunner().invoke(main, ["quantize", str(other_path), "--calib-cache", str(cache),
                                       "-o", str(tmp_path / "c.int8.onnx")])
    assert result.exit_code == 2
    assert f"error: {cache}: cannot reuse this calibration cache: it was made for another graph" in result.output
    assert not (tmp_path / "c.int8.onnx").exists()

    stored["preprocessing"]["mean"] = [0.1, 0.2, 0.3]
    cache.write_text(json.dumps(stored))
    with pytest.raises(UserError, match=r"it was made with preprocessing.mean=\[0.1, 0.2, 0.3\], the recipe says "
                                        r"\[0.5, 0.5, 0.5\]"):
        quantize_onnx(digits_onnx, tmp_path / "d.int8.onnx", calib_cache=cache, progress=False)


def test_tensorrt_cache_text_holds_scales_as_big_endian_hex(tmp_path, digits_onnx):
    cache = read_cache(BUNDLED_DIR / "googlenet-digits.calib.json")
    lines = tensorrt_cache_text(cache).splitlines()
    assert lines[0] == "TRT-100000-EntropyCalibration2"
    name, hexed = lines[1].rsplit(": ", 1)
    assert struct.unpack(">f", bytes.fromhex(hexed))[0] == pytest.approx(cache["tensors"][name]["amax"] / 127, rel=1e-6)
    assert len(lines) == 1 + len(cache["tensors"])


def test_committed_digits_cache_matches_the_bundled_model(digits_opt_onnx):
    """Made for the optimized graph, the one `run` quantizes."""
    cache = read_cache(BUNDLED_DIR / "googlenet-digits.calib.json")
    assert cache["model_sha256"] == graph_sha256(onnx.load(str(digits_opt_onnx)))
    assert cache["method"] == "entropy" and cache["data"]["source"] == "digits-train" and cache["data"]["images"] == 256


def test_committed_cache_for_another_graph_means_recalibration(digits_onnx, tmp_path):
    model = onnx.load(str(digits_onnx))
    model.graph.initializer[0].CopyFrom(numpy_helper.from_array(
        numpy_helper.to_array(model.graph.initializer[0]) * 0.99, model.graph.initializer[0].name))
    path = tmp_path / "changed.onnx"
    onnx.save(model, str(path))
    result = quantize_onnx(path, calib_count=32, progress=False)
    assert result.path == tmp_path / "changed.int8.onnx" and result.cache_path == tmp_path / "changed.calib.json"
    assert result.notes and result.notes[0].startswith("recalibrating: the calibration cache")
    assert "made for another graph" in result.notes[0]
    assert result.calibration == "entropy on 32 images of digits-train"


def test_a_cache_made_with_equalization_is_not_used_without_it(digits_opt_onnx, tmp_path):
    """Its amax were measured on the equalized graph: with equalization off they do not
    apply, so the committed cache is passed over (said so) and a user's cache is refused."""
    result = quantize_onnx(digits_opt_onnx, tmp_path / "plain.int8.onnx", equalize=False, bias_correction=False,
                           progress=False)
    assert result.notes[0].startswith("recalibrating: the calibration cache")
    assert result.notes[0].endswith("does not match: it was made for an equalized graph, and equalization is off")
    assert result.equalized == 0 and "equalization" not in read_cache(result.cache_path)
    with pytest.raises(UserError, match="cannot reuse this calibration cache: it was made without equalization, "
                                        "which is on; recalibrate with --calib-data"):
        quantize_onnx(digits_opt_onnx, tmp_path / "again.int8.onnx", calib_cache=result.cache_path, progress=False)


def _write_images(folder, good: int, bad: int):
    from PIL import Image

    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        (folder / label).mkdir(parents=True)
        for i in range(good):
            array = rng.integers(0, 255, size=(20, 20, 4), dtype=np.uint8)  # RGBA: converted
            Image.fromarray(array).save(folder / label / f"{i}.png")
        for i in range(bad):
            (folder / label / f"broken{i}.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")


def test_unreadable_calibration_images_are_skipped_or_refused(digits_onnx, tmp_path):
    folder = tmp_path / "imgs"
    _write_images(folder, good=6, bad=1)
    result = quantize_onnx(digits_onnx, tmp_path / "ok.int8.onnx", calib_data=folder, calib_count=12,
                           calib_method="max", allow_fewer=True, progress=False)
    cache = read_cache(result.cache_path)
    assert cache["data"]["images"] + cache["data"]["skipped"] == 12 and cache["data"]["images"] >= 10

    refused = CliRunner().invoke(main, ["quantize", str(digits_onnx), "--calib-data", str(folder), "--calib-count",
                                        "14", "--calib-method", "max", "-o", str(tmp_path / "no.int8.onnx")])
    assert refused.exit_code == 2
    assert "only 12 of the 14 calibration images were readable (2 skipped" in refused.output
    assert not (tmp_path / "no.int8.onnx").exists()

    empty = tmp_path / "broken"
    _write_images(empty, good=0, bad=2)
    nothing = CliRunner().invoke(main, ["quantize", str(digits_onnx), "--calib-data", str(empty), "--calib-count",
                                        "4", "--calib-method", "max", "-o", str(tmp_path / "none.int8.onnx")])
    assert nothing.exit_code == 2
    assert "no usable calibration images (4 unreadable)" in nothing.output


def test_vectorized_entropy_search_equals_the_candidate_loop():
    """The KL search runs over all candidate thresholds at once; check it against the plain
    per-candidate loop (TensorRT's algorithm, as written in NVIDIA's pytorch-quantization)."""
    rng = np.random.default_rng(2)
    stats = TensorStats("t", bins=600)
    stats.update(np.abs(rng.standard_t(3, size=50_000)).astype(np.float32))
    calibrator = EntropyCalibrator()
    hist = stats.used_histogram()[0].astype(np.float64)
    ends = np.arange(calibrator.start_bin, hist.size + 1)
    expected = []
    for i in ends:
        p = hist[:i].copy()
        p[-1] += hist[i:].sum()
        group = (np.arange(i) * calibrator.levels) // i
        sums = np.bincount(group, weights=hist[:i], minlength=calibrator.levels)
        members = np.bincount(group, weights=hist[:i] > 0, minlength=calibrator.levels)
        q = np.where(hist[:i] > 0, sums[group] / np.maximum(members[group], 1), 0.0)
        p, q = p / p.sum(), q / q.sum()
        mask = p > 0
        expected.append(np.inf if np.any(q[mask] == 0) else float(np.sum(p[mask] * np.log(p[mask] / q[mask]))))
    got = calibrator._divergences(stats.used_histogram()[0], ends)
    assert np.array_equal(np.isinf(got), np.isinf(expected))
    finite = np.isfinite(expected)
    assert np.allclose(got[finite], np.array(expected)[finite], rtol=1e-6, atol=1e-9)
    assert calibrator.amax(stats) == pytest.approx(ends[int(np.argmin(expected))] * stats.width)


def _dense_divergences(hist: np.ndarray, ends: np.ndarray, levels: int) -> np.ndarray:
    """The KL search with every (candidate, group) pair's term computed in one array: what
    EntropyCalibrator._divergences must reproduce bit for bit (it computes each group's term
    once per width and start)."""
    h = hist.astype(np.float64)
    prefix = np.concatenate([[0.0], np.cumsum(h)])
    nonempty = np.concatenate([[0.0], np.cumsum(h > 0).astype(np.float64)])
    bounds = (np.arange(levels + 1)[None, :] * ends[:, None] + levels - 1) // levels
    with np.errstate(divide="ignore", invalid="ignore"):
        sums = np.diff(prefix[bounds], axis=1)
        mean = sums / np.maximum(np.diff(nonempty[bounds], axis=1), 1.0)
        cross = (sums * np.log(np.maximum(mean, 1e-300))).sum(axis=1)
    q_last = mean[np.arange(len(ends)), ((ends - 1) * levels) // ends]
    return _divergence_from_groups(h, prefix, ends, cross, q_last)


@pytest.mark.parametrize("ends_kind", ["strided", "irregular"])
def test_entropy_search_terms_per_width_equal_every_pair_bit_for_bit(ends_kind):
    """The search's shared per-(width, start) terms change no divergence: the same bits as
    computing every (candidate, group) pair, on a long-tailed 4096-bin histogram (the size
    calibration makes), for the strided candidates amax uses and for irregular ones that
    start below `levels` (groups of width 0)."""
    rng = np.random.default_rng(5)
    stats = TensorStats("t", bins=4096)
    stats.update(np.abs(rng.standard_t(2, size=200_000)).astype(np.float32))
    hist = stats.used_histogram()[0]
    calibrator = EntropyCalibrator()
    if ends_kind == "strided":
        ends = np.arange(calibrator.start_bin, hist.size + 1, 2)
    else:
        ends = np.sort(rng.choice(np.arange(2, hist.size + 1), 500, replace=False))
    expected = _dense_divergences(hist, ends, calibrator.levels)
    got = calibrator._divergences(hist, ends)
    assert np.isfinite(expected).sum() >= 50  # real divergences compared, not only the infinite ones
    assert got.tobytes() == expected.tobytes()


def test_bias_corrections_are_measured_once_then_reused_from_the_cache(digits_opt_onnx, digits_recipe, tmp_path):
    """A cache without bias corrections for this graph's int8 layers: measured on the
    recipe's calibration images (said so) and stored in the cache, then reused without data;
    with no calibration images at all the error says what to pass."""
    cache = json.loads((BUNDLED_DIR / "googlenet-digits.calib.json").read_text())
    cache.pop("bias_correction", None)
    old = tmp_path / "old.calib.json"
    old.write_text(json.dumps(cache))
    first = quantize_onnx(digits_opt_onnx, tmp_path / "a.int8.onnx", calib_cache=old, progress=False)
    assert any(n.startswith("bias correction measured on 256 images of digits-train") for n in first.notes)
    assert first.calibration.endswith("+ bias corrections measured now")
    assert "bias_correction" in read_cache(old)  # stored for next time
    again = quantize_onnx(digits_opt_onnx, tmp_path / "b.int8.onnx", calib_cache=old, progress=False)
    assert again.notes == [] and len(again.bias_corrected) == len(first.bias_corrected) == 58
    assert (tmp_path / "a.int8.onnx").read_bytes() != b"" and onnx.load(str(tmp_path / "b.int8.onnx")).graph == \
        onnx.load(str(tmp_path / "a.int8.onnx")).graph
    raw = digits_recipe.to_dict()
    raw["calibration"]["data"] = None
    old.write_text(json.dumps(cache))
    from inception_deploy.recipes import recipe_from_dict

    with pytest.raises(UserError, match="bias correction needs the calibration images"):
        quantize_onnx(digits_opt_onnx, tmp_path / "c.int8.onnx", recipe=recipe_from_dict(raw), calib_cache=old,
                      progress=False)
    assert not (tmp_path / "c.int8.onnx").exists()
    # Without bias correction the same cache serves.
    result = quantize_onnx(digits_opt_onnx, tmp_path / "c.int8.onnx", recipe=recipe_from_dict(raw), calib_cache=old,
                           progress=False, bias_correction=False)
    assert result.bias_corrected == [] and result.manifest["history"][-1]["bias_corrected_layers"] == 0


def test_committed_cache_round_trips_through_the_typed_cache(tmp_path):
    """CalibrationCache reads the committed JSON and writes it back key for key, byte for byte."""
    from inception_deploy.precision.cache import CalibrationCache

    committed = BUNDLED_DIR / "googlenet-digits.calib.json"
    cache = CalibrationCache.load(committed)
    assert cache.method == "entropy" and cache.images == 256 and cache.equalization is not None
    assert len(cache.bias_correction.shifts) == 58 and len(cache.equalization.arrays()) == 57
    assert cache.to_json() == json.loads(committed.read_text())
    assert cache.save(tmp_path / "copy.calib.json").read_text() == committed.read_text()
    assert tensorrt_cache_text(cache) == tensorrt_cache_text(read_cache(committed))


def test_a_malformed_cache_is_one_line(tmp_path):
    path = tmp_path / "bad.calib.json"
    stored = json.loads((BUNDLED_DIR / "googlenet-digits.calib.json").read_text())
    del stored["data"]
    path.write_text(json.dumps(stored))
    with pytest.raises(UserError, match=r"bad.calib.json: a calibration cache with a missing or malformed entry"):
        read_cache(path)


def test_calibration_set_reads_its_images_once_and_replays_them(digits_recipe):
    """The first pass preprocesses and spills; later passes (any batch size) and subsets read
    the same arrays back, equal to streaming the images afresh."""
    from inception_deploy.data import choose_indices, open_dataset
    from inception_deploy.precision.calibration_set import CalibrationSet

    pre = digits_recipe.preprocessing
    dataset = open_dataset("digits-train", pre)
    expected = np.concatenate([x for x, _, _ in dataset.batches(pre, 32, choose_indices(dataset, 40, seed=0))])
    with CalibrationSet(digits_recipe, "digits-train", 40, keep=True) as images:
        first = np.concatenate(list(images.batches(16)))
        loads = len(images.dataset.skipped), images.info.used
        opened = images.dataset.load
        images.dataset.load = lambda i: pytest.fail("replay decoded an image again")
        replay = list(images.batches(7))
        subset = images.array(10)
        images.dataset.load = opened
    assert np.array_equal(first, expected) and loads == (0, 40)
    assert [len(b) for b in replay] == [7] * 5 + [5] and np.array_equal(np.concatenate(replay), expected)
    fresh = CalibrationSet(digits_recipe, "digits-train", 40).array(10)
    assert np.array_equal(subset, fresh)
    subset_indices = set(choose_indices(dataset, 10, seed=0).tolist())
    assert subset_indices <= set(choose_indices(dataset, 40, seed=0).tolist())


def test_fewer_images_than_asked_names_both_flags(digits_opt_onnx, tmp_path):
    ten = tmp_path / "ten.npy"
    np.save(ten, np.random.default_rng(0).standard_normal((10, 3, 64, 64)).astype(np.float32))
    result = CliRunner().invoke(main, ["quantize", str(digits_opt_onnx), "--int8", "--calib-data", str(ten),
                                       "--calib-count", "20", "-o", str(tmp_path / "x.int8.onnx")])
    assert result.exit_code == 2
    assert result.output == (f"error: {ten} has 10 images, fewer than the 20 asked for; pass --calib-count 10 "
                             "(or fewer), or --allow-fewer to use all 10\n")
    assert not (tmp_path / "x.int8.onnx").exists()
