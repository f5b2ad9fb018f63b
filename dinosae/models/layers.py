"""Small layers shared by the stem, the decoder and the discriminator."""

from __future__ import annotations

from functools import partial
from typing import Callable

import torch
from torch import nn

from dinosae.models.norm import rms_norm_2d

# DC-AE's activations by name (its gelu is the tanh approximation).
_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "silu": nn.SiLU, "relu": nn.ReLU, "relu6": nn.ReLU6, "hswish": nn.Hardswish,
    "gelu": partial(nn.GELU, approximate="tanh"),
}


def activation(name: str) -> nn.Module:
    """A parameter-free activation module by DC-AE's name.

    Example:
        >>> activation("relu")(torch.tensor([-1.0, 2.0]))
        tensor([0., 2.])
    """
    if name not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(_ACTIVATIONS)}")
    return _ACTIVATIONS[name]()


class RMSNorm2d(nn.Module):
    """RMS normalization of an NCHW map, per pixel over channels or per image over everything.

    ``over="pixel"`` (the default, and the paper's description) normalizes each
    pixel's channel vector: a pixel's output does not depend on the rest of the
    image, so neither on the crop size. ``over="image"`` takes one RMS over
    (C, H, W) per image with a weight and no bias, which is what the official
    release's code computes; its checkpoints need it to decode the same images.
    The output has the input's dtype (bf16 under autocast), and the backward
    keeps only the input and a float32 statistic (``rms_norm_2d``).

    Example:
        >>> norm = RMSNorm2d(8)
        >>> y = norm(torch.randn(2, 8, 4, 4))
        >>> bool(torch.allclose(y.pow(2).mean(1), torch.ones(2, 4, 4), atol=1e-3))
        True
    """

    def __init__(self, channels: int, over: str = "pixel", eps: float | None = None) -> None:
        super().__init__()
        if over not in ("pixel", "image"):
            raise ValueError(f"RMSNorm2d normalizes over 'pixel' or 'image', not {over!r}")
        self.over = over
        self.eps = eps if eps is not None else (1e-5 if over == "pixel" else 1e-6)
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels)) if over == "pixel" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm_2d(x, self.weight, self.bias, self.over, self.eps)
