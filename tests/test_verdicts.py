"""Honest verdicts: passed / failed / skipped counted apart, --strict, judging on the 95% bound,
the too-small warning, well-formed SVG plots, and INCEPTION_DEPLOY_REQUIRE_GPU for pytest."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from inception_deploy.cli import main
from inception_deploy.recipes import BUNDLED_DIR, Tolerance
from inception_deploy.validate import ValidationComparison
from inception_deploy.validate.verdict import judge

pytest_plugins = ["pytester"]


def _comparison(images: int, agreeing: int, labelled: int = 0, b: int = 0, c: int = 0) -> ValidationComparison:
    comparison = ValidationComparison("logits")
    comparison.count, comparison.top1_agree_count, comparison.top5_agree_count = images, agreeing, images
    comparison.labelled, comparison.mcnemar_b, comparison.mcnemar_c = labelled, b, c
    comparison.ref_top1_correct, comparison.cand_top1_correct = labelled, labelled - b + c
    return comparison


def test_agreement_on_64_images_warns_and_lower_bound_fails():
    point, = judge("t", _comparison(64, 64), Tolerance(top1_agreement_min=0.99), "int8")
    assert point.status == "PASSED" and "95% CI 0.9434-1.0000" in point.tolerance
    assert point.warning == ("64 images cannot show top1_agreement >= 0.99 at 95% confidence: even 64/64 agreeing "
                             "gives a lower bound of 0.9434; that needs at least 381 images")
    bound, = judge("t", _comparison(64, 64), Tolerance(top1_agreement_min=0.99, judge="lower_bound"), "int8")
    assert bound.status == "FAILED" and "judged on the lower bound" in bound.tolerance
    # 381 images, all agreeing: the lower bound reaches 0.99, and nothing to warn about.
    enough, = judge("t", _comparison(381, 381), Tolerance(top1_agreement_min=0.99, judge="lower_bound"), "int8")
    assert enough.status == "PASSED" and enough.warning is None
    # A threshold of 1 (FP32: every image agrees) is judged on the count in either mode, without a warning.
    exact, = judge("t", _comparison(64, 64), Tolerance(top1_agreement_min=1.0, judge="lower_bound"), "fp32")
    assert exact.status == "PASSED" and exact.warning is None


def test_accuracy_drop_judged_on_its_upper_bound():
    tolerance = dict(top1_accuracy_drop_max=0.5)
    # 1000 labelled images, 3 flips each way: drop 0 points, but the interval reaches +/-0.48.
    point, = judge("t", _comparison(1000, 994, 1000, 3, 3), Tolerance(**tolerance), "int8")
    assert point.status == "PASSED" and "95% CI -0.48 to +0.48" in point.tolerance and point.warning is None
    # 4 reference-right flips, 0 back: drop 0.4 points passes on the point, its upper bound 0.79 does not.
    point, = judge("t", _comparison(1000, 996, 1000, 4, 0), Tolerance(**tolerance), "int8")
    bound, = judge("t", _comparison(1000, 996, 1000, 4, 0), Tolerance(**tolerance, judge="lower_bound"), "int8")
    assert point.status == "PASSED" and bound.status == "FAILED" and "upper bound" in bound.tolerance
    small, = judge("t", _comparison(64, 64, 64), Tolerance(**tolerance), "int8")
    assert small.warning == ("64 labelled images: one image is 1.56 points of accuracy, coarser than the allowed "
                             "top1_accuracy_drop of 0.5 points")


def test_unknown_judge_is_a_recipe_error():
    with pytest.raises(ValueError, match="lower_bound"):
        Tolerance(judge="median")


@pytest.fixture(scope="module")
def strict_recipe(tmp_path_factory) -> Path:
    """The digits recipe asking FP32 for 0.99 agreement and at most 0.5 points of accuracy drop."""
    raw = yaml.safe_load((BUNDLED_DIR / "googlenet-digits.yaml").read_text())
    raw["tolerances"] = {"fp32": {"max_abs_error_rel": 1e-5, "max_abs_error": 1e-6, "top1_agreement_min": 0.99,
                                  "top1_accuracy_drop_max": 0.5}}
    path = tmp_path_factory.mktemp("recipe") / "digits-099.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _validate(recipe, target, data, out, *extra):
    return CliRunner().invoke(main, ["validate", "--recipe", str(recipe), "--target", str(target), "--data", data,
                                     "-n", "64", "-o", str(out), "-q", *extra])


def test_64_images_report_interval_warning_and_wellformed_svg(strict_recipe, digits_onnx, tmp_path):
    result = _validate(strict_recipe, digits_onnx, "digits-holdout", tmp_path)
    assert result.exit_code == 0, result.output
    assert "validation PASSED: 3 passed, 0 failed, 0 skipped over 64 images, 1 target(s)" in result.output
    assert re.search(r"PASSED \| \S+ \| top1_agreement \| 1 \| >= 0.99 \(95% CI 0.9434-1.0000\)", result.output)
    assert "WARNING | " in result.output and "64 images cannot show top1_agreement >= 0.99" in result.output
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["counts"] == {"passed": 3, "failed": 0, "skipped": 0}
    assert len(report["warnings"]) == 2 and "needs at least 381 images" in report["warnings"][0]
    page = (tmp_path / "report.html").read_text()
    assert "WARNING: " in page and "381 images" in page
    svgs = re.findall(r"<svg\b.*?</svg>", page, flags=re.S)
    assert len(svgs) == 2  # |logit error| histogram and per-class delta (labels)
    plots = [ET.fromstring(svg) for svg in svgs]  # well-formed XML, or this raises
    ns = "{http://www.w3.org/2000/svg}"
    for plot in plots:
        assert plot.find(f"{ns}line[@class='tolerance']") is not None, "the tolerance is marked"
    histogram_labels = [t.text for t in plots[0].iter(f"{ns}text")]
    assert "0" in histogram_labels and "logits" in histogram_labels  # counts on the y-axis
    assert any(label.startswith("tolerance ") for label in histogram_labels)


def test_skipped_check_is_counted_as_skipped_and_strict_fails_it(strict_recipe, digits_onnx, tmp_path):
    # synthetic images carry no labels: the accuracy check cannot run.
    result = _validate(strict_recipe, digits_onnx, "synthetic:64", tmp_path / "a")
    assert result.exit_code == 0, result.output
    assert "SKIPPED |" in result.output and "top1_accuracy_drop" in result.output
    assert "validation PASSED: 2 passed, 0 failed, 1 skipped over 64 images" in result.output
    junit = ET.parse(tmp_path / "a" / "junit.xml").getroot()
    assert (junit.get("skipped"), junit.get("failures")) == ("1", "0")

    strict = _validate(strict_recipe, digits_onnx, "synthetic:64", tmp_path / "b", "--strict")
    assert strict.exit_code == 1, strict.output
    assert "validation FAILED: 2 passed, 1 failed, 0 skipped over 64 images" in strict.output
    assert "[skipped: fails under --strict]" in strict.output
    junit = ET.parse(tmp_path / "b" / "junit.xml").getroot()
    assert (junit.get("skipped"), junit.get("failures")) == ("0", "1")


def test_recipe_judging_on_the_lower_bound_fails_64_images(strict_recipe, digits_onnx, tmp_path):
    raw = yaml.safe_load(strict_recipe.read_text())
    raw["tolerances"]["fp32"]["judge"] = "lower_bound"
    recipe = tmp_path / "bound.yaml"
    recipe.write_text(yaml.safe_dump(raw))
    result = _validate(recipe, digits_onnx, "digits-holdout", tmp_path / "out")
    assert result.exit_code == 1, result.output
    assert re.search(r"FAILED \| \S+ \| top1_agreement \| 1 \| >= 0.99 \(95% CI 0.9434-1.0000, judged on the lower "
                     r"bound\)", result.output)


GPU_TEST = """
import pytest

@pytest.mark.gpu
def test_needs_a_gpu():
    pytest.skip("no GPU here")

def test_plain():
    pytest.skip("not about GPUs")
"""


@pytest.mark.parametrize("require, outcomes", [("", {"skipped": 2}), ("1", {"failed": 1, "skipped": 1})])
def test_require_gpu_turns_gpu_skips_into_failures(pytester, monkeypatch, require, outcomes):
    monkeypatch.setenv("INCEPTION_DEPLOY_REQUIRE_GPU", require)
    pytester.makeconftest((Path(__file__).parent / "conftest.py").read_text())
    pytester.makeini("[pytest]\nmarkers =\n    gpu: needs a GPU\n")
    pytester.makepyfile(GPU_TEST)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(**outcomes)
    if require:
        result.stdout.fnmatch_lines(["*INCEPTION_DEPLOY_REQUIRE_GPU is set but this gpu test skipped: no GPU here*"])
