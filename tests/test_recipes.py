"""Recipes: bundled ones load; bad keys and types are one-line errors with the key path."""

from __future__ import annotations

import pytest

from inception_deploy.errors import UserError
from inception_deploy.recipes import bundled_names, load_recipe


def test_bundled_recipes_load():
    names = bundled_names()
    assert {"googlenet", "inception_v3", "googlenet-digits", "inception_v3_lowres"} <= set(names)
    for name in names:
        recipe = load_recipe(name)
        assert recipe.name == name
    assert load_recipe("googlenet").input_hw == (224, 224)
    assert load_recipe("googlenet-digits").training.aux_loss_weight == 0.3


def _write(tmp_path, text):
    path = tmp_path / "r.yaml"
    path.write_text(text)
    return path


BASE = "name: mine\nmodel: {arch: googlenet}\npreprocessing: {size: 224}\n"


def test_unknown_key_has_path_and_did_you_mean(tmp_path):
    path = _write(tmp_path, BASE + "export: {opsett: 17}\n")
    with pytest.raises(UserError) as info:
        load_recipe(path)
    assert str(info.value) == f"{path}: unknown key 'export.opsett' (did you mean 'opset'?)"


def test_wrong_type_names_the_key(tmp_path):
    path = _write(tmp_path, BASE.replace("size: 224", "size: big"))
    with pytest.raises(UserError, match=r"key 'preprocessing.size': .* \(got 'big'\)"):
        load_recipe(path)


def test_unknown_recipe_name_suggests():
    with pytest.raises(UserError, match=r"unknown recipe 'googlenet-digit' \(did you mean 'googlenet-digits'\?\)"):
        load_recipe("googlenet-digit")


def test_unknown_architecture(tmp_path):
    path = _write(tmp_path, BASE.replace("googlenet", "vgg16"))
    with pytest.raises(UserError, match="unknown model architecture 'vgg16'"):
        load_recipe(path)


def test_overrides_are_validated_by_the_schema_and_recorded():
    recipe = load_recipe("googlenet-digits")
    changed = recipe.with_overrides({"calibration.count": 64, "calibration.method": None,
                                     "precision.int8.equalize": False})
    assert (changed.calibration.count, changed.calibration.method, changed.precision.int8.equalize) == (64, "entropy", False)
    assert changed.overrides == {"calibration.count": 64, "precision.int8.equalize": False}
    assert recipe.calibration.count == 256 and recipe.overrides == {}  # the original is left as it was
    assert changed.source == recipe.source and "overrides" not in changed.to_dict()
    assert recipe.with_overrides({"calibration.count": None}) is recipe
    with pytest.raises(UserError) as info:
        recipe.with_overrides({"calibration.count": 0}, {"calibration.count": "--calib-count"})
    assert str(info.value) == "--calib-count 0: input should be greater than or equal to 1"


def test_calibrator_registry_is_the_schema_and_the_cli_choice(tmp_path):
    from click.testing import CliRunner

    from inception_deploy.cli import main
    from inception_deploy.precision.calibrators import METHODS

    assert METHODS == ("max", "percentile", "entropy", "mse")
    path = _write(tmp_path, BASE + "calibration: {method: kl}\n")
    with pytest.raises(UserError, match="Input should be 'max', 'percentile', 'entropy' or 'mse'"):
        load_recipe(path)
    help_text = CliRunner().invoke(main, ["quantize", "--help"]).output
    assert "[max|percentile|entropy|mse]" in help_text


def test_recipe_resolution_prefers_explicit_then_manifest_then_fallback():
    from inception_deploy.recipes import resolve_recipe

    digits = load_recipe("googlenet-digits")
    manifest = {"recipe": "googlenet-digits", "preprocessing": digits.preprocessing_dict()}
    assert resolve_recipe(digits, manifest) is digits
    assert resolve_recipe(None, manifest).name == "googlenet-digits"
    assert resolve_recipe(None, None, fallback="googlenet").name == "googlenet"
    assert resolve_recipe(None, {"recipe": None}) is None
    with pytest.raises(UserError, match=r"m.onnx was made with preprocessing.mean=\[0.5, 0.5, 0.5\] but recipe "
                                        r"'googlenet' says"):
        resolve_recipe("googlenet", manifest, "m.onnx")


def test_unread_recipe_keys_are_gone():
    with pytest.raises(UserError, match="unknown key 'export.batch'"):
        from inception_deploy.recipes import recipe_from_dict

        recipe_from_dict({"name": "x", "model": {"arch": "googlenet"}, "preprocessing": {"size": 224},
                          "export": {"batch": {"min": 1, "opt": 8, "max": 32}}})
