"""Calibration caches (stage: quantize): calibrate once, quantize again without the data.

JSON (format inception-deploy.calibration/1): tensor -> amax (and the observed |x| max and
min), the method and its parameters, the image count, and sha256 of the graph, the
preprocessing and the list of images; the equalization scales and bias corrections made
with it. `CalibrationCache` is that file as a typed object: `load` / `save` (same JSON,
key for key, so committed caches stay readable), and `mismatch` says why a cache cannot
serve a graph, naming what differs. Also written in TensorRT's calibration-cache text
format (`TRT-<version>-EntropyCalibration2` header, then `tensor: <big-endian float32
scale in hex>`) for TensorRT <= 10 users of implicit INT8.
"""

from __future__ import annotations

import enum
import math
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from ..bundled import bundled_dir
from ..errors import UserError
from ..fileio import read_json_file, sha256_json, write_json_atomic, write_text_atomic

FORMAT = "inception-deploy.calibration/1"
# The repository's committed caches for bundled recipes, inside the package in a wheel (bundled.py).
BUNDLED_DIR = bundled_dir("calibration")
_TRT_HEADER = {"entropy": "EntropyCalibration2", "max": "MinMaxCalibration", "percentile": "MinMaxCalibration",
               "mse": "MinMaxCalibration"}
_KNOWN = ("format", "model_sha256", "recipe", "preprocessing", "preprocessing_sha256", "method", "params", "data",
          "tensors", "equalization", "bias_correction")


class Provenance(enum.Enum):
    """Where a quantize run's amax came from."""

    CALIBRATED = "calibrated"  # measured now on the calibration images
    REUSED = "reused"  # the user's --calib-cache
    COMMITTED = "committed"  # the recipe's calibration.cache or the repository's committed one


def graph_sha256(model) -> str:
    """sha256 of the graph alone (nodes, weights, names, inputs, outputs), not of the file: the
    manifest in metadata_props changes with every stage's bookkeeping, the graph does not. The
    inferred shapes (value_info) and the order of the initializers are left out: they change
    what a tool writes (optimize writes an unchanged graph as it was; onnx-ir adds shapes and
    reorders weights), not what the graph computes."""
    # The bytes are those of the graph serialized with value_info dropped and the initializers
    # sorted (the digest committed caches carry), made piecewise without a copy of the weights:
    # a protobuf message is its fields in field-number order, so it is the fields before
    # `initializer` (5), each initializer as a length-delimited field 5, then the fields after.
    # (Copying and re-sorting held three copies of Inception v3's 95 MB of weights at once.)
    import hashlib

    from ..graph_utils import copy_fields

    source = model.graph
    before, after = type(source)(), type(source)()
    hashed = lambda field: field.name not in ("initializer", "value_info")  # noqa: E731
    copy_fields(source, before, lambda field: hashed(field) and field.number < 5)
    copy_fields(source, after, lambda field: hashed(field) and field.number > 5)
    digest = hashlib.sha256(before.SerializeToString(deterministic=True))
    for weight in sorted(source.initializer, key=lambda t: t.name):
        data = weight.SerializeToString(deterministic=True)
        digest.update(b"\x2a" + _varint(len(data)))  # field 5, length-delimited
        digest.update(data)
    digest.update(after.SerializeToString(deterministic=True))
    return digest.hexdigest()


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


@dataclass
class TensorRange:
    amax: float
    absmax: float
    min: Optional[float] = None  # older caches have none

    def to_json(self) -> dict:
        return {"amax": self.amax, "absmax": self.absmax, **({} if self.min is None else {"min": self.min})}


@dataclass
class Equalization:
    """The channel scales the cache's amax were measured with (equalize.py)."""

    params: dict
    scales: dict[str, list[float]]
    images: Optional[int] = None  # the images the channel ranges came from (older caches: not said)

    def arrays(self) -> dict[str, np.ndarray]:
        return _float32(self.scales)


@dataclass
class BiasCorrections:
    """Per-layer bias shifts (bias.py), valid for the int8 layers and scales `key` names."""

    key: str
    images: int
    source: str
    shifts: dict[str, list[float]]

    def arrays(self) -> dict[str, np.ndarray]:
        return _float32(self.shifts)


def _float32(lists: dict[str, list[float]]) -> dict[str, np.ndarray]:
    return {name: np.asarray(values, dtype=np.float32) for name, values in lists.items()}


@dataclass
class CalibrationCache:
    model_sha256: str
    recipe: str
    preprocessing: dict
    preprocessing_sha256: str
    method: str
    params: dict
    data: dict  # source, images, skipped, list_sha256
    tensors: dict[str, TensorRange]
    equalization: Optional[Equalization] = None
    bias_correction: Optional[BiasCorrections] = None
    extra: dict = field(default_factory=dict)  # keys a newer version wrote, kept as they were
    where: str = field(default="calibration", compare=False)  # what error lines name: its file, or its data

    @classmethod
    def new(cls, serves, recipe, method: str, params: dict, ranges: dict[str, TensorRange], info) -> "CalibrationCache":
        """A cache for the graph `serves` (an onnx.ModelProto, or its graph_sha256 already made),
        from ranges measured on `info`'s images."""
        pre = recipe.preprocessing_dict()
        return cls(serves if isinstance(serves, str) else graph_sha256(serves), recipe.name, pre, sha256_json(pre), method, params,
                   {"source": info.source, "images": info.used, "skipped": len(info.skipped),
                    "list_sha256": sha256_json(info.items)},
                   {name: ranges[name] for name in sorted(ranges)}, where=info.source)

    @property
    def images(self) -> int:
        return int(self.data["images"])

    def amax(self) -> dict[str, float]:
        """Tensor -> amax; a NaN/Inf or negative statistic is an error naming the tensor (NaN
        scales make every output NaN, which no later comparison may call close)."""
        for name, r in self.tensors.items():
            if not (math.isfinite(r.amax) and math.isfinite(r.absmax) and r.amax >= 0):
                raise UserError(f"{self.where}: tensor '{name}' has calibration amax {r.amax} (absmax {r.absmax}); "
                                "statistics must be finite: recalibrate with --calib-data on finite images")
        return {k: float(v.amax) for k, v in self.tensors.items()}

    def unsigned_tensors(self) -> set[str]:
        """Tensors never seen below zero (uint8 candidates); unknown without a recorded min."""
        return {t for t, v in self.tensors.items() if (v.min if v.min is not None else -1.0) >= 0.0}

    # --------------------------------------------------------------------- JSON
    def to_json(self) -> dict:
        out = {"format": FORMAT, "model_sha256": self.model_sha256, "recipe": self.recipe,
               "preprocessing": self.preprocessing, "preprocessing_sha256": self.preprocessing_sha256,
               "method": self.method, "params": self.params, "data": self.data,
               "tensors": {name: r.to_json() for name, r in self.tensors.items()}}
        if self.equalization is not None:
            eq = self.equalization
            out["equalization"] = {"params": eq.params, "scales": eq.scales,
                                   **({} if eq.images is None else {"images": eq.images})}
        if self.bias_correction is not None:
            b = self.bias_correction
            out["bias_correction"] = {"key": b.key, "images": b.images, "source": b.source, "shifts": b.shifts}
        return {**out, **self.extra}

    @classmethod
    def from_json(cls, raw, where: str = "calibration cache") -> "CalibrationCache":
        if not isinstance(raw, dict) or raw.get("format") != FORMAT or not isinstance(raw.get("tensors"), dict):
            raise UserError(f"{where}: not an inception-deploy calibration cache (format {FORMAT} expected); "
                            "recalibrate with --calib-data")
        try:
            tensors = {name: TensorRange(float(v["amax"]), float(v["absmax"]), v.get("min"))
                       for name, v in raw["tensors"].items()}
            eq, bias = raw.get("equalization"), raw.get("bias_correction")
            cache = cls(raw["model_sha256"], raw["recipe"], raw["preprocessing"], raw["preprocessing_sha256"],
                        raw["method"], raw["params"], raw["data"], tensors,
                        Equalization(eq["params"], eq["scales"], eq.get("images")) if isinstance(eq, dict) else None,
                        BiasCorrections(bias["key"], bias["images"], bias["source"], bias["shifts"])
                        if isinstance(bias, dict) else None,
                        {k: v for k, v in raw.items() if k not in _KNOWN}, where)
        except (KeyError, TypeError, ValueError) as exc:
            raise UserError(f"{where}: a calibration cache with a missing or malformed entry ({exc!r}); "
                            "recalibrate with --calib-data") from None
        cache.amax()  # refused now when a statistic is not finite
        return cache

    @classmethod
    def load(cls, path: str | Path) -> "CalibrationCache":
        path = Path(path)
        raw = read_json_file(path, f"calibration cache not found: {path}; give an existing .calib.json or "
                                   "calibration data", "not a JSON calibration cache")
        return cls.from_json(raw, str(path))

    def save(self, path: str | Path) -> Path:
        return write_json_atomic(Path(path), self.to_json())

    # --------------------------------------------------------------------- matching
    def mismatch(self, model, recipe, method: Optional[str], tensors, equalization: Optional[dict],
                 params: Optional[dict] = None, images: Optional[int] = None) -> Optional[str]:
        """Why this cache cannot serve `model` quantized by `recipe` (with `method`, None: any;
        these equalization params, None: off; and, when given, these calibrator `params` and
        this many `images`), or None when it can."""
        from ..recipes import preprocessing_difference

        if self.model_sha256 != graph_sha256(model):
            return (f"it was made for another graph (sha256 {str(self.model_sha256)[:12]}, "
                    f"this one is {graph_sha256(model)[:12]})")
        current = recipe.preprocessing_dict()
        key = preprocessing_difference(self.preprocessing or {}, current)
        if key is not None:
            return f"it was made with preprocessing.{key}={(self.preprocessing or {}).get(key)!r}, the recipe says {current.get(key)!r}"
        if method is not None and self.method != method:
            return f"it holds {self.method} calibration, {method} was asked for"
        missing = [t for t in tensors if t not in self.tensors]
        if missing:
            return f"it has no amax for tensor '{missing[0]}' ({len(missing)} missing)"
        why = self._equalization_mismatch(equalization)
        if why is None and params is not None and self.params != params:
            why = f"it was made with {method} parameters {self.params}, the recipe asks for {params}"
        if why is None and images is not None and self.images != images:
            why = f"it was made on {self.images} images, {images} were asked for"
        return why

    def _equalization_mismatch(self, params: Optional[dict]) -> Optional[str]:
        stored = self.equalization.params if self.equalization is not None else None
        if stored == params:
            return None
        if params is None:
            return "it was made for an equalized graph, and equalization is off"
        if stored is None:
            return "it was made without equalization, which is on"
        return f"it was made with equalization {stored}, the recipe asks for {params}"

    # --------------------------------------------------------------------- TensorRT
    def tensorrt_text(self, version: str = "100000") -> str:
        """TensorRT's calibration cache: per tensor the scale (amax / 127) as big-endian float32 hex."""
        lines = [f"TRT-{version}-{_TRT_HEADER.get(self.method, 'EntropyCalibration2')}"]
        for name, entry in self.tensors.items():
            scale = max(entry.amax / 127.0, 1e-8)
            lines.append(f"{name}: {struct.pack('>f', scale).hex()}")
        return "\n".join(lines) + "\n"

    def save_tensorrt(self, path: str | Path) -> Path:
        return write_text_atomic(path, self.tensorrt_text())


def read_cache(path: str | Path) -> dict:
    """A calibration cache's JSON, checked (for tools and tests that read its fields)."""
    return CalibrationCache.load(path).to_json()


def tensorrt_cache_text(cache, version: str = "100000") -> str:
    """TensorRT's text cache of a CalibrationCache or its JSON."""
    if not isinstance(cache, CalibrationCache):
        cache = CalibrationCache.from_json(cache)
    return cache.tensorrt_text(version)


def committed_caches(recipe) -> list[Path]:
    """The caches a recipe may reuse without data, in order: its calibration.cache (relative
    to the recipe file), then the repository's committed one for its name."""
    candidates = []
    if recipe.calibration.cache:
        base = Path(recipe.source).parent if recipe.source and Path(recipe.source).exists() else Path.cwd()
        candidates.append(base / recipe.calibration.cache)
    bundled = BUNDLED_DIR / f"{recipe.name}.calib.json"
    if bundled.is_file():
        candidates.append(bundled)
    return candidates
