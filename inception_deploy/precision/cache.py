"""Calibration caches (stage: quantize): calibrate once, quantize again without the data.

JSON: tensor -> amax (and the observed |x| max), the method and its parameters, the image
count, and sha256 of the graph, the preprocessing and the list of images. A cache made for
another graph or preprocessing is refused with a message naming what differs. Also written
in TensorRT's calibration-cache text format (`TRT-<version>-EntropyCalibration2` header, then
`tensor: <big-endian float32 scale in hex>`) for TensorRT <= 10 users of implicit INT8.
"""

from __future__ import annotations

import math
import struct
from pathlib import Path
from typing import Optional

from ..errors import UserError
from ..fileio import read_json_file, sha256_bytes, sha256_json, write_json_atomic, write_text_atomic

FORMAT = "inception-deploy.calibration/1"
# The repository's committed caches for bundled recipes (like recipes.BUNDLED_DIR).
BUNDLED_DIR = Path(__file__).resolve().parent.parent.parent / "calibration"
_TRT_HEADER = {"entropy": "EntropyCalibration2", "max": "MinMaxCalibration", "percentile": "MinMaxCalibration",
               "mse": "MinMaxCalibration"}


def graph_sha256(model) -> str:
    """sha256 of the graph alone (nodes, weights, names), not of the file: the manifest in
    metadata_props changes with every stage's bookkeeping, the graph does not."""
    return sha256_bytes(model.graph.SerializeToString(deterministic=True))


def make_cache(model, recipe, method: str, params: dict, amax: dict, absmax: dict, data) -> dict:
    return {
        "format": FORMAT,
        "model_sha256": graph_sha256(model),
        "recipe": recipe.name,
        "preprocessing": recipe.preprocessing_dict(),
        "preprocessing_sha256": sha256_json(recipe.preprocessing_dict()),
        "method": method,
        "params": params,
        "data": {"source": data.source, "images": data.used, "skipped": len(data.skipped),
                 "list_sha256": sha256_json(data.items)},
        "tensors": {name: {"amax": float(amax[name]), "absmax": float(absmax[name])} for name in sorted(amax)},
    }


def write_cache(cache: dict, path: str | Path) -> Path:
    path = Path(path)
    write_json_atomic(path, cache)
    return path


def read_cache(path: str | Path) -> dict:
    path = Path(path)
    cache = read_json_file(path, f"calibration cache not found: {path}; give an existing .calib.json or calibration data",
                           "not a JSON calibration cache")
    if not isinstance(cache, dict) or cache.get("format") != FORMAT or not isinstance(cache.get("tensors"), dict):
        raise UserError(f"{path}: not an inception-deploy calibration cache (format {FORMAT} expected); "
                        "recalibrate with --calib-data")
    try:
        amax_from_cache(cache, str(path))
    except (KeyError, TypeError, ValueError):
        raise UserError(f"{path}: a tensor entry lacks a numeric amax/absmax; recalibrate with --calib-data") from None
    return cache


def mismatch(cache: dict, model, recipe, method: Optional[str], tensors) -> Optional[str]:
    """Why `cache` cannot serve this model/recipe/method, or None when it can."""
    if cache.get("model_sha256") != graph_sha256(model):
        return (f"it was made for another graph (sha256 {str(cache.get('model_sha256'))[:12]}, "
                f"this one is {graph_sha256(model)[:12]})")
    recorded, current = cache.get("preprocessing") or {}, recipe.preprocessing_dict()
    differing = [k for k in sorted(set(recorded) | set(current)) if recorded.get(k) != current.get(k)]
    if differing:
        key = differing[0]
        return f"it was made with preprocessing.{key}={recorded.get(key)!r}, the recipe says {current.get(key)!r}"
    if method is not None and cache.get("method") != method:
        return f"it holds {cache.get('method')} calibration, {method} was asked for"
    missing = [t for t in tensors if t not in cache["tensors"]]
    if missing:
        return f"it has no amax for tensor '{missing[0]}' ({len(missing)} missing)"
    return None


def amax_from_cache(cache: dict, source: str = "calibration") -> tuple[dict, dict]:
    """(amax, absmax) per tensor; a NaN/Inf or negative statistic is an error naming the tensor
    (NaN scales make every output NaN, which no later comparison may call close)."""
    tensors = cache["tensors"]
    amax, absmax = {k: float(v["amax"]) for k, v in tensors.items()}, {k: float(v["absmax"]) for k, v in tensors.items()}
    for name in tensors:
        if not (math.isfinite(amax[name]) and math.isfinite(absmax[name]) and amax[name] >= 0):
            raise UserError(f"{source}: tensor '{name}' has calibration amax {amax[name]} (absmax {absmax[name]}); "
                            "statistics must be finite: recalibrate with --calib-data on finite images")
    return amax, absmax


def tensorrt_cache_text(cache: dict, version: str = "100000") -> str:
    """TensorRT's calibration cache: per tensor the scale (amax / 127) as big-endian float32 hex."""
    lines = [f"TRT-{version}-{_TRT_HEADER.get(cache['method'], 'EntropyCalibration2')}"]
    for name, entry in cache["tensors"].items():
        scale = max(entry["amax"] / 127.0, 1e-8)
        lines.append(f"{name}: {struct.pack('>f', scale).hex()}")
    return "\n".join(lines) + "\n"


def write_tensorrt_cache(cache: dict, path: str | Path) -> Path:
    return write_text_atomic(path, tensorrt_cache_text(cache))


def bundled_cache(recipe_name: str) -> Optional[Path]:
    path = BUNDLED_DIR / f"{recipe_name}.calib.json"
    return path if path.is_file() else None
