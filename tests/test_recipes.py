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
