"""Training of the bundled test model: GoogLeNet on scikit-learn's digits (stage: load).

Accuracy and quantization claims need a real trained model, and no pretrained weights
can be downloaded here, so the project trains its own: the real GoogLeNet architecture
with both aux heads (loss weight 0.3, as in the paper) on digits upsampled to the recipe's
input size through the shared preprocessing. Training is seeded and cached on disk by a
key over everything that affects the weights: a second run loads the file.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import numpy as np

from . import __version__
from .data import digits_split, preprocess
from .fileio import atomic_path, sha256_json, write_json_atomic

log = logging.getLogger(__name__)

# Bump when the training code changes in a way that changes the weights.
TRAINING_CODE_VERSION = 1


def cache_dir() -> Path:
    root = os.environ.get("INCEPTION_DEPLOY_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "inception-deploy"


def _torch_version() -> str:
    """torch's version without importing torch (seconds): the cache check and the training
    start line come before that import."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("torch").split("+")[0]
    except PackageNotFoundError:
        import torch

        return torch.__version__.split("+")[0]


def training_key(recipe) -> str:
    return sha256_json({
        "code": TRAINING_CODE_VERSION,
        "torch": _torch_version(),
        # Class names label the outputs, they do not change what is trained (nor the cached weights' key).
        "model": recipe.model.model_dump(mode="json", exclude={"class_names"}),
        "preprocessing": recipe.preprocessing_dict(),
        "training": recipe.training.model_dump(mode="json"),
    })[:16]


def trained_weights(recipe, progress: bool = True) -> Path:
    """Path of the trained state dict for a digits recipe, training it on first use."""
    if recipe.training is None:
        from .errors import UserError

        raise UserError(f"recipe '{recipe.name}' has no training section; give --weights")
    key = training_key(recipe)
    target = cache_dir() / "trained" / f"{recipe.name}-{key}.pt"
    if target.is_file():
        return target
    state, report = train(recipe, progress=progress)
    import torch

    with atomic_path(target) as tmp:
        torch.save(state, tmp)
    write_json_atomic(target.with_suffix(".json"), report)
    log.info("trained %s: held-out top-1 %.2f%% in %.0f s, cached at %s",
             recipe.name, 100 * report["holdout_top1"], report["seconds"], target)
    return target


def train(recipe, progress: bool = True) -> tuple[dict, dict]:
    from .progress import ProgressBar

    # The bar starts before torch is imported and the data prepared (together up to a minute on a
    # loaded machine), so plain progress lines cover that time too.
    about = (f"on scikit-learn's digits, first run only (then cached in {cache_dir() / 'trained'}); "
             f"{recipe.training.epochs} epochs, about 2 minutes on 2 cores")
    with ProgressBar(f"training {recipe.name}", None, progress, transient=False, about=about) as bar:
        return _train(recipe, bar)


def _train(recipe, bar) -> tuple[dict, dict]:
    import torch
    import torch.nn.functional as F

    from .models import build_model, check_input_size, get_spec

    cfg = recipe.training
    spec = get_spec(recipe.model.arch)
    height, width = recipe.input_hw
    with_aux = recipe.model.aux_logits is not False
    check_input_size(spec, height, width, with_aux=with_aux)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)

    (train_x, train_y), (hold_x, hold_y) = digits_split(cfg.seed, cfg.holdout_fraction)
    inputs = torch.from_numpy(preprocess(list(train_x), recipe.preprocessing))
    targets = torch.from_numpy(train_y)
    hold_inputs = torch.from_numpy(preprocess(list(hold_x), recipe.preprocessing))

    model = build_model(spec.name, num_classes=recipe.model.num_classes or 10,
                        aux_logits=with_aux,
                        transform_input=recipe.model.transform_input)
    steps_per_epoch = (len(inputs) + cfg.batch_size - 1) // cfg.batch_size
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.learning_rate, momentum=0.9,
                                nesterov=True, weight_decay=cfg.weight_decay)
    # One-cycle schedule: warm-up then cosine decay, which makes the result stable run to run.
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.learning_rate,
                                                   total_steps=cfg.epochs * steps_per_epoch, pct_start=0.2)
    generator = torch.Generator().manual_seed(cfg.seed)
    started = time.perf_counter()
    bar.set_total(cfg.epochs * steps_per_epoch)
    for epoch in range(cfg.epochs):
        model.train()
        order = torch.randperm(len(inputs), generator=generator)
        for start in range(0, len(inputs), cfg.batch_size):
            batch = order[start:start + cfg.batch_size]
            x = _shift(inputs[batch], generator)
            outputs = model.forward_all(x)
            loss = F.cross_entropy(outputs[0], targets[batch])
            for aux in outputs[1:]:
                loss = loss + cfg.aux_loss_weight * F.cross_entropy(aux, targets[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            bar.advance(1, f"training {recipe.name} epoch {epoch + 1}/{cfg.epochs} loss {loss.item():.3f}")
    model.eval()
    with torch.no_grad():
        predictions = torch.cat([model(hold_inputs[i:i + 256]).argmax(1) for i in range(0, len(hold_inputs), 256)])
    accuracy = float((predictions.numpy() == hold_y).mean())
    report = {
        "recipe": recipe.name,
        "toolkit_version": __version__,
        "holdout_top1": accuracy,
        "holdout_images": int(len(hold_y)),
        "train_images": int(len(train_y)),
        "epochs": cfg.epochs,
        "seconds": round(time.perf_counter() - started, 1),
        "key": training_key(recipe),
    }
    return model.state_dict(), report


def _shift(x, generator, max_shift: int = 4):
    """Random translation by up to `max_shift` pixels (zero-padded): cheap augmentation."""
    import torch

    dy, dx = (int(v) for v in torch.randint(-max_shift, max_shift + 1, (2,), generator=generator))
    return torch.roll(x, shifts=(dy, dx), dims=(2, 3))


def read_training_report(weights: Path) -> dict | None:
    report = Path(weights).with_suffix(".json")
    return json.loads(report.read_text()) if report.is_file() else None
