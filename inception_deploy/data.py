"""Data for every stage: the one preprocessing function and the dataset readers (stage: data).

Reference and candidates, calibration and validation all see inputs made by
`preprocess` from the recipe's preprocessing section, so a difference between two
artifacts can never come from two preprocessing paths. Datasets are read lazily and
streamed in batches: only one batch of pixels is ever in memory.

Sources (`open_dataset`): an image folder (any depth, labels from sub-folder names when
there are sub-folders), a .npy/.npz array file, `digits-train` / `digits-holdout` (the
scikit-learn digits split used to train the bundled test model), and `synthetic`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np

from .errors import UserError
from .finite import describe, first_non_finite

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff", ".ppm", ".pgm"}


# --------------------------------------------------------------------------- preprocessing
def preprocess(images: Sequence, pre) -> np.ndarray:
    """PIL images or uint8 HxW[xC] arrays -> float32 batch in the recipe's layout.

    Steps, in order: convert to RGB (grayscale, palette, CMYK and alpha images included),
    resize (shorter side to `resize` then centre crop to `size`, or straight to `size`),
    scale pixels, normalize by mean/std, reorder channels, lay out as NCHW or NHWC.
    """
    height, width = int(pre.size[0]), int(pre.size[1])
    mean = np.asarray(pre.mean, dtype=np.float32)
    std = np.asarray(pre.std, dtype=np.float32)
    batch = np.empty((len(images), height, width, 3), dtype=np.float32)
    for i, image in enumerate(images):
        batch[i] = _resize_crop(to_rgb(image), pre.resize, height, width, pre.interpolation)
    batch = (batch * np.float32(pre.pixel_scale) - mean) / std
    if pre.channel_order == "BGR":
        batch = batch[..., ::-1]
    if pre.layout == "NCHW":
        batch = batch.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(batch, dtype=np.float32)


def decode_image(data: bytes):
    """Encoded image bytes (PNG, JPEG, ...) -> a decoded PIL image, as the image-folder reader
    decodes files: fully loaded now (a truncated file fails here), and an image past PIL's
    pixel limit refused as a decompression bomb instead of decoded. ValueError/OSError on bad bytes."""
    import io
    import warnings

    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(bytes(data))) as image:
                image.load()
                return image.copy()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ValueError(f"refused as a decompression bomb ({exc})") from None
        except SyntaxError as exc:  # PIL raises it for some malformed headers
            raise ValueError(str(exc)) from None


def to_rgb(image):
    """Any PIL image or uint8/uint16 array as an RGB PIL image (shared by preprocessing and multi-crop).

    16-bit images (PIL modes I;16*, I with values above 255, uint16 arrays) are scaled to 8 bits
    (x / 257, so 65535 -> 255), not clipped: PIL's own convert() clips a 16-bit ramp to white.
    """
    from PIL import Image

    if not isinstance(image, np.ndarray) and (image.mode.startswith("I;16") or image.mode == "I"):
        image = np.asarray(image)
        if image.dtype != np.uint16:  # mode I: 32-bit integers, 8- or 16-bit data in practice
            image = image.astype(np.uint8) if image.max(initial=0) <= 255 and image.min(initial=0) >= 0 else \
                np.clip(image, 0, 65535).astype(np.uint16)
    if isinstance(image, np.ndarray):
        array = image
        if array.dtype == np.uint16:
            array = ((array.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
        if array.dtype != np.uint8:
            raise UserError(f"raw images must be uint8 or uint16 arrays, got {array.dtype}")
        if array.ndim == 3 and array.shape[-1] == 1:
            array = array[..., 0]
        image = Image.fromarray(array)
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        # Composite transparency on white, as a viewer shows it, rather than on black.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")  # L, P, CMYK, I;16 ...


def _resize_crop(image, resize: Optional[int], height: int, width: int, interpolation: str) -> np.ndarray:
    from PIL import Image

    method = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST}[interpolation]
    if resize is None:
        image = image.resize((width, height), method)
    else:
        w, h = image.size
        scale = resize / min(w, h)
        new_w, new_h = max(width, round(w * scale)), max(height, round(h * scale))
        image = image.resize((new_w, new_h), method)
        left, top = (new_w - width) // 2, (new_h - height) // 2
        image = image.crop((left, top, left + width, top + height))
    return np.asarray(image, dtype=np.float32)


# --------------------------------------------------------------------------- datasets
@dataclass
class Dataset:
    """A lazily read list of images with optional labels.

    `load(i)` returns a PIL image or uint8 array, or None when the item is unreadable
    (counted in `skipped` and logged, never fatal on its own).
    """

    name: str
    size: int
    load_fn: callable
    labels: Optional[np.ndarray] = None
    class_names: Optional[list[str]] = None
    preprocessed: bool = False  # items are already network inputs (float arrays)
    skipped: list[str] = field(default_factory=list)
    describe_item: callable = str

    def __len__(self) -> int:
        return self.size

    def load(self, index: int):
        import warnings

        from PIL import Image

        try:
            with warnings.catch_warnings():
                # An image above PIL's pixel limit is a decompression bomb (or just too big to be
                # a network input): skipped and counted like an unreadable file, never decoded.
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                return self.load_fn(index)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            # PIL raises the first three on bad files; DecompressionBombError is none of them.
            reason = " ".join(str(exc).split())[:160]
            self.skipped.append(f"{self.describe_item(index)}: {reason}")
            log.warning("skipped unreadable image %s (%s)", self.describe_item(index), reason)
            return None

    def batches(self, pre, batch_size: int, indices: Optional[Sequence[int]] = None
                ) -> Iterator[tuple[np.ndarray, Optional[np.ndarray], np.ndarray]]:
        """Yield (inputs, labels or None, dataset indices), skipping unreadable items."""
        order = np.arange(self.size) if indices is None else np.asarray(indices, dtype=np.int64)
        pending_items, pending_index = [], []
        for index in order:
            item = self.load(int(index))
            if item is None:
                continue
            pending_items.append(item)
            pending_index.append(int(index))
            if len(pending_items) == batch_size:
                yield self._emit(pending_items, pending_index, pre)
                pending_items, pending_index = [], []
        if pending_items:
            yield self._emit(pending_items, pending_index, pre)

    def _emit(self, items, index, pre):
        inputs = np.stack(items).astype(np.float32) if self.preprocessed else preprocess(items, pre)
        found = first_non_finite(inputs)
        if found is not None:  # the data boundary: NaN never reaches a model, a calibrator or a metric
            item = self.describe_item(index[found[0][0]])
            raise UserError(f"{item}: the input holds {describe((found[0][1:], found[1]))} (the first non-finite value "
                            "of the data); NaN/Inf inputs give NaN outputs and scales: fix or drop that sample")
        idx = np.asarray(index, dtype=np.int64)
        labels = None if self.labels is None else self.labels[idx]
        return inputs, labels, idx


def choose_indices(dataset: Dataset, count: Optional[int], seed: int = 0, allow_fewer: bool = False,
                   flags: tuple[str, str] = ("--calib-count", "--allow-fewer")) -> np.ndarray:
    """A deterministic choice of `count` items, stratified by class when labels exist. More
    than the dataset holds is an error naming `flags` (the count's option, the allow option)
    unless `allow_fewer`."""
    total = len(dataset)
    if count is None or count >= total:
        if count is not None and count > total and not allow_fewer:
            raise UserError(f"{dataset.name} has {total} images, fewer than the {count} asked for; "
                            f"pass {flags[0]} {total} (or fewer), or {flags[1]} to use all {total}")
        return np.arange(total)
    rng = np.random.default_rng(seed)
    if dataset.labels is None:
        return np.sort(rng.permutation(total)[:count])
    # Round-robin over classes, each class in a seeded random order: class-balanced.
    per_class = [rng.permutation(np.flatnonzero(dataset.labels == c)).tolist() for c in np.unique(dataset.labels)]
    chosen: list[int] = []
    while len(chosen) < count:
        for members in per_class:
            if members and len(chosen) < count:
                chosen.append(members.pop())
    return np.sort(np.asarray(chosen, dtype=np.int64))


def open_dataset(source: str | Path, pre=None, seed: int = 0) -> Dataset:
    """Open an image folder, a .npy/.npz file, 'digits-train', 'digits-holdout' or 'synthetic[:N]'."""
    text = str(source)
    if text in ("digits-train", "digits-holdout"):
        return _digits_dataset(text.split("-")[1])
    if text.startswith("synthetic"):
        count_text = text.split(":", 1)[1] if ":" in text else "64"
        if not count_text.isdigit() or int(count_text) < 1 or text.split(":", 1)[0] != "synthetic":
            raise UserError(f"data '{text}': write synthetic or synthetic:N with N a positive number of images")
        return _synthetic_dataset(int(count_text), pre, seed)
    path = Path(text)
    if not path.exists():
        raise UserError(f"data not found: {path} (give an image folder, a .npy/.npz file, digits-holdout or synthetic)")
    if path.is_dir():
        return _image_folder(path)
    if path.suffix in (".npy", ".npz"):
        return _array_file(path, pre)
    raise UserError(f"{path}: unsupported data file; give an image folder or a .npy/.npz array file")


def _image_folder(root: Path) -> Dataset:
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise UserError(f"{root}: no images found (looked for {', '.join(sorted(IMAGE_SUFFIXES))} at any depth)")
    top_dirs = {p.relative_to(root).parts[0] for p in files if len(p.relative_to(root).parts) > 1}
    labels = class_names = None
    if top_dirs and all(len(p.relative_to(root).parts) > 1 for p in files):
        class_names = sorted(top_dirs)
        to_index = {name: i for i, name in enumerate(class_names)}
        labels = np.asarray([to_index[p.relative_to(root).parts[0]] for p in files], dtype=np.int64)

    def load(index: int):
        from PIL import Image

        with Image.open(files[index]) as image:
            image.load()  # force the decode here, so truncated files fail now
            return image.copy()

    return Dataset(name=str(root), size=len(files), load_fn=load, labels=labels,
                   class_names=class_names, describe_item=lambda i: str(files[i]))


def _array_file(path: Path, pre) -> Dataset:
    """uint8/uint16 images [N, H, W] or [N, H, W, C] (C 1, 3 or 4), or float arrays taken as
    preprocessed network inputs; nothing is unpickled (object arrays are refused)."""
    try:
        loaded = np.load(path, allow_pickle=False)
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise UserError(f"{path}: the array holds Python objects (dtype object), which are never unpickled; "
                            "save a numeric array (uint8 images or float32 inputs)") from None
        raise UserError(f"{path}: not a readable numpy array file ({exc})") from None
    except (OSError, EOFError) as exc:
        raise UserError(f"{path}: not a readable numpy array file ({exc})") from None
    labels = None
    if isinstance(loaded, np.lib.npyio.NpzFile):
        keys = set(loaded.files)
        image_key = next((k for k in ("images", "x", "inputs", "data") if k in keys), None)
        if image_key is None:
            raise UserError(f"{path}: an .npz needs an 'images' (or 'x') array; found {', '.join(sorted(keys)) or 'none'}")
        images = _npz_member(loaded, image_key, path)
        label_key = next((k for k in ("labels", "y", "targets") if k in keys), None)
        labels = None if label_key is None else _labels(_npz_member(loaded, label_key, path), path, label_key)
    else:
        images = loaded
    if len(images.shape) == 0 or images.shape[0] == 0:
        raise UserError(f"{path}: holds no images (shape {list(images.shape)}); give an array [N, H, W(, C)] with N >= 1")
    preprocessed = images.dtype.kind == "f"
    if not preprocessed:
        if images.dtype not in (np.uint8, np.uint16):
            raise UserError(f"{path}: {images.dtype} arrays are neither images (uint8 or uint16) nor preprocessed "
                            "inputs (float32); convert them (images.astype(np.uint8))")
        channels_ok = images.ndim == 3 or (images.ndim == 4 and images.shape[-1] in (1, 3, 4))
        if not channels_ok or min(images.shape[1:3]) < 1:
            raise UserError(f"{path}: {images.dtype} arrays are taken as images [N, H, W] or [N, H, W, C] with C 1, 3 "
                            f"or 4, got {list(images.shape)}; reshape them (e.g. digits: images.reshape(-1, 8, 8))")
    if preprocessed and pre is not None:
        expected = (3, *pre.size) if pre.layout == "NCHW" else (*pre.size, 3)
        if tuple(images.shape[1:]) != tuple(expected):
            raise UserError(
                f"{path}: float arrays are taken as preprocessed inputs of shape [N, {', '.join(map(str, expected))}], "
                f"got {list(images.shape)}; give uint8 images [N, H, W, C] to have them preprocessed"
            )
    if labels is not None and len(labels) != len(images):
        raise UserError(f"{path}: {len(labels)} labels for {len(images)} images")
    return Dataset(name=str(path), size=len(images), load_fn=lambda i: images[i], labels=labels,
                   preprocessed=preprocessed, describe_item=lambda i: f"{path}[{i}]")


def _npz_member(archive, key: str, path: Path) -> np.ndarray:
    try:
        return archive[key]
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise UserError(f"{path}: array '{key}' holds Python objects (dtype object), which are never unpickled; "
                            "save numeric arrays (np.savez(path, images=uint8_images, labels=int_labels))") from None
        raise UserError(f"{path}: array '{key}' cannot be read ({exc})") from None
    except (OSError, EOFError, KeyError) as exc:  # zlib/zip errors of a damaged member
        raise UserError(f"{path}: array '{key}' cannot be read ({type(exc).__name__}); save or copy the file again") from None


def _labels(values: np.ndarray, path: Path, key: str) -> np.ndarray:
    values = np.asarray(values)
    if values.ndim != 1 or values.dtype.kind not in "iuf" or (
            values.dtype.kind == "f" and (first_non_finite(values) is not None or np.any(values != np.rint(values)))):
        raise UserError(f"{path}: '{key}' must be one integer class per image, got {values.dtype} {list(values.shape)}")
    return values.astype(np.int64)


def digits_split(seed: int = 0, holdout_fraction: float = 0.25):
    """scikit-learn's digits as uint8 8x8 images, split deterministically, stratified.

    The split is cached as .npz in the package's cache folder (keyed by the seed, the fraction
    and scikit-learn's version): importing scikit-learn took 2.7 s and 87 MB of every command
    that reads digits (quantize's calibration and its held-out comparison among them)."""
    from importlib.metadata import PackageNotFoundError, version

    from .training import cache_dir

    try:
        sklearn_version = version("scikit-learn")
    except PackageNotFoundError:
        sklearn_version = "unknown"
    cached = cache_dir() / f"digits-split-{seed}-{holdout_fraction:g}-sklearn{sklearn_version}.npz"
    if cached.is_file():
        try:
            with np.load(cached, allow_pickle=False) as stored:
                return (stored["train_x"], stored["train_y"]), (stored["hold_x"], stored["hold_y"])
        except (OSError, ValueError, KeyError, EOFError):
            pass  # damaged: made again below
    split = _split_digits(seed, holdout_fraction)
    try:
        from .fileio import atomic_path

        cached.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(cached, suffix=".npz") as tmp:
            (train_x, train_y), (hold_x, hold_y) = split
            np.savez(tmp, train_x=train_x, train_y=train_y, hold_x=hold_x, hold_y=hold_y)
    except OSError:
        pass  # a read-only cache folder: the split is made again next time
    return split


def _split_digits(seed: int, holdout_fraction: float):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = np.clip(np.rint(digits.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    labels = digits.target.astype(np.int64)
    train_x, hold_x, train_y, hold_y = train_test_split(
        images, labels, test_size=holdout_fraction, random_state=seed, stratify=labels
    )
    return (train_x, train_y), (hold_x, hold_y)


def _digits_dataset(which: str) -> Dataset:
    (train_x, train_y), (hold_x, hold_y) = digits_split()
    images, labels = (train_x, train_y) if which == "train" else (hold_x, hold_y)
    return Dataset(name=f"digits-{which}", size=len(images), load_fn=lambda i: images[i], labels=labels,
                   class_names=[str(d) for d in range(10)], describe_item=lambda i: f"digits-{which}[{i}]")


def _synthetic_dataset(count: int, pre, seed: int) -> Dataset:
    """Smooth random images (not noise): low-frequency patterns give realistic activations."""
    height, width = (64, 64) if pre is None else (int(pre.size[0]), int(pre.size[1]))

    def load(index: int):
        rng = np.random.default_rng(seed * 1_000_003 + index)
        coarse = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
        from PIL import Image

        return np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC), dtype=np.uint8)

    return Dataset(name=f"synthetic:{count}", size=count, load_fn=load, describe_item=lambda i: f"synthetic[{i}]")
