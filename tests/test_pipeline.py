"""`inception-deploy run`, the README's main job: every stage on the bundled digits recipe."""

from __future__ import annotations

import json
import re

import onnx
from click.testing import CliRunner

from inception_deploy.cli import main
from inception_deploy.manifest import read_onnx_manifest as read_manifest


def test_run_with_no_arguments_makes_and_validates_every_artifact(tmp_path, digits_weights, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no arguments: artifacts go to ./out
    result = CliRunner().invoke(main, ["run", "-q"])
    assert result.exit_code == 0, result.output
    out = tmp_path / "out"
    names = ["googlenet-digits.onnx", "googlenet-digits.opt.onnx", "googlenet-digits.fp16.onnx", "googlenet-digits.int8.onnx"]
    for name in names:
        assert (out / name).is_file(), name
        assert f"PASSED | {name} | top1_agreement" in result.output
    from inception_deploy.engine import TENSORRT_RTX

    if TENSORRT_RTX.installed():  # real plans, built on this machine with their truth checks
        for precision in ("FP16", "INT8"):
            plan = f"googlenet-digits.{precision.lower()}.plan"
            assert f"PASSED | build-engine | {plan} | precision {precision} |" in result.output
            assert (out / plan).is_file() and (out / f"{plan}.json").is_file()
    else:
        assert "SKIPPED | build-engine | build-engine needs TensorRT-RTX, or TensorRT and an NVIDIA GPU" in result.output
    assert "FAILED" not in result.output
    # it ends with the summary: each artifact and its verdict, the reports, the calibration cache, one verdict line
    tail = result.output[result.output.index("run googlenet-digits: out"):]
    for name in names:
        assert re.search(rf"│ \S+ +│ out/{re.escape(name)} +│ PASSED", tail), (name, tail)
    for report_name in ("report.json", "junit.xml", "report.html"):
        assert f"out/validation/{report_name}" in tail
    assert re.search(r"│ calibration cache +│ out/googlenet-digits.calib.json +│", tail), tail
    assert result.output.rstrip().splitlines()[-1].startswith("run PASSED: ")
    report = json.loads((out / "validation" / "report.json").read_text())
    assert report["passed"] is True and report["exit_code"] == 0
    # each artifact's manifest records the whole chain of stages that made it
    stages = [entry["stage"] for entry in read_manifest(onnx.load(str(out / "googlenet-digits.int8.onnx")))["history"]]
    assert stages == ["export", "optimize", "quantize"]
    # package: a Triton model repository for what the run made, every config parsed with Triton's schema
    from inception_deploy.serving.model_config import read_config

    repository = out / "model_repository"
    assert "model repository: out/model_repository (7 models; configs parse with Triton's schema)" in result.output \
        or not TENSORRT_RTX.installed()
    platforms = {folder.name: read_config(folder / "config.pbtxt") for folder in repository.iterdir()}
    assert {name: c.platform or c.backend for name, c in platforms.items() if not name.endswith("-plan")} == {
        "googlenet-digits": "onnxruntime_onnx", "googlenet-digits-preprocess": "python",
        "googlenet-digits-ensemble": "ensemble", "googlenet-digits-fp16": "onnxruntime_onnx",
        "googlenet-digits-int8": "onnxruntime_onnx"}
    int8_onnx = platforms["googlenet-digits-int8"].optimization.execution_accelerators.gpu_execution_accelerator[0]
    assert int8_onnx.parameters["precision_mode"] == "INT8"
    if TENSORRT_RTX.installed():
        plan = platforms["googlenet-digits-int8-plan"]
        assert plan.platform == "tensorrt_plan" and plan.max_batch_size == 64
        assert dict(plan.cc_model_filenames)["8.6"] == "model.tensorrt-rtx-sm80-sm86-sm89-sm120.plan"
        assert plan.parameters["inception_deploy.precision"].string_value == "int8"


def test_run_skips_a_precision_the_recipe_disables(digits_recipe, tmp_path):
    from inception_deploy.pipeline import PipelineState, _quantize

    recipe = digits_recipe.with_overrides({"precision.fp16.enabled": False})
    state = PipelineState(recipe, None, tmp_path)
    _quantize("fp16")(state)
    assert "fp16" not in state.artifacts and list(tmp_path.iterdir()) == []
    assert state.lines == ["SKIPPED | quantize fp16 | precision.fp16.enabled is false in recipe 'googlenet-digits'"]
