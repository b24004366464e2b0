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
