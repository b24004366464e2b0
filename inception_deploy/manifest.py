"""Artifact manifests (stage: all): what made an artifact, carried inside it.

ONNX artifacts carry the manifest as JSON in `metadata_props` under one key (read and
written here, used by artifact.load_onnx / save_onnx); plans carry theirs in a JSON file
beside them (engine/manifest.py). Each stage copies its
input's manifest, appends itself to `history` and records the sha256 of what it read, so an
artifact can always say where it came from.
"""

from __future__ import annotations

import json
import os
import platform
from importlib import metadata
from typing import Optional

from . import __version__
from .errors import UserError

METADATA_KEY = "inception_deploy.manifest"
_LIBRARIES = ("torch", "onnx", "onnxruntime-gpu", "onnxruntime", "onnx-ir", "onnxscript", "numpy", "tensorrt")


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def new_manifest(stage: str, recipe=None, inputs: Optional[dict] = None, **details) -> dict:
    manifest = {
        "toolkit": "inception-deploy",
        "toolkit_version": __version__,
        "recipe": None if recipe is None else recipe.name,
        "model": None if recipe is None else recipe.model.model_dump(mode="json"),
        "preprocessing": None if recipe is None else recipe.preprocessing_dict(),
        "libraries": library_versions(),
        "history": [],
    }
    return add_stage(manifest, stage, inputs=inputs, **details)


def add_stage(manifest: dict, stage: str, inputs: Optional[dict] = None, **details) -> dict:
    """A copy of `manifest` with this stage appended to its history."""
    updated = json.loads(json.dumps(manifest))
    entry = {"stage": stage, "toolkit_version": __version__, "inputs": inputs or {}}
    entry.update(details)
    updated.setdefault("history", []).append(entry)
    updated["stage"] = stage
    updated["libraries"] = library_versions()
    return updated


def read_manifest(artifact) -> Optional[dict]:
    """The manifest of an artifact, None when it has none (a graph made elsewhere): an
    onnx.ModelProto, an .onnx path (read without its external weights), or a TensorRT plan
    path (the JSON written beside it, engine/manifest.py)."""
    if not isinstance(artifact, (str, os.PathLike)):
        return read_onnx_manifest(artifact)
    from .engine.plan_files import is_plan

    if is_plan(artifact):
        from .engine.manifest import read_manifest as read_plan_manifest

        manifest = read_plan_manifest(artifact)
        return None if manifest is None else manifest.model_dump(mode="json")
    from .artifact import load_onnx

    return load_onnx(artifact, load_external_data=False).manifest


def read_onnx_manifest(model) -> Optional[dict]:
    """The manifest of an onnx.ModelProto (or an .onnx path, through read_manifest), or None
    for a graph made elsewhere."""
    if isinstance(model, (str, os.PathLike)):
        return read_manifest(model)
    for prop in model.metadata_props:
        if prop.key == METADATA_KEY:
            try:
                return json.loads(prop.value)
            except json.JSONDecodeError:
                raise UserError(f"the model's '{METADATA_KEY}' metadata is not valid JSON; re-export it") from None
    return None


def write_onnx_manifest(model, manifest: dict) -> None:
    """Store `manifest` in an onnx.ModelProto's metadata_props (replacing an older one)."""
    kept = [p for p in model.metadata_props if p.key != METADATA_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    entry = model.metadata_props.add()
    entry.key = METADATA_KEY
    entry.value = json.dumps(manifest, sort_keys=True)


def check_preprocessing(manifest: Optional[dict], recipe, what: str) -> None:
    """Refuse an artifact whose recorded preprocessing contradicts the recipe in use."""
    from .recipes import preprocessing_difference

    if manifest is None or recipe is None or manifest.get("preprocessing") is None:
        return
    recorded, current = manifest["preprocessing"], recipe.preprocessing_dict()
    key = preprocessing_difference(recorded, current)
    if key is not None:
        raise UserError(
            f"{what} was made with preprocessing.{key}={recorded.get(key)!r} but recipe '{recipe.name}' says "
            f"{current.get(key)!r}; use the recipe the artifact was made with"
        )
