"""Input validation shared by the metrics: one message style for every bad input."""

from __future__ import annotations

import torch
from torch import Tensor


def check_images(x: object, name: str = "images", check_values: bool = True) -> Tensor:
    """Raise ValueError unless ``x`` is a finite float tensor (B, 3, H, W) in [0, 1].

    ``check_values=False`` keeps the shape and dtype checks but skips the range and
    NaN checks, which read the values back to the host (a device synchronization).
    """
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must have a floating dtype (images in [0, 1]), got {x.dtype}")
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"{name} must have shape (B, 3, H, W), got {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch")
    if check_values:
        check_finite(x, name)
        low, high = torch.aminmax(x)
        if low < 0 or high > 1:
            raise ValueError(f"{name} must lie in [0, 1], got values in [{low.item():.4g}, {high.item():.4g}]")
    return x


def check_pair(a: object, b: object, check_values: bool = True) -> None:
    """Two image batches of the same shape, each valid for ``check_images``."""
    first = check_images(a, "first images", check_values)
    second = check_images(b, "second images", check_values)
    if first.shape != second.shape:
        raise ValueError(f"image batches differ in shape: {tuple(first.shape)} vs {tuple(second.shape)}")


def check_finite(x: Tensor, name: str) -> None:
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or infinite values")


def check_features(x: object, name: str) -> Tensor:
    """Raise ValueError unless ``x`` is a finite, non-empty float matrix (N, D)."""
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must have a floating dtype, got {x.dtype}")
    if x.dim() != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} must have shape (N, D) with N, D > 0, got {tuple(x.shape)}")
    check_finite(x, name)
    return x
