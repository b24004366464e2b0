"""Model registry: architecture names, aliases, builders and input-size limits (stage: models).

Each entry is a small spec in the spirit of timm's registry: how to build the module, the
smallest input it accepts (found by running the model, see tests/test_models.py), and the
names of its Inception blocks (used by `inspect` and layer-wise validation).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from ..errors import UserError


@dataclass(frozen=True)
class ModelSpec:
    name: str
    aliases: tuple[str, ...]
    build: Callable[..., "object"]
    min_input_size: int  # smallest square input the main path accepts
    min_input_size_with_aux: int  # ... when the aux heads are evaluated too (--keep-aux, training)
    aux_prefixes: tuple[str, ...]  # state-dict prefixes of the aux heads
    aux_output_names: tuple[str, ...]
    blocks: tuple[str, ...]
    signature_keys: tuple[str, ...]  # state-dict keys that only this architecture has
    low_resolution: bool = False
    extra: dict = field(default_factory=dict)


def _googlenet(**kwargs):
    from .googlenet import GoogLeNet

    return GoogLeNet(**kwargs)


def _inception_v3(low_resolution: bool = False, **kwargs):
    from .inception_v3 import Inception3

    kwargs.pop("dropout_aux", None)
    return Inception3(low_resolution=low_resolution, **kwargs)


def _inception_v3_lowres(**kwargs):
    return _inception_v3(low_resolution=True, **kwargs)


_GOOGLENET_BLOCKS = tuple(
    f"inception{b}" for b in ("3a", "3b", "4a", "4b", "4c", "4d", "4e", "5a", "5b")
)
_V3_BLOCKS = (
    "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b",
    "Mixed_6c", "Mixed_6d", "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c",
)

MODELS: dict[str, ModelSpec] = {
    "googlenet": ModelSpec(
        name="googlenet",
        aliases=("inception_v1", "inception-v1"),
        build=_googlenet,
        min_input_size=15,
        min_input_size_with_aux=15,
        aux_prefixes=("aux1.", "aux2."),
        aux_output_names=("aux2", "aux1"),
        blocks=_GOOGLENET_BLOCKS,
        signature_keys=("inception3a.branch1.conv.weight",),
    ),
    "inception_v3": ModelSpec(
        name="inception_v3",
        aliases=("inception-v3", "inception3"),
        build=_inception_v3,
        min_input_size=75,
        min_input_size_with_aux=299,
        aux_prefixes=("AuxLogits.",),
        aux_output_names=("aux",),
        blocks=_V3_BLOCKS,
        signature_keys=("Mixed_5b.branch1x1.conv.weight",),
    ),
    "inception_v3_lowres": ModelSpec(
        name="inception_v3_lowres",
        aliases=("inception-v3-lowres",),
        build=_inception_v3_lowres,
        min_input_size=21,
        min_input_size_with_aux=77,
        aux_prefixes=("AuxLogits.",),
        aux_output_names=("aux",),
        blocks=_V3_BLOCKS,
        signature_keys=("Mixed_5b.branch1x1.conv.weight",),
        low_resolution=True,
    ),
}

_ALIASES = {alias: spec.name for spec in MODELS.values() for alias in (spec.name, *spec.aliases)}


def get_spec(name: str) -> ModelSpec:
    key = _ALIASES.get(name.lower())
    if key is None:
        known = ", ".join(sorted(_ALIASES))
        raise UserError(f"unknown model architecture '{name}'; known: {known}")
    return MODELS[key]


def check_input_size(spec: ModelSpec, height: int, width: int, with_aux: bool) -> None:
    limit = spec.min_input_size_with_aux if with_aux else spec.min_input_size
    if min(height, width) < limit:
        what = " with its aux heads evaluated" if with_aux else ""
        hint = " (use --keep-aux only at a larger size)" if with_aux and min(height, width) >= spec.min_input_size else ""
        lowres = (
            "; the 'inception_v3_lowres' architecture accepts inputs down to "
            f"{MODELS['inception_v3_lowres'].min_input_size}x{MODELS['inception_v3_lowres'].min_input_size}"
            if spec.name == "inception_v3" and not with_aux
            else ""
        )
        raise UserError(
            f"input size {height}x{width} is too small for {spec.name}{what}: "
            f"it needs at least {limit}x{limit}{hint}{lowres}"
        )


def build_model(
    arch: str,
    num_classes: int = 1000,
    aux_logits: bool = True,
    transform_input: bool = False,
    init_weights: bool = True,
):
    spec = get_spec(arch)
    return spec.build(
        num_classes=num_classes,
        aux_logits=aux_logits,
        transform_input=transform_input,
        init_weights=init_weights,
    )
