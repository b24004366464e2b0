"""Export: ONNX Runtime answers like PyTorch (batch 1 and 7 through the dynamic axis),
every checkpoint format loads, and the manifest says where the graph came from."""

from __future__ import annotations

import onnx
import torch

from inception_deploy.export import PARITY_ABS, PARITY_REL, export_onnx
from inception_deploy.manifest import read_onnx_manifest as read_manifest


def _assert_parity(result):
    assert set(result.parity) == {1, 7}
    for comparisons in result.parity.values():
        for c in comparisons.values():
            assert c.max_abs_error <= PARITY_REL * c.max_abs_reference + PARITY_ABS
            assert c.top1_agreement == 1.0
            assert c.max_abs_reference > 1e-3  # real activations, not a degenerate graph


def _graph_checks(path, opset=17, outputs=("logits",)):
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [opset]
    assert [o.name for o in model.graph.output] == list(outputs)
    batch_dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param == "batch"
    return model


def test_digits_export_parity_and_manifest(digits_export, digits_weights):
    _assert_parity(digits_export)
    model = _graph_checks(digits_export.path)
    manifest = read_manifest(model)
    assert manifest["recipe"] == "googlenet-digits"
    assert manifest["preprocessing"]["size"] == [64, 64]
    assert manifest["history"][0]["stage"] == "export"
    assert manifest["history"][0]["inputs"]["weights_sha256"] == _sha(digits_weights)
    assert {"torch", "onnx"} <= set(manifest["libraries"])
    assert manifest["history"][0]["training"]["holdout_top1"] >= 0.95


def _sha(path):
    from inception_deploy.fileio import sha256_file

    return sha256_file(path)


def test_googlenet_224_random_parity(googlenet_random_export):
    _assert_parity(googlenet_random_export)
    _graph_checks(googlenet_random_export.path)


def test_inception_v3_299_random_parity(inception_v3_random_export):
    _assert_parity(inception_v3_random_export)
    model = _graph_checks(inception_v3_random_export.path)
    assert model.graph.input[0].type.tensor_type.shape.dim[2].dim_value == 299


def test_keep_aux_exports_aux_outputs(digits_onnx_aux):
    _graph_checks(digits_onnx_aux, outputs=("logits", "aux2", "aux1"))


def _trained_state(digits_weights):
    return torch.load(digits_weights, weights_only=True)


def test_wrapped_ddp_state_dict_exports(tmp_path, digits_recipe, digits_weights):
    state = {f"module.{k}": v for k, v in _trained_state(digits_weights).items()}
    ckpt = tmp_path / "ddp.pth"
    torch.save({"state_dict": state, "epoch": 11, "optimizer": {"lr": 0.01}}, ckpt)
    _assert_parity(export_onnx(digits_recipe, ckpt, tmp_path / "out", progress=False))


def test_safetensors_exports(tmp_path, digits_recipe, digits_weights):
    from safetensors.torch import save_file

    path = tmp_path / "w.safetensors"
    save_file(_trained_state(digits_weights), str(path))
    _assert_parity(export_onnx(digits_recipe, path, tmp_path / "out", progress=False))


def _trained_module(digits_recipe, digits_weights):
    from inception_deploy.reference import load_reference

    return load_reference(digits_recipe, digits_weights).module


def test_torchscript_from_other_code_exports(tmp_path, digits_recipe, digits_weights):
    """A TorchScript archive is a self-contained graph: no Python model code needed."""
    scripted = torch.jit.trace(_trained_module(digits_recipe, digits_weights), torch.zeros(2, 3, 64, 64))
    path = tmp_path / "scripted.pt"
    scripted.save(str(path))
    result = export_onnx(digits_recipe, path, tmp_path / "out", progress=False)
    _assert_parity(result)
    assert read_manifest(onnx.load(str(result.path)))["history"][0]["weights_kind"] == "torchscript"


def test_torch_export_program_exports(tmp_path, digits_recipe, digits_weights):
    module = _trained_module(digits_recipe, digits_weights)
    program = torch.export.export(module, (torch.zeros(2, 3, 64, 64),),
                                  dynamic_shapes={"x": {0: torch.export.Dim("batch")}})
    path = tmp_path / "program.pt2"
    torch.export.save(program, str(path))
    _assert_parity(export_onnx(digits_recipe, path, tmp_path / "out", progress=False))


def test_exported_graph_keeps_module_names(digits_onnx):
    names = [n.name for n in onnx.load(str(digits_onnx)).graph.node if n.op_type == "Conv"]
    assert "/inception4c/branch2/branch2.1/conv/Conv" in names


def test_ort_output_matches_torch_on_held_out_digits(digits_onnx, digits_recipe, digits_weights):
    """The exported graph classifies the held-out digits like the trained model does."""
    import onnxruntime as ort

    from inception_deploy.data import open_dataset

    dataset = open_dataset("digits-holdout")
    session = ort.InferenceSession(str(digits_onnx), providers=["CPUExecutionProvider"])
    correct = total = 0
    for x, y, _ in dataset.batches(digits_recipe.preprocessing, 150):
        correct += int((session.run(None, {"input": x})[0].argmax(1) == y).sum())
        total += len(y)
    assert correct / total >= 0.95
