"""`inception-deploy run`, the README's main job: every stage on the bundled digits recipe."""

from __future__ import annotations

import json

import onnx
from click.testing import CliRunner

from inception_deploy.cli import main
from inception_deploy.manifest import read_manifest


def test_run_with_no_arguments_makes_and_validates_every_artifact(tmp_path, digits_weights, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no arguments: artifacts go to ./out
    result = CliRunner().invoke(main, ["run", "-q"])
    assert result.exit_code == 0, result.output
    out = tmp_path / "out"
    names = ["googlenet-digits.onnx", "googlenet-digits.opt.onnx", "googlenet-digits.fp16.onnx", "googlenet-digits.int8.onnx"]
    for name in names:
        assert (out / name).is_file(), name
        assert f"PASSED | {name} | top1_agreement" in result.output
    assert "SKIPPED | build-engine | build-engine needs TensorRT and an NVIDIA GPU" in result.output
    assert "FAILED" not in result.output
    report = json.loads((out / "validation" / "report.json").read_text())
    assert report["passed"] is True and report["exit_code"] == 0
    # each artifact's manifest records the whole chain of stages that made it
    stages = [entry["stage"] for entry in read_manifest(onnx.load(str(out / "googlenet-digits.int8.onnx")))["history"]]
    assert stages == ["export", "optimize", "quantize"]
