"""Bad input, as a user meets it on the command line: one line, exit code 2, no traceback,
and nothing left in the output folder."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from inception_deploy.cli import main
from inception_deploy.errors import UserError


def _export(*args, output_dir):
    runner = CliRunner()
    return runner.invoke(main, ["export", "-q", "-o", str(output_dir), *map(str, args)])


def _assert_user_error(result, output_dir, expected):
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert lines == [f"error: {expected}"], result.output
    assert "Traceback" not in result.output
    assert not output_dir.exists() or not any(output_dir.iterdir())


@pytest.fixture
def out(tmp_path):
    return tmp_path / "out"


def test_missing_checkpoint(tmp_path, out):
    path = tmp_path / "nope.pth"
    result = _export("--recipe", "googlenet-digits", "--weights", path, output_dir=out)
    _assert_user_error(result, out, f"checkpoint not found: {path}")


def test_text_file_named_pth(tmp_path, out):
    path = tmp_path / "notes.pth"
    path.write_text("these are my notes, not weights\n")
    result = _export("--recipe", "googlenet-digits", "--weights", path, output_dir=out)
    _assert_user_error(result, out, f"{path}: not a PyTorch checkpoint (a text file, not a torch.save archive); "
                                    "give a .pth/.pt state dict, .safetensors, TorchScript or .pt2 file")


def test_truncated_checkpoint(tmp_path, out, digits_weights):
    data = digits_weights.read_bytes()
    path = tmp_path / "truncated.pth"
    path.write_bytes(data[: len(data) // 2])
    result = _export("--recipe", "googlenet-digits", "--weights", path, output_dir=out)
    _assert_user_error(result, out, f"{path}: truncated or corrupt checkpoint (the zip archive is incomplete); save or copy it again")


def test_inception_v3_weights_for_googlenet(tmp_path, out):
    from inception_deploy.models import build_model

    path = tmp_path / "v3.pth"
    torch.save(build_model("inception_v3", num_classes=10, init_weights=False).state_dict(), path)
    result = _export("--recipe", "googlenet-digits", "--weights", path, output_dir=out)
    _assert_user_error(result, out, f"{path}: these look like inception_v3 weights, not googlenet; "
                                    "use a inception_v3 recipe (e.g. --recipe inception_v3)")


def test_missing_keys_are_named(tmp_path, out, digits_weights):
    state = torch.load(digits_weights, weights_only=True)
    del state["inception5b.branch1.conv.weight"]
    path = tmp_path / "partial.pth"
    torch.save(state, path)
    result = _export("--recipe", "googlenet-digits", "--weights", path, output_dir=out)
    _assert_user_error(result, out, f"{path}: weights do not fit googlenet: 1 missing keys (inception5b.branch1.conv.weight); "
                                    "likely cause: the checkpoint was saved from a different architecture or a modified model")


class _RunsCode:
    """Unpickling this calls os.system: a stand-in for a malicious checkpoint."""

    marker = None

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_code_running_pickle_is_refused_and_nothing_runs(tmp_path, out, digits_weights):
    marker = tmp_path / "code-ran"
    payload = _RunsCode()
    payload.marker = marker
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": torch.load(digits_weights, weights_only=True), "extra": payload}, path)
    result = _export("--recipe", "googlenet-digits", "--weights", path, output_dir=out)
    _assert_user_error(result, out, f"{path}: refused: this checkpoint needs arbitrary unpickling, which can run code "
                                    "from the file; nothing was run. Save a plain state_dict (torch.save(model.state_dict(), ...)), "
                                    "or pass --trust-checkpoint if you trust where it came from")
    assert not marker.exists()


def test_whole_module_pickle_needs_trust(tmp_path, out, digits_recipe, digits_weights):
    from inception_deploy.reference import load_reference

    path = tmp_path / "whole.pth"
    torch.save(load_reference(digits_recipe, digits_weights).module, path)
    refused = _export("--recipe", "googlenet-digits", "--weights", path, output_dir=out)
    assert refused.exit_code == 2 and "refused" in refused.output
    trusted = _export("--recipe", "googlenet-digits", "--weights", path, "--trust-checkpoint", output_dir=out)
    assert trusted.exit_code == 0, trusted.output
    assert (out / "googlenet-digits.onnx").is_file()


def test_unknown_recipe_key(tmp_path, out):
    path = tmp_path / "r.yaml"
    path.write_text("name: r\nmodel: {arch: googlenet, num_clases: 10}\npreprocessing: {size: 64}\n")
    result = _export("--recipe", path, "--weights", "random", output_dir=out)
    _assert_user_error(result, out, f"{path}: unknown key 'model.num_clases' (did you mean 'num_classes'?)")


def test_input_size_64_for_inception_v3(tmp_path, out):
    path = tmp_path / "v3-64.yaml"
    path.write_text("name: v3-64\nmodel: {arch: inception_v3}\npreprocessing: {size: 64}\n")
    result = _export("--recipe", path, "--weights", "random", output_dir=out)
    _assert_user_error(result, out, "input size 64x64 is too small for inception_v3: it needs at least 75x75; "
                                    "the 'inception_v3_lowres' architecture accepts inputs down to 21x21")


def test_keep_aux_where_the_model_has_none(tmp_path, out, digits_weights):
    state = {k: v for k, v in torch.load(digits_weights, weights_only=True).items() if not k.startswith("aux")}
    path = tmp_path / "noaux.pth"
    torch.save(state, path)
    result = _export("--recipe", "googlenet-digits", "--weights", path, "--keep-aux", output_dir=out)
    _assert_user_error(result, out, f"{path}: the model has no aux heads to keep (weights without aux1/AuxLogits keys, or a graph checkpoint)")


@pytest.mark.parametrize("feed, message", [
    ({"input": np.zeros((2, 3, 64, 64))},
     ": input 'input' is float64, the graph takes 'input': float32 [batch, 3, 64, 64]; cast it (array.astype(np.float32))"),
    ({"images": np.zeros((2, 3, 64, 64), np.float32)},
     " takes input 'input': float32 [batch, 3, 64, 64]; it was fed 'images'"),
    ({"input": np.zeros((2, 3, 32, 32), np.float32)},
     ": input 'input' has shape [2, 3, 32, 32], the graph takes 'input': float32 [batch, 3, 64, 64]; use a recipe "
     "(--recipe) whose preprocessing size and layout match it"),
])
def test_runner_names_the_expected_input_for_a_wrong_feed(digits_onnx, feed, message):
    """Not ONNX Runtime's raw INVALID_ARGUMENT: one line naming what the graph takes."""
    from inception_deploy.backends import open_runner

    with open_runner(digits_onnx) as runner:
        with pytest.raises(UserError) as caught:
            runner.infer(feed)
        assert str(caught.value) == f"{digits_onnx}{message}"
        assert caught.value.exit_code == 2
        assert runner.infer({"input": np.zeros((2, 3, 64, 64), np.float32)})["logits"].shape == (2, 10)


def test_build_engine_resolves_its_recipe_against_the_graph(digits_onnx, tmp_path):
    """build-engine resolves --recipe like every stage: a recipe contradicting the graph's manifest is refused."""
    result = CliRunner().invoke(main, ["build-engine", str(digits_onnx), "--recipe", "googlenet", "--fp16",
                                       "-o", str(tmp_path / "g.plan")])
    assert result.exit_code == 2
    assert result.output == (f"error: {digits_onnx} was made with preprocessing.mean=[0.5, 0.5, 0.5] but recipe "
                             "'googlenet' says [0.485, 0.456, 0.406]; use the recipe the artifact was made with\n")
    assert not (tmp_path / "g.plan").exists()
