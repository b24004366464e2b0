"""validate: HTML rendered in headless Chromium, shards + merge, the 10/144-crop protocols."""

from __future__ import annotations

import json
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from inception_deploy.cli import main
from inception_deploy.validate import validate
from inception_deploy.validate.crops import crops_of

CHROMIUM = Path("/usr/bin/chromium")


def _scaled(source, target):
    model = onnx.load(str(source))
    conv = next(n for n in model.graph.node if n.name == "/inception4c/branch2/branch2.1/conv/Conv")
    init = next(i for i in model.graph.initializer if i.name == conv.input[1])
    init.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(init) * np.float32(1.05), init.name))
    onnx.save(model, str(target))
    return target


@pytest.fixture(scope="module")
def scaled_onnx(digits_onnx, tmp_path_factory):
    return _scaled(digits_onnx, tmp_path_factory.mktemp("scaled-reports") / "scaled.onnx")


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium "
                                                    "(apt-get update && apt-get install -y chromium)")
def test_html_report_renders_its_plots_in_chromium(digits_onnx, scaled_onnx, tmp_path):
    validate("googlenet-digits", reference=digits_onnx, targets=[scaled_onnx], max_images=32, layerwise=True,
             output_dir=tmp_path / "report", progress=False)
    page = tmp_path / "report" / "report.html"
    text = page.read_text()
    assert "<script" not in text and "http://" not in text.replace("http://www.w3.org/2000/svg", "")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync"]
    profile = tmp_path / "chromium-profile"
    dom = subprocess.run([str(CHROMIUM), *flags, f"--user-data-dir={profile}", "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    # The browser parsed three plots: error histogram, per-class delta, layer-wise curve.
    for klass in ("plot histogram", "plot class-delta", "plot layerwise"):
        assert f'class="{klass}"' in dom
    shot = tmp_path / "shot.png"
    subprocess.run([str(CHROMIUM), *flags, f"--user-data-dir={tmp_path / 'chromium-profile-2'}", "--window-size=1000,1800",
                    f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=120)
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("RGB")).reshape(-1, 3).astype(int)
    bar_blue = np.all(np.abs(pixels - [0x4C, 0x78, 0xA8]) <= 6, axis=1).sum()
    threshold_red = np.all(np.abs(pixels - [0xE4, 0x57, 0x56]) <= 6, axis=1).sum()
    assert bar_blue > 2000, "histogram bars / layer-wise curve were not painted"
    assert threshold_red > 50, "layer-wise threshold line was not painted"


def test_shards_merge_to_the_unsharded_numbers(digits_onnx, scaled_onnx, tmp_path):
    whole = validate("googlenet-digits", reference=digits_onnx, targets=[scaled_onnx], max_images=60, progress=False)
    runner = CliRunner()
    for i in (1, 2, 3):
        result = runner.invoke(main, ["validate", "-q", "--reference", str(digits_onnx), "-t", str(scaled_onnx),
                                      "-n", "60", "--shard", f"{i}/3", "-o", str(tmp_path / f"s{i}")])
        assert result.exit_code == 1, result.output
    merged_dir = tmp_path / "merged"
    result = runner.invoke(main, ["validate", "merge", *(str(tmp_path / f"s{i}") for i in (1, 2, 3)), "-o", str(merged_dir)])
    assert result.exit_code == 1, result.output
    assert "validation FAILED" in result.output and "over 60 images" in result.output
    merged = json.loads((merged_dir / "report.json").read_text())["targets"][0]["metrics"]["logits"]
    expected = whole.targets[0].outputs["logits"].summary()
    for key in ("samples", "max_abs_error", "top1_agreement", "top5_agreement", "cosine_min"):
        assert merged[key] == pytest.approx(expected[key], rel=1e-12, abs=1e-12), key
    assert merged["mean_abs_error"] == pytest.approx(expected["mean_abs_error"], rel=1e-9)
    assert merged["labels"]["target_top1_accuracy"] == pytest.approx(expected["labels"]["target_top1_accuracy"])
    assert merged["error_histogram"]["counts"] == expected["error_histogram"]["counts"]
    assert ET.parse(merged_dir / "junit.xml").getroot().get("tests") == str(len(whole.checks))
    incomplete = runner.invoke(main, ["validate", "merge", str(tmp_path / "s1"), str(tmp_path / "s3")])
    assert incomplete.exit_code == 2
    assert incomplete.output.strip() == "error: incomplete shard set: missing 2/3; merge exactly one report per shard"


def test_crop_protocols(digits_onnx, digits_recipe):
    from PIL import Image

    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 80, 3), dtype=np.uint8))
    for protocol in (10, 144):
        crops = crops_of(image, digits_recipe.preprocessing, protocol)
        assert len(crops) == protocol and {c.size for c in crops} == {(64, 64)}
    ten = validate("googlenet-digits", reference=digits_onnx, targets=[digits_onnx], max_images=6, crops=10,
                   batch_size=30, progress=False)
    assert ten.exit_code == 0 and ten.data["images"] == 6 and ten.data["crops"] == 10
    many = validate("googlenet-digits", reference=digits_onnx, targets=[digits_onnx], max_images=2, crops=144,
                    batch_size=48, progress=False)
    comparison = many.targets[0].outputs["logits"]
    assert many.exit_code == 0 and comparison.count == 2 and comparison.max_abs_error == 0.0
