"""The PyTorch reference: recipe + weights -> an eval-mode module (stage: load).

Weights are a checkpoint path (state dict, safetensors, TorchScript, torch.export),
'random' (initialized, then BatchNorm statistics re-estimated on real images so that
activations are sane: random-init Inception v3 otherwise gives logits near 1e12), or
None for a recipe with a training section (the bundled digits model, trained on first use).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from .checkpoints import load_checkpoint, module_from_state_dict
from .errors import UserError
from .fileio import sha256_file
from .models import check_input_size, get_spec


@dataclass
class Reference:
    module: object  # torch.nn.Module whose forward returns the main logits
    recipe: object
    weights: str  # what the weights are, for manifests and messages
    weights_sha256: Optional[str] = None
    kind: str = "state_dict"
    info: dict = field(default_factory=dict)

    @property
    def has_aux(self) -> bool:
        return bool(getattr(self.module, "aux_logits", False)) and hasattr(self.module, "forward_all")

    def with_aux(self):
        """A module returning (logits, *aux logits), for --keep-aux export."""
        from .models.common import WithAuxOutputs

        if not self.has_aux:
            raise UserError(f"{self.weights}: the model has no aux heads to keep (weights without aux1/AuxLogits keys, or a graph checkpoint)")

        return WithAuxOutputs(self.module).eval()

    @property
    def aux_output_names(self) -> tuple[str, ...]:
        return get_spec(self.recipe.model.arch).aux_output_names if self.has_aux else ()


def load_reference(recipe, weights: Optional[str | Path] = None, trust_checkpoint: bool = False,
                   progress: bool = True) -> Reference:
    spec = get_spec(recipe.model.arch)
    height, width = recipe.input_hw
    check_input_size(spec, height, width, with_aux=recipe.export.keep_aux)
    if weights is None:
        if recipe.training is None:
            raise UserError(f"recipe '{recipe.name}' needs --weights: a checkpoint file, or 'random' for random weights")
        from .training import read_training_report, trained_weights

        path = trained_weights(recipe, progress=progress)
        ref = _from_file(recipe, path, trust_checkpoint=False)
        ref.weights = f"trained:{recipe.name}"
        ref.info["training"] = read_training_report(path)
        return ref
    if str(weights) == "random":
        return _random(recipe)
    return _from_file(recipe, Path(weights), trust_checkpoint)


def _from_file(recipe, path: Path, trust_checkpoint: bool) -> Reference:
    checkpoint = load_checkpoint(path, trust=trust_checkpoint)
    digest = sha256_file(path)
    if checkpoint.state_dict is not None and checkpoint.kind in ("state_dict", "module"):
        module = module_from_state_dict(checkpoint.state_dict, recipe.model.arch,
                                        recipe.model.transform_input, source=str(path))
        _check_recipe_agrees(recipe, module, path)
        return Reference(module, recipe, str(path), digest, checkpoint.kind)
    module = checkpoint.module
    _probe_graph(module, recipe, path)
    return Reference(module, recipe, str(path), digest, checkpoint.kind)


def _check_recipe_agrees(recipe, module, path: Path) -> None:
    wanted = recipe.model.num_classes
    found = module.fc.out_features
    if wanted is not None and wanted != found:
        raise UserError(
            f"{path}: the weights have {found} classes but recipe '{recipe.name}' says model.num_classes={wanted}; "
            "fix the recipe (or leave num_classes out to take it from the weights)"
        )


def _probe_graph(module, recipe, path: Path) -> None:
    """A graph checkpoint must accept the recipe's input at any batch size and return
    logits [N, classes]; probed at two batch sizes, since export checks batch 1 and 7."""
    import torch

    height, width = recipe.input_hw
    for batch in (1, 3):
        try:
            with torch.no_grad():
                out = module(torch.zeros(batch, 3, height, width))
        except Exception as exc:  # noqa: BLE001 - any failure means the graph does not fit the recipe
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            hint = ""
            if path.suffix == ".pt2":
                hint = "; export the program with a dynamic batch: dynamic_shapes={'x': {0: torch.export.Dim('batch')}}"
            raise UserError(f"{path}: the graph does not run on a [{batch}, 3, {height}, {width}] input: {first}{hint}") from None
        out = out[0] if isinstance(out, (tuple, list)) else out
        if out.ndim != 2 or out.shape[0] != batch:
            raise UserError(f"{path}: the graph returns shape {list(out.shape)}, expected logits [batch, classes]")


def _random(recipe) -> Reference:
    import torch

    from .models import build_model

    torch.manual_seed(0)
    model = build_model(recipe.model.arch, num_classes=recipe.model.num_classes or 1000,
                        aux_logits=recipe.model.aux_logits is not False,
                        transform_input=recipe.model.transform_input)
    reestimate_batchnorm(model, recipe)
    return Reference(model.eval(), recipe, "random", None, "random")


def reestimate_batchnorm(model, recipe, images: int = 64, batch_size: int = 16) -> None:
    """Recompute BatchNorm running statistics on real images (digits through the recipe's
    preprocessing), so random-weight models have sane activations for export checks."""
    import torch

    from .data import open_dataset

    dataset = open_dataset("digits-train")
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over all batches seen
        # A shift of +1 keeps most ReLUs in their linear range. Without it a random BN
        # network is chaotic: roundoff grows with depth until float32 torch differs from
        # float64 by 4e-5 of the logit scale on Inception v3 (measured), which would test
        # roundoff, not the exporter. Trained networks are far better conditioned.
        torch.nn.init.constant_(bn.bias, 1.0)
    spec = get_spec(recipe.model.arch)
    # Run the aux heads too where the input is large enough, so their BatchNorms get statistics.
    with_aux = hasattr(model, "forward_all") and min(recipe.input_hw) >= spec.min_input_size_with_aux
    model.train()
    with torch.no_grad():
        for inputs, _, _ in dataset.batches(recipe.preprocessing, batch_size, indices=range(images)):
            x = torch.from_numpy(inputs)
            model.forward_all(x, with_aux=True) if with_aux else model(x)
    for bn in bns:
        bn.momentum = 0.1
    model.eval()
