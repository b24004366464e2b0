"""`package --triton` without a server (stage: package): repository layout and configs, parsed with
Triton's own model-config protobuf; plans for several GPUs in one model from real TensorRT-RTX
builds; the refusals (batch beyond the profile, plans on CPU, mixed precisions, one GPU claimed
twice); triton:// target parsing. The server loading these configs is tests/test_triton_server.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from inception_deploy.cli import main
from inception_deploy.errors import UserError
from inception_deploy.serving import package_triton, parse_endpoint

pytest.importorskip("tritonclient", reason="needs tritonclient (pip install -e '.[triton]')")

from inception_deploy.serving.model_config import read_config, served_parameters  # noqa: E402


def _invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def fp32_plans(digits_opt_onnx, digits_recipe, tmp_path_factory):
    """Two real TensorRT-RTX plans of the optimized digits graph: one for A100 (sm80), one for RTX 30xx/40xx."""
    from inception_deploy.engine import TENSORRT_RTX, build_engine

    if not TENSORRT_RTX.installed():
        pytest.skip("needs TensorRT-RTX (pip install -e '.[rtx]')")
    out = tmp_path_factory.mktemp("plans")
    engine = digits_recipe.engine  # batch profile 1..64, opt 8
    a100 = build_engine(digits_opt_onnx, out / "g.a100.plan", builder="tensorrt-rtx", compute_capabilities="sm80",
                        engine=engine)
    ampere = build_engine(digits_opt_onnx, out / "g.ampere.plan", builder="tensorrt-rtx",
                          compute_capabilities="sm86,sm89", engine=engine)
    return a100.plan_path, ampere.plan_path


def test_onnx_graph_as_an_onnxruntime_model(digits_opt_onnx, tmp_path):
    result = package_triton([digits_opt_onnx], tmp_path / "repo")
    model = result.network
    assert model.name == "googlenet-digits" and model.folder == tmp_path / "repo" / "googlenet-digits"
    config = read_config(model.config_path)  # Triton's schema parses what we wrote
    assert config.platform == "onnxruntime_onnx" and config.max_batch_size == 64  # the recipe's engine.batch.max
    assert [(t.name, list(t.dims)) for t in config.input] == [("input", [3, 64, 64])]
    assert [(t.name, list(t.dims), t.label_filename) for t in config.output] == [("logits", [10], "labels.txt")]
    assert list(config.dynamic_batching.preferred_batch_size) == [8, 64]
    assert [g.count for g in config.instance_group] == [1] and config.instance_group[0].kind == 1  # KIND_GPU
    (accelerator,) = config.optimization.execution_accelerators.gpu_execution_accelerator
    assert accelerator.name == "tensorrt"
    assert accelerator.parameters["precision_mode"] == "FP32"  # the graph's precision, never lowered behind it
    assert accelerator.parameters["trt_profile_max_shapes"] == "input:64x3x64x64"
    assert [w.batch_size for w in config.model_warmup] == [1, 8]
    params = served_parameters(config)
    assert params["precision"] == "fp32" and params["recipe"] == "googlenet-digits"
    assert json.loads(params["preprocessing"])["size"] == [64, 64]
    assert (model.folder / "labels.txt").read_text().split() == [str(d) for d in range(10)]
    assert (model.folder / "1" / "model.onnx").read_bytes() == Path(digits_opt_onnx).read_bytes()
    manifest = json.loads((model.folder / "manifest.json").read_text())
    assert manifest["files"]["model.onnx"]["history"][-1]["stage"] == "package"
    assert manifest["files"]["model.onnx"]["recipe"] == "googlenet-digits"


def test_cpu_and_python_backend_configs(digits_opt_onnx, tmp_path):
    cpu = package_triton([digits_opt_onnx], tmp_path / "repo", name="cpu", kind="cpu", instances=2).network
    config = read_config(cpu.config_path)
    assert config.instance_group[0].kind == 2 and config.instance_group[0].count == 2  # KIND_CPU
    assert not config.optimization.execution_accelerators.gpu_execution_accelerator
    python = package_triton([digits_opt_onnx], tmp_path / "repo", name="py", kind="cpu", triton_backend="python",
                            max_batch=16, dynamic_batching=False).network
    config = read_config(python.config_path)
    assert config.backend == "python" and config.max_batch_size == 16 and not config.HasField("dynamic_batching")
    assert config.parameters["execution_provider"].string_value == "CPUExecutionProvider"
    assert {"1/model.py", "1/model.onnx", "config.pbtxt"} <= set(python.files)
    assert sorted(p.name for p in (tmp_path / "repo").iterdir()) == ["cpu", "py"]  # no temporaries left


def test_plans_for_two_gpu_families_make_one_model(fp32_plans, tmp_path):
    a100, ampere = fp32_plans
    result = _invoke("package", a100, ampere, "--triton", "-o", tmp_path / "repo", "--instances", "2")
    assert result.exit_code == 0, result.output
    assert "WARNING | package | g.a100.plan is a TensorRT-RTX plan" in result.output
    folder = tmp_path / "repo" / "googlenet-digits-plan"
    config = read_config(folder / "config.pbtxt")
    assert config.platform == "tensorrt_plan" and config.max_batch_size == 64  # the profile's max
    assert dict(config.cc_model_filenames) == {
        "8.0": "model.tensorrt-rtx-sm80.plan", "8.6": "model.tensorrt-rtx-sm86-sm89.plan",
        "8.9": "model.tensorrt-rtx-sm86-sm89.plan"}
    assert not config.default_model_filename  # no plan for a GPU none of them targets
    assert (folder / "1" / "model.tensorrt-rtx-sm80.plan").read_bytes() == a100.read_bytes()
    assert list(config.dynamic_batching.preferred_batch_size) == [8, 64]  # the profile's opt and max
    assert config.instance_group[0].count == 2
    manifest = json.loads((folder / "manifest.json").read_text())
    assert sorted(manifest["files"]) == ["model.tensorrt-rtx-sm80.plan", "model.tensorrt-rtx-sm86-sm89.plan"]
    assert manifest["files"]["model.tensorrt-rtx-sm80.plan"]["compute_capabilities"] == ["sm80"]
    assert (folder / "config.pbtxt").read_text().startswith("# Written by inception-deploy")


def test_a_hardware_compatible_tensorrt_plan_is_listed_for_every_ampere_plus_gpu(fp32_plans, tmp_path):
    # The manifest of a TensorRT 10 plan built on an H100 with --hardware-compatibility ampere-plus
    # (no TensorRT here: the RTX plan's bytes stand in; packaging reads only the manifest).
    a100, _ = fp32_plans
    plan = tmp_path / "g.hc.plan"
    plan.write_bytes(a100.read_bytes())
    manifest = json.loads(a100.with_name(a100.name + ".json").read_text())
    manifest.update(builder="tensorrt", tensorrt_version="10.16.1", gpu_name="NVIDIA H100 80GB HBM3",
                    compute_capability="9.0", compute_capabilities=[], hardware_compatibility="ampere-plus")
    plan.with_name(plan.name + ".json").write_text(json.dumps(manifest))
    result = _invoke("package", plan, "--triton", "-o", tmp_path / "repo")
    assert result.exit_code == 0, result.output
    config = read_config(tmp_path / "repo" / "googlenet-digits-plan" / "config.pbtxt")
    files = dict(config.cc_model_filenames)
    assert sorted(files, key=lambda cc: tuple(map(int, cc.split(".")))) == [
        "8.0", "8.6", "8.7", "8.9", "9.0", "10.0", "10.3", "12.0", "12.1"]
    assert len(set(files.values())) == 1


def test_plan_refusals(fp32_plans, digits_opt_onnx, tmp_path):
    a100, ampere = fp32_plans
    repo = tmp_path / "repo"
    result = _invoke("package", ampere, "--triton", "-o", repo, "--max-batch", "128")
    assert result.exit_code == 2
    assert result.output.strip() == (
        "error: --max-batch 128: g.ampere.plan's optimization profile ends at batch 64, and a TensorRT engine refuses "
        "larger batches; give at most 64, or rebuild the plan with `build-engine --max-batch 128`")
    result = _invoke("package", ampere, "--triton", "-o", repo, "--kind", "cpu")
    assert result.exit_code == 2 and "a TensorRT plan runs only on a GPU" in result.output
    result = _invoke("package", ampere, ampere, "--triton", "-o", repo)
    assert result.exit_code == 2 and "both target compute capability 8.6" in result.output
    result = _invoke("package", ampere, digits_opt_onnx, "--triton", "-o", repo)
    assert result.exit_code == 2 and "one model per call" in result.output
    assert not repo.exists()  # refused before anything was written
    small = _invoke("package", ampere, "--triton", "-o", repo, "--max-batch", "16")
    assert small.exit_code == 0, small.output
    config = read_config(repo / "googlenet-digits-plan" / "config.pbtxt")
    assert config.max_batch_size == 16 and list(config.dynamic_batching.preferred_batch_size) == [8, 16]


def test_ensemble_with_the_recipes_preprocessing(digits_opt_onnx, tmp_path):
    result = package_triton([digits_opt_onnx], tmp_path / "repo", with_preprocessing=True)
    names = [m.name for m in result.models]
    assert names == ["googlenet-digits", "googlenet-digits-preprocess", "googlenet-digits-ensemble"]
    pre = read_config(result.models[1].config_path)
    assert pre.backend == "python" and pre.input[0].data_type == 13 and list(pre.output[0].dims) == [3, 64, 64]
    settings = json.loads((result.models[1].folder / "1" / "preprocessing.json").read_text())
    assert settings["size"] == [64, 64] and settings["mean"] == [0.5, 0.5, 0.5]
    ensemble = read_config(result.models[2].config_path)
    assert ensemble.platform == "ensemble"
    steps = [(s.model_name, dict(s.input_map), dict(s.output_map)) for s in ensemble.ensemble_scheduling.step]
    assert steps == [("googlenet-digits-preprocess", {"IMAGE": "IMAGE"}, {"input": "preprocessed"}),
                     ("googlenet-digits", {"input": "preprocessed"}, {"logits": "logits"})]
    assert ensemble.output[0].label_filename == "labels.txt"


def test_package_bad_input(digits_opt_onnx, tmp_path):
    result = _invoke("package", digits_opt_onnx, "-o", tmp_path / "repo")
    assert result.exit_code == 2 and "choose the serving format: --triton" in result.output
    result = _invoke("package", digits_opt_onnx, "--triton", "-o", tmp_path / "repo", "--name", "a/b")
    assert result.exit_code == 2 and "--name 'a/b'" in result.output
    result = _invoke("package", digits_opt_onnx, "--triton", "-o", tmp_path / "repo", "--kind", "cpu",
                     "--execution-provider", "tensorrt")
    assert result.exit_code == 2 and "--execution-provider tensorrt with --kind cpu" in result.output
    result = _invoke("package", tmp_path / "nope.onnx", "--triton")
    assert result.exit_code == 2 and "nope.onnx" in result.output
    broken = tmp_path / "broken.pbtxt"
    broken.write_text('name: "x"\nplatfrom: "tensorrt_plan"\n')
    with pytest.raises(UserError, match="broken.pbtxt: not a valid Triton model config"):
        read_config(broken)


def test_endpoints():
    endpoint = parse_endpoint("triton://127.0.0.1:8000/googlenet-digits/2")
    assert (endpoint.protocol, endpoint.host, endpoint.port, endpoint.model, endpoint.version) == \
        ("http", "127.0.0.1", 8000, "googlenet-digits", "2")
    assert parse_endpoint("triton+grpc://localhost/m").port == 8001
    assert parse_endpoint("triton://[::1]:9000/m").address == "[::1]:9000"
    for bad, words in (("triton://host:99999/m", "port '99999'"), ("triton://host:8000", "give the server and"),
                       ("triton://host:8000/m/latest", "version 'latest'"), ("http://host/m", "not a Triton endpoint")):
        with pytest.raises(UserError, match=words):
            parse_endpoint(bad)
