"""Building blocks shared by the Inception model definitions (stage: models).

Written here rather than imported from torchvision because torchvision does not import
beside the CPU torch wheel this project pins; names and shapes equal torchvision's so its
checkpoints load unchanged.
"""

from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

# ImageNet statistics, used by `transform_input` exactly as torchvision does.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class BasicConv2d(nn.Module):
    """Conv (no bias) -> BatchNorm (eps 0.001) -> ReLU, torchvision's layout."""

    def __init__(self, in_channels: int, out_channels: int, **kwargs) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, bias=False, **kwargs)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)), inplace=True)


def transform_input(x: torch.Tensor) -> torch.Tensor:
    """Map ImageNet-normalized input to the (x - 0.5) / 0.5 range the original weights expect."""
    channels = [
        torch.unsqueeze(x[:, c], 1) * (std / 0.5) + (mean - 0.5) / 0.5
        for c, (mean, std) in enumerate(zip(IMAGENET_MEAN, IMAGENET_STD))
    ]
    return torch.cat(channels, 1)


def init_truncated_normal(module: nn.Module, default_std: float) -> None:
    """torchvision's initialisation: truncated normal convs/linears, BN weight 1 bias 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            std = float(getattr(m, "stddev", default_std))
            nn.init.trunc_normal_(m.weight, mean=0.0, std=std, a=-2 * std, b=2 * std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class WithAuxOutputs(nn.Module):
    """Wraps a GoogLeNet/Inception3 so forward returns (logits, *aux logits), in eval mode
    too: what --keep-aux exports, and how tests build graphs that still hold aux heads."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor):
        return self.model.forward_all(x, with_aux=True)
