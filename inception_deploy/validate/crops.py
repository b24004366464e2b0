"""The papers' evaluation protocols (stage: validate): 1, 10 or 144 crops per image.

- 1: the recipe's own preprocessing (resize, centre crop): `data.preprocess` unchanged.
- 10 (AlexNet / Inception v3 papers): shorter side to the recipe's resize size (256 for a
  224 input), the four corners and the centre, and their mirrors.
- 144 (GoogLeNet paper, section 10): shorter side to 4 scales (256, 288, 320, 352 for
  224), the left/centre/right squares (top/centre/bottom for portrait images), from each
  the 4 corners, the centre and the square resized to the input size, and their mirrors:
  4 x 3 x 6 x 2.

Crops are cut here and then go through `data.preprocess` (a crop already at the input size
is not resized again), so normalization and layout are the one shared function's. The
model's softmax is averaged over an image's crops; the comparison sees log(mean softmax),
which for a single crop equals the logits up to a per-image constant.
"""

from __future__ import annotations

from typing import Iterator, Optional, Sequence

import numpy as np

from ..errors import UserError

PROTOCOLS = (1, 10, 144)


def _crop_pre(pre):
    # The crops are already at the input size: preprocessing must only normalize them.
    return pre.model_copy(update={"resize": None})


def _scaled(image, shorter: int, method):
    w, h = image.size
    factor = shorter / min(w, h)
    return image.resize((max(shorter, round(w * factor)), max(shorter, round(h * factor))), method)


def _five(image, height: int, width: int) -> list:
    w, h = image.size
    boxes = [(0, 0), (w - width, 0), (0, h - height), (w - width, h - height), ((w - width) // 2, (h - height) // 2)]
    return [image.crop((x, y, x + width, y + height)) for x, y in boxes]


def crops_of(image, pre, protocol: int) -> list:
    """The protocol's crops of one image (PIL images at the input size), mirrors last."""
    from PIL import Image, ImageOps

    from ..data import to_rgb  # the shared colour conversion (grayscale, alpha, CMYK ...)

    method = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST}[pre.interpolation]
    height, width = int(pre.size[0]), int(pre.size[1])
    image = to_rgb(image)
    side = min(height, width)
    if protocol == 10:
        resized = _scaled(image, pre.resize or round(side * 256 / 224), method)
        crops = _five(resized, height, width)
    elif protocol == 144:
        crops = []
        for scale in (256, 288, 320, 352):
            resized = _scaled(image, round(side * scale / 224), method)
            w, h = resized.size
            s = min(w, h)
            if w >= h:
                squares = [(0, 0), ((w - s) // 2, 0), (w - s, 0)]
            else:
                squares = [(0, 0), (0, (h - s) // 2), (0, h - s)]
            for x, y in squares:
                square = resized.crop((x, y, x + s, y + s))
                crops.extend(_five(square, height, width))
                crops.append(square.resize((width, height), method))
    else:
        raise UserError(f"--crops {protocol}: choose one of {', '.join(map(str, PROTOCOLS))}")
    return crops + [ImageOps.mirror(c) for c in crops]


def crop_batches(dataset, pre, protocol: int, batch_size: int, indices: Optional[Sequence[int]] = None
                 ) -> Iterator[tuple[np.ndarray, int, Optional[np.ndarray], np.ndarray]]:
    """Yield (inputs [images*crops, ...], crops per image, labels, indices) for a few images at a time."""
    from ..data import preprocess

    if dataset.preprocessed:
        raise UserError(f"{dataset.name} holds preprocessed arrays; --crops {protocol} needs images "
                        "(an image folder, uint8 arrays or digits-holdout)")
    crop_pre = _crop_pre(pre)
    per_batch = max(1, batch_size // protocol)
    order = np.arange(len(dataset)) if indices is None else np.asarray(indices, dtype=np.int64)
    pending, pending_index = [], []

    def emit():
        idx = np.asarray(pending_index, dtype=np.int64)
        labels = None if dataset.labels is None else dataset.labels[idx]
        return np.concatenate(pending), protocol, labels, idx

    for index in order:
        item = dataset.load(int(index))
        if item is None:
            continue
        pending.append(preprocess(crops_of(item, pre, protocol), crop_pre))
        pending_index.append(int(index))
        if len(pending) == per_batch:
            yield emit()
            pending, pending_index = [], []
    if pending:
        yield emit()


def average_softmax(logits: np.ndarray, crops: int) -> np.ndarray:
    """log(mean softmax over each image's `crops` consecutive rows): [images, classes]."""
    x = logits.astype(np.float64).reshape(-1, crops, logits.shape[-1])
    x = x - x.max(-1, keepdims=True)
    probs = np.exp(x)
    probs /= probs.sum(-1, keepdims=True)
    return np.log(np.maximum(probs.mean(1), 1e-300)).astype(np.float32)
