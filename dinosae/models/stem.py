"""Stems: the trainable part of the encoder, turning pixels into the ViT's NHWC token grid."""

from __future__ import annotations

import torch
from torch import nn

from dinosae.models.layers import RMSNorm2d


class HierarchicalStem(nn.Module):
    """Four stride-2 convolutions, 3 -> 64 -> 128 -> 256 -> ``dim``: one token per 16x16 pixels.

    The first convolution is 7x7, the others 3x3; each of the first three is
    followed by an RMSNorm (per pixel; ``norm="image"`` for the official
    release's variant, see ``RMSNorm2d``) and SiLU. Convolutions have no bias:
    a norm follows the first three, and the official release has none on the
    last. Unlike a single 16x16 patch projection, the receptive field grows
    gradually, which the paper credits for the sharper reconstructions.

    Example:
        >>> stem = HierarchicalStem(dim=192)
        >>> stem(torch.randn(2, 3, 64, 64)).shape
        torch.Size([2, 4, 4, 192])
    """

    def __init__(self, dim: int, widths: tuple[int, int, int] = (64, 128, 256), norm: str = "pixel") -> None:
        super().__init__()
        channels = (3, *widths)
        layers: list[nn.Module] = []
        for i, (c_in, c_out) in enumerate(zip(channels[:-1], channels[1:])):
            kernel = 7 if i == 0 else 3
            layers += [nn.Conv2d(c_in, c_out, kernel, stride=2, padding=kernel // 2, bias=False),
                       RMSNorm2d(c_out, over=norm), nn.SiLU()]
        layers.append(nn.Conv2d(channels[-1], dim, 3, stride=2, padding=1, bias=False))
        self.layers = nn.Sequential(*layers)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.layers(images).permute(0, 2, 3, 1)


class PatchStem(nn.Module):
    """The ablation: one 16x16 stride-16 projection, like a ViT's patch embedding.

    Example:
        >>> PatchStem(dim=192)(torch.randn(1, 3, 32, 32)).shape
        torch.Size([1, 2, 2, 192])
    """

    def __init__(self, dim: int, patch_size: int = 16) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, patch_size, stride=patch_size)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.proj(images).permute(0, 2, 3, 1)


STEMS = {"hierarchical": HierarchicalStem, "patch": PatchStem}


def create_stem(kind: str, dim: int, norm: str = "pixel") -> nn.Module:
    """A stem by name: ``hierarchical`` (the paper's) or ``patch`` (the ablation)."""
    if kind not in STEMS:
        raise ValueError(f"unknown stem {kind!r}; choose one of {sorted(STEMS)}")
    return HierarchicalStem(dim, norm=norm) if kind == "hierarchical" else STEMS[kind](dim)
