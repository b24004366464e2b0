"""Shared fixtures: the trained digits model and exported graphs, made once per session.

The digits model trains on first use (about 2 minutes on 2 cores) and is cached under
INCEPTION_DEPLOY_CACHE (default ~/.cache/inception-deploy), so later runs are free.

INCEPTION_DEPLOY_REQUIRE_GPU=1 turns the skip of a `gpu`-marked test into a failure (the
pytest side of `validate --strict`): GPU CI that finds no GPU or no TensorRT goes red,
not green with everything skipped.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from inception_deploy.recipes import load_recipe

GPU_REASON = "needs an NVIDIA GPU and TensorRT (pip install -e '.[tensorrt]' on a GPU machine)"
REQUIRE_GPU = "INCEPTION_DEPLOY_REQUIRE_GPU"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get(REQUIRE_GPU, "") not in ("", "0") and item.get_closest_marker("gpu"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        reason = reason.removeprefix("Skipped: ")
        report.outcome = "failed"
        report.longrepr = f"{REQUIRE_GPU} is set but this gpu test skipped: {reason}"


@pytest.fixture(scope="session")
def artifacts_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("artifacts")


@pytest.fixture(scope="session")
def digits_recipe():
    return load_recipe("googlenet-digits")


@pytest.fixture(scope="session")
def digits_weights(digits_recipe) -> Path:
    from inception_deploy.training import trained_weights

    return trained_weights(digits_recipe, progress=False)


@pytest.fixture(scope="session")
def digits_export(digits_recipe, digits_weights, artifacts_dir):
    """ExportResult of the trained digits GoogLeNet (FP32, main output only)."""
    from inception_deploy.export import export_onnx

    return export_onnx(digits_recipe, None, artifacts_dir / "digits", progress=False)


@pytest.fixture(scope="session")
def digits_onnx(digits_export) -> Path:
    return digits_export.path


@pytest.fixture(scope="session")
def digits_opt_onnx(digits_onnx, artifacts_dir) -> Path:
    """The trained digits GoogLeNet after `optimize` (what `run` quantizes), .opt.onnx."""
    from inception_deploy.passes import optimize_onnx

    source = artifacts_dir / "digits-opt" / digits_onnx.name
    source.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(digits_onnx, source)
    return optimize_onnx(source, check="off").path


@pytest.fixture(scope="session")
def digits_onnx_aux(digits_recipe, digits_weights, artifacts_dir) -> Path:
    """The trained digits GoogLeNet exported with both aux heads as extra outputs."""
    from inception_deploy.export import export_onnx

    return export_onnx(digits_recipe, None, artifacts_dir / "digits-aux", keep_aux=True, progress=False).path


@pytest.fixture(scope="session")
def googlenet_random_export(artifacts_dir):
    """GoogLeNet at 224, random weights with BatchNorm re-estimated (export/pass checks only)."""
    from inception_deploy.export import export_onnx

    return export_onnx(load_recipe("googlenet"), "random", artifacts_dir / "googlenet", progress=False)


@pytest.fixture(scope="session")
def inception_v3_random_export(artifacts_dir):
    """Inception v3 at 299, random weights with BatchNorm re-estimated (export/pass checks only)."""
    from inception_deploy.export import export_onnx

    return export_onnx(load_recipe("inception_v3"), "random", artifacts_dir / "inception_v3", progress=False)


@pytest.fixture
def copy_artifact(tmp_path):
    """Copy an artifact into this test's own folder, so a test can modify it freely."""

    def _copy(path: Path) -> Path:
        target = tmp_path / Path(path).name
        shutil.copy(path, target)
        return target

    return _copy
