"""Equalization's pass recorded for calibration (stage: quantize): the batches it ran are read
back, bit for bit, instead of run again, and the calibration they give is the same."""

from __future__ import annotations

import json
import logging

import numpy as np

from inception_deploy.precision import quantize_onnx, recorded
from inception_deploy.precision.recorded import RecordedOutputs


def test_batches_read_back_once_exactly_and_the_budget_stops_recording():
    rng = np.random.default_rng(0)
    first = {"a": rng.normal(size=(2, 3, 4, 4)).astype(np.float32), "b": rng.normal(size=(2, 5)).astype(np.float32)}
    second = {"a": rng.normal(size=(2, 3, 4, 4)).astype(np.float32), "b": rng.normal(size=(2, 5)).astype(np.float32)}
    size = sum(a.nbytes for a in first.values())
    store = RecordedOutputs(budget=size + 1)
    store.put(np.array([7, 3]), first)
    store.put([1, 2], second)  # over the budget: not kept, and nothing after it either
    assert len(store) == 1 and store.full
    assert store.take([1, 2]) is None and store.take([3, 7]) is None  # matched by the indices, in order
    back = store.take(np.array([7, 3]))
    assert back.keys() == first.keys() and all(np.array_equal(back[k], first[k]) for k in first)
    assert back["a"].dtype == np.float32 and back["a"].shape == (2, 3, 4, 4)
    assert store.take([7, 3]) is None  # read back once
    store.close()
    assert len(store) == 0


def _calibration(cache_path):
    cache = json.loads(cache_path.read_text())
    return cache["tensors"], cache["bias_correction"]


def test_calibration_from_recorded_outputs_equals_running_the_batches(digits_opt_onnx, tmp_path, caplog, monkeypatch):
    """The digits GoogLeNet's equalization reads all 64 calibration images, so calibration runs
    none of its 8 batches; the ranges and bias corrections are those of running them."""
    common = dict(calib_data="digits-train", calib_count=64, progress=False, eval_images=16)
    with caplog.at_level(logging.INFO, logger="inception_deploy.precision.collect"):
        reused = quantize_onnx(digits_opt_onnx, tmp_path / "reused.int8.onnx", **common)
    assert "calibration read 8 of 8 batches back from the pass before (recorded outputs)" in caplog.messages
    monkeypatch.setattr(recorded, "RECORD_BYTES_BUDGET", 0)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="inception_deploy.precision.collect"):
        ran = quantize_onnx(digits_opt_onnx, tmp_path / "ran.int8.onnx", **common)
    assert "calibration read 0 of 8 batches back from the pass before (recorded outputs)" in caplog.messages
    assert reused.equalized == ran.equalized == 57 and len(reused.bias_corrected) == len(ran.bias_corrected) > 0
    assert _calibration(reused.cache_path) == _calibration(ran.cache_path)
    assert (tmp_path / "reused.int8.onnx").read_bytes() == (tmp_path / "ran.int8.onnx").read_bytes()
