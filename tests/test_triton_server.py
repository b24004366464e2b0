"""A real Triton server on 127.0.0.1 (stage: package, validate, benchmark through an endpoint).

One tritonserver 2.51 (from the nvidia-pytriton wheel: Python backend only, no GPU) per test
session, on free ports, stopped at the end; installed by `make test`
(`python -m inception_deploy.serving.local_server install`). It serves repositories written
by `package`: the trained digits GoogLeNet through ONNX Runtime in the Python backend, a copy
with one perturbed convolution, and the preprocessing ensemble. The configs for Triton's
onnxruntime and tensorrt backends, which this server lacks, are loaded too: they must get as
far as the missing backend, told apart from a config Triton refuses.
"""

from __future__ import annotations

import io
import os
import shutil

import numpy as np
import pytest

pytest.importorskip("tritonclient", reason="needs tritonclient (pip install -e '.[triton]')")

from inception_deploy.serving import package_triton  # noqa: E402
from inception_deploy.serving.local_server import LocalTritonServer, distribution  # noqa: E402

HELD_OUT = 64  # held-out digits pushed through the endpoint


@pytest.fixture(scope="session")
def triton_repository(digits_onnx, digits_recipe, tmp_path_factory):
    import onnx
    from onnx import numpy_helper

    repo = tmp_path_factory.mktemp("triton") / "model_repository"
    package_triton([digits_onnx], repo, name="googlenet-digits", kind="cpu", triton_backend="python",
                   with_preprocessing=True)
    # The same network with one convolution's weights scaled by 1.05: a model that answers almost alike.
    model = onnx.load(str(digits_onnx))
    conv_weights = {n.input[1] for n in model.graph.node if n.op_type == "Conv"}
    weight = next(t for t in model.graph.initializer if t.name in conv_weights)
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * np.float32(1.05), weight.name))
    perturbed = repo.parent / "googlenet-digits.perturbed.onnx"
    onnx.save(model, str(perturbed))
    package_triton([perturbed], repo, name="googlenet-digits-perturbed", kind="cpu", triton_backend="python")
    # Configs for backends this server does not have: loaded on request by the tests.
    package_triton([digits_onnx], repo, name="googlenet-digits-ort-gpu")  # onnxruntime_onnx, TensorRT EP
    broken = repo / "googlenet-digits-broken"
    shutil.copytree(repo / "googlenet-digits-ort-gpu", broken)
    text = (broken / "config.pbtxt").read_text().replace('name: "googlenet-digits-ort-gpu"',
                                                         'name: "googlenet-digits-broken"')
    (broken / "config.pbtxt").write_text(text.replace("preferred_batch_size: [8, 64]", "preferred_batch_size: [8, 128]"))
    return repo


@pytest.fixture(scope="session")
def fp32_plan_model(triton_repository, digits_opt_onnx, digits_recipe, tmp_path_factory):
    """A real TensorRT-RTX plan, packaged into the test repository (None without TensorRT-RTX)."""
    from inception_deploy.engine import TENSORRT_RTX, build_engine

    if not TENSORRT_RTX.installed():
        return None
    plan = build_engine(digits_opt_onnx, tmp_path_factory.mktemp("plan") / "g.plan", builder="tensorrt-rtx",
                        engine=digits_recipe.engine).plan_path
    return package_triton([plan], triton_repository, name="googlenet-digits-plan").network.name


@pytest.fixture(scope="session")
def triton_server(triton_repository, fp32_plan_model):
    missing = distribution().missing()
    if missing:
        reason = f"needs the local Triton server (`make triton-server`); missing {', '.join(missing)}"
        if os.environ.get("INCEPTION_DEPLOY_REQUIRE_TRITON"):
            pytest.fail(reason)
        pytest.skip(reason)
    server = LocalTritonServer(triton_repository, startup_timeout=120,
                               load=["googlenet-digits", "googlenet-digits-perturbed", "googlenet-digits-ensemble"])
    with server:
        yield server


@pytest.fixture(scope="session")
def held_out(digits_recipe):
    """HELD_OUT held-out digits: raw uint8 images, labels and the preprocessed batch."""
    from inception_deploy.data import choose_indices, open_dataset, preprocess

    dataset = open_dataset("digits-holdout")
    indices = choose_indices(dataset, HELD_OUT)
    images = [dataset.load(int(i)) for i in indices]
    return images, dataset.labels[indices], preprocess(images, digits_recipe.preprocessing)


def _client(server):
    import tritonclient.http as http

    return http.InferenceServerClient(server.http_address, connection_timeout=30, network_timeout=30)


def test_generated_configs_load_up_to_the_missing_backend(triton_server, fp32_plan_model):
    """Our onnxruntime_onnx and tensorrt_plan configs pass every check Triton makes before the backend;
    a config Triton refuses fails earlier, with the reason in its log."""
    from tritonclient.utils import InferenceServerException

    client = _client(triton_server)
    expected = {"googlenet-digits-ort-gpu": "onnxruntime"}
    if fp32_plan_model:
        expected[fp32_plan_model] = "tensorrt"
    for model, backend in expected.items():
        with pytest.raises(InferenceServerException) as failure:
            client.load_model(model)
        assert f"unable to find backend library for backend '{backend}'" in str(failure.value), model
    with pytest.raises(InferenceServerException) as failure:
        client.load_model("googlenet-digits-broken")
    assert "unable to find backend library" not in str(failure.value)
    assert "dynamic batching preferred size must be <= max batch size for googlenet-digits-broken" in \
        triton_server.log()
    states = {m["name"]: m.get("state") for m in client.get_model_repository_index()}
    assert states["googlenet-digits"] == "READY" and states["googlenet-digits-ort-gpu"] == "UNAVAILABLE"


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_endpoint_answers_like_onnx_runtime_here(triton_server, digits_onnx, held_out, protocol):
    from inception_deploy.backends import open_runner
    from inception_deploy.backends.triton_backend import TritonRunner

    _, _, inputs = held_out
    with open_runner(digits_onnx) as local:
        expected = local.infer({"input": inputs})["logits"]
    with TritonRunner(triton_server.endpoint("googlenet-digits", protocol)) as served:
        assert (served.input_names, served.output_names, served.max_batch_size) == (["input"], ["logits"], 64)
        assert served.served_parameters()["precision"] == "fp32"
        answered = served.infer({"input": inputs})["logits"]
    assert answered.shape == expected.shape
    np.testing.assert_allclose(answered, expected, rtol=0, atol=1e-5)


def test_ensemble_preprocesses_encoded_images_like_validation(triton_server, digits_onnx, held_out):
    """PNG bytes through the ensemble answer like the network on the recipe's preprocessing here."""
    import tritonclient.http as http
    from PIL import Image

    from inception_deploy.backends import open_runner

    images, _, inputs = held_out
    encoded = []
    for image in images[:8]:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")
        encoded.append(buffer.getvalue())
    request = http.InferInput("IMAGE", [8, 1], "BYTES")
    request.set_data_from_numpy(np.array(encoded, dtype=object).reshape(8, 1))
    answer = _client(triton_server).infer("googlenet-digits-ensemble", [request]).as_numpy("logits")
    with open_runner(digits_onnx) as local:
        expected = local.infer({"input": inputs[:8]})["logits"]
    np.testing.assert_allclose(answer, expected, rtol=0, atol=1e-5)

    from tritonclient.utils import InferenceServerException

    bad = http.InferInput("IMAGE", [1, 1], "BYTES")
    bad.set_data_from_numpy(np.array([b"not an image"], dtype=object).reshape(1, 1))
    with pytest.raises(InferenceServerException, match="image 0 of the request cannot be decoded"):
        _client(triton_server).infer("googlenet-digits-ensemble", [bad])


def test_classification_extension_names_the_classes(triton_server, held_out):
    import tritonclient.http as http

    _, labels, inputs = held_out
    request = http.InferInput("input", [4, 3, 64, 64], "FP32")
    request.set_data_from_numpy(inputs[:4])
    output = http.InferRequestedOutput("logits", class_count=2)
    top = _client(triton_server).infer("googlenet-digits", [request], outputs=[output]).as_numpy("logits")
    assert top.shape == (4, 2)
    for row, label in zip(top, labels[:4]):
        score, index, name = row[0].decode().split(":")
        assert int(index) == int(name) and float(score) > float(row[1].decode().split(":")[0])


def _cli(*args):
    from click.testing import CliRunner

    from inception_deploy.cli import main

    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_validate_through_the_endpoint_matches_the_onnx_file(triton_server, digits_onnx, protocol):
    """The served model gets the same checks, verdicts and numbers as the graph it serves."""
    from inception_deploy.validate import validate

    endpoint = triton_server.endpoint("googlenet-digits", protocol)
    report = validate("googlenet-digits", targets=[digits_onnx, endpoint], max_images=HELD_OUT, progress=False)
    assert report.exit_code == 0
    direct, served = report.targets
    assert served.name == endpoint and served.backend == "triton" and served.precision == "fp32"
    assert [(c.metric, c.status) for c in served.checks] == [(c.metric, c.status) for c in direct.checks]
    for metric, value in direct.outputs["logits"].summary().items():
        if isinstance(value, float):
            assert served.outputs["logits"].summary()[metric] == pytest.approx(value, rel=1e-6, abs=1e-6), metric
    assert served.manifest["recipe"] == "googlenet-digits" and served.sha256 == direct.sha256


def test_validate_cli_gate_through_triton(triton_server, tmp_path):
    good = _cli("validate", "--target", triton_server.endpoint("googlenet-digits"), "-n", HELD_OUT, "-q",
                "-o", tmp_path / "report")
    assert good.exit_code == 0, good.output
    assert f"PASSED | {triton_server.endpoint('googlenet-digits')} | top1_agreement | 1 |" in good.output
    assert (tmp_path / "report" / "junit.xml").is_file()
    bad = _cli("validate", "--target", triton_server.endpoint("googlenet-digits-perturbed"), "-n", HELD_OUT, "-q")
    assert bad.exit_code == 1, bad.output
    assert f"FAILED | {triton_server.endpoint('googlenet-digits-perturbed')} | max_abs_error |" in bad.output


def test_validate_refuses_with_one_line(triton_server):
    from inception_deploy.serving.local_server import _free_port

    down = f"triton://127.0.0.1:{_free_port()}/googlenet-digits"
    result = _cli("validate", "--target", down, "-n", 8, "-q", "--timeout", "5")
    assert result.exit_code == 2
    assert result.output.startswith(f"error: {down}: no Triton server answers at 127.0.0.1:")
    assert len(result.output.strip().splitlines()) == 1
    wrong = triton_server.endpoint("googlenet-digitz")
    result = _cli("validate", "--target", wrong, "-n", 8, "-q")
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert result.output.strip() == (
        f"error: {wrong}: model 'googlenet-digitz' is not ready on {triton_server.http_address} (ready there: "
        "googlenet-digits, googlenet-digits-ensemble, googlenet-digits-perturbed, googlenet-digits-preprocess); "
        "load it, or check the name")
    # The served model takes 64x64 inputs; the googlenet recipe makes 224x224 ones.
    result = _cli("validate", "--recipe", "googlenet", "--weights", "random", "--target",
                  triton_server.endpoint("googlenet-digits"), "-n", 8, "-q")
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert "the model's input 'input' takes FP32 [N, 3, 64, 64], but recipe 'googlenet' makes float32 " \
           "[N, 3, 224, 224]" in result.output


def test_benchmark_through_the_endpoint(triton_server, tmp_path):
    out = tmp_path / "bench.json"
    result = _cli("benchmark", triton_server.endpoint("googlenet-digits", "grpc"), "--batch", "1,4",
                  "--concurrency", "1,2", "--warmup", "1", "--min-iterations", "3", "--min-seconds", "0", "--json", out)
    assert result.exit_code == 0, result.output
    import json

    data = json.loads(out.read_text())
    assert data["backend"] == "triton" and data["input_shape"] == ["N", 3, 64, 64]
    assert [(r["batch"], r["concurrency"]) for r in data["rows"]] == [(1, 1), (1, 2), (4, 1), (4, 2)]
    assert all(r["iterations"] >= 3 and r["throughput"] > 0 for r in data["rows"])
