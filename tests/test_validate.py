"""validate: verdicts and exit codes on the trained digits model, layer-wise search, precisions, bad input."""

from __future__ import annotations

import json
import warnings
import xml.etree.ElementTree as ET

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from inception_deploy.cli import main
from inception_deploy.errors import UserError
from inception_deploy.validate import mcnemar_pvalue, module_path, validate, wilson_interval

SCALED_CONV = "/inception4c/branch2/branch2.1/conv/Conv"


def scale_conv(source, target, node_name=SCALED_CONV, factor=1.05):
    model = onnx.load(str(source))
    conv = next(n for n in model.graph.node if n.name == node_name)
    init = next(i for i in model.graph.initializer if i.name == conv.input[1])
    init.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(init) * np.float32(factor), init.name))
    onnx.save(model, str(target))
    return target


@pytest.fixture(scope="module")
def scaled_onnx(digits_onnx, tmp_path_factory):
    return scale_conv(digits_onnx, tmp_path_factory.mktemp("scaled") / "scaled.onnx")


@pytest.fixture(scope="module")
def fp16_onnx(digits_onnx, tmp_path_factory):
    from onnxconverter_common import float16

    model = float16.convert_float_to_float16(onnx.load(str(digits_onnx)), keep_io_types=True)
    path = tmp_path_factory.mktemp("fp16") / "digits.fp16.onnx"
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def int8_onnx(digits_onnx, digits_recipe, tmp_path_factory):
    """A Q/DQ graph (symmetric int8, per-channel weights) made with ONNX Runtime's quantizer:
    stands in for the precision stage's output, to test detection and INT8 verdicts."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from inception_deploy.data import choose_indices, open_dataset

    dataset = open_dataset("digits-train", digits_recipe.preprocessing)
    batches = dataset.batches(digits_recipe.preprocessing, 16, choose_indices(dataset, 32))

    class Reader(CalibrationDataReader):
        def get_next(self):
            batch = next(batches, None)
            return None if batch is None else {"input": batch[0]}

    path = tmp_path_factory.mktemp("int8") / "digits.int8.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_static(str(digits_onnx), str(path), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True})
    return path


def test_fp32_onnx_passes_against_pytorch(digits_onnx, digits_recipe, tmp_path):
    report = validate(digits_recipe, weights=None, targets=[digits_onnx], max_images=64, output_dir=tmp_path,
                      progress=False)
    assert report.exit_code == 0, report.lines()
    assert report.lines()[0].startswith(f"PASSED | {digits_onnx.name} | max_abs_error | ")
    metrics = json.loads((tmp_path / "report.json").read_text())["targets"][0]["metrics"]["logits"]
    assert metrics["samples"] == 64 and metrics["top1_agreement"] == 1.0 and metrics["max_abs_error"] < 1e-4
    assert metrics["cosine_min"] > 0.99999
    labels = metrics["labels"]  # digits-holdout carries labels
    assert labels["reference_top1_accuracy"] == labels["target_top1_accuracy"] > 0.9
    assert labels["mcnemar"]["p_value"] == 1.0
    suite = ET.parse(tmp_path / "junit.xml").getroot()
    assert suite.tag == "testsuite" and suite.get("failures") == "0"
    assert len(suite.findall("testcase")) == 3 and not suite.findall("testcase/failure")


def test_scaled_conv_fails_and_layerwise_names_it(digits_onnx, scaled_onnx, tmp_path):
    out = tmp_path / "report"
    result = CliRunner().invoke(main, ["validate", "--recipe", "googlenet-digits", "--target", str(scaled_onnx),
                                       "--max-images", "64", "--layerwise", "-o", str(out), "-q"])
    assert result.exit_code == 1, result.output
    assert "FAILED | scaled.onnx | max_abs_error | " in result.output
    assert "first divergence at inception4c.branch2.1 (/inception4c/branch2/branch2.1/conv/Conv)" in result.output
    report = json.loads((out / "report.json").read_text())
    layerwise = report["targets"][0]["layerwise"]
    assert layerwise["first_divergence"]["module"] == "inception4c.branch2.1"
    assert layerwise["first_divergence"]["rel_error"] > 0.03  # 5% weights -> ~5% of the output scale
    before = layerwise["layers"][: [l["node"] for l in layerwise["layers"]].index(SCALED_CONV)]
    assert before and max(l["rel_error"] for l in before) < 1e-6  # everything upstream is untouched
    failures = ET.parse(out / "junit.xml").getroot().findall("testcase/failure")
    assert failures and failures[0].get("type") == "ParityFailure"


def test_onnx_reference_and_two_targets(digits_onnx, scaled_onnx):
    report = validate("googlenet-digits", reference=digits_onnx, targets=[digits_onnx, scaled_onnx],
                      max_images=32, progress=False)
    assert report.exit_code == 1
    good, bad = report.targets
    assert good.passed and good.outputs["logits"].max_abs_error == 0.0  # same graph, same kernels
    assert not bad.passed
    assert {c.metric for c in bad.checks if c.status == "FAILED"} >= {"max_abs_error", "cosine_min"}


def test_fp16_and_int8_graphs_pass_their_tolerances(digits_onnx, fp16_onnx, int8_onnx):
    report = validate("googlenet-digits", reference=digits_onnx, targets=[fp16_onnx, int8_onnx], max_images=96,
                      layerwise=True, progress=False)
    fp16, int8 = report.targets
    assert (fp16.precision, int8.precision) == ("fp16", "int8")
    assert report.exit_code == 0, report.lines()
    assert {c.metric for c in int8.checks} == {"cosine_min", "top1_agreement", "top1_accuracy_drop"}
    assert {c.metric for c in fp16.checks} == {"max_abs_error", "cosine_min", "top1_agreement"}
    # The Q/DQ graph is judged by exact Q/DQ semantics (ORT's optimizations off); ORT's optimized
    # numbers are measured beside it and reported, never judged.
    assert int8.mode == "exact" and fp16.mode is None and set(int8.optimized) == {"logits"}
    evaluation = int8.to_dict()["evaluation"]
    assert evaluation["mode"] == "exact" and evaluation["ort-optimized"]["logits"]["samples"] == 96
    assert (f"INFO | {int8.name} | evaluation mode | exact Q/DQ semantics: ONNX Runtime with graph optimizations off"
            in report.lines())
    # Layer-wise on Q/DQ and FP16 graphs compares the Conv outputs both graphs have.
    for target in (fp16, int8):
        assert len(target.layerwise.layers) == 58 and target.layerwise.first_divergence is None


def test_metrics_helpers():
    low, high = wilson_interval(100, 100)
    assert high == 1.0 and 0.96 < low < 0.97  # 95% Wilson interval of 100/100 is [0.963, 1]
    assert wilson_interval(0, 0) == (0.0, 1.0)
    assert mcnemar_pvalue(0, 0) == 1.0
    assert mcnemar_pvalue(10, 0) == pytest.approx(2 * 0.5**10)
    assert module_path("/inception4c/branch2/branch2.1/conv/Conv") == "inception4c.branch2.1"
    assert module_path("/Mixed_6b/branch7x7dbl_3/conv/Conv") == "Mixed_6b.branch7x7dbl_3"
    assert module_path("/fc/Gemm") == "fc" and module_path("/conv1/conv/Conv") == "conv1"


@pytest.mark.parametrize("args, message", [
    (["--target", "missing.onnx"], "error: target not found: missing.onnx"),
    ([], "error: no targets to validate; give --target MODEL.onnx (or a .plan), repeatable"),
    (["--target", "{onnx}", "--shard", "3/2"], "error: --shard '3/2': give i/n with 1 <= i <= n, e.g. 2/4"),
    (["--target", "{onnx}", "--data", "nowhere/"],
     "error: data not found: nowhere (give an image folder, a .npy/.npz file, digits-holdout or synthetic)"),
    (["--target", "{onnx}", "--reference", "{fp16}"],
     "error: --reference {fp16}: the reference must be an FP32 ONNX graph (this one is fp16); or leave it out to use PyTorch"),
])
def test_bad_input_is_one_line_exit_2(args, message, digits_onnx, fp16_onnx, tmp_path):
    fill = {"onnx": str(digits_onnx), "fp16": str(fp16_onnx)}
    args = [a.format(**fill) for a in args]
    result = CliRunner().invoke(main, ["validate", "-q", "-o", str(tmp_path / "r"), *args])
    assert result.exit_code == 2
    assert result.output.strip() == message.format(**fill)
    assert not (tmp_path / "r").exists()


def test_plan_without_tensorrt_is_exit_2_before_any_work(digits_onnx, tmp_path):
    plan = tmp_path / "model.plan"
    plan.write_bytes(b"not really a plan")
    try:
        import tensorrt  # noqa: F401

        pytest.skip("TensorRT is installed here")
    except ImportError:
        pass
    result = CliRunner().invoke(main, ["validate", "-q", "--reference", str(digits_onnx), "--target", str(plan),
                                       "-o", str(tmp_path / "r")])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "TensorRT" in lines[0]
    assert not (tmp_path / "r").exists()


def test_manifest_preprocessing_mismatch_is_refused(digits_onnx, tmp_path):
    from inception_deploy.manifest import read_onnx_manifest as read_manifest, write_onnx_manifest as write_manifest

    model = onnx.load(str(digits_onnx))
    manifest = read_manifest(model)
    manifest["preprocessing"]["size"] = [96, 96]
    write_manifest(model, manifest)
    other = tmp_path / "other.onnx"
    onnx.save(model, str(other))
    with pytest.raises(UserError, match=r"other.onnx was made with preprocessing.size=\[96, 96\] but recipe "
                                        r"'googlenet-digits' says \[64, 64\]"):
        validate("googlenet-digits", reference=digits_onnx, targets=[other], max_images=8, progress=False)


def test_labels_file(digits_onnx, tmp_path):
    from inception_deploy.data import open_dataset

    truth = open_dataset("digits-holdout").labels
    wrong = tmp_path / "wrong.txt"
    wrong.write_text("\n".join(str((int(y) + 1) % 10) for y in truth) + "\n")
    report = validate("googlenet-digits", reference=digits_onnx, targets=[digits_onnx], labels=wrong, max_images=32,
                      progress=False)
    labels = report.targets[0].outputs["logits"].summary()["labels"]
    assert labels["reference_top1_accuracy"] < 0.2  # the file's labels, not the dataset's, are used
    short = tmp_path / "short.txt"
    short.write_text("1\n2\n3\n")
    result = CliRunner().invoke(main, ["validate", "-q", "--reference", str(digits_onnx), "-t", str(digits_onnx),
                                       "--labels", str(short)])
    assert result.exit_code == 2
    assert result.output.strip() == (f"error: {short}: 3 labels for 450 images; give one label per image, "
                                     "in dataset order")
