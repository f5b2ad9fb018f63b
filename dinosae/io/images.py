"""Image grids for reports, logs and TensorBoard."""

from __future__ import annotations

import os

import torch
from torchvision.utils import make_grid, save_image

from dinosae.io.atomic import write_atomic


def save_pairs(path: str | os.PathLike, originals: torch.Tensor, reconstructions: torch.Tensor,
               count: int = 8) -> torch.Tensor:
    """A two-row grid, originals over reconstructions, saved as PNG; returns the grid (3, H, W).

    Example:
        >>> import tempfile
        >>> save_pairs(f"{tempfile.mkdtemp()}/pairs.png", torch.rand(3, 3, 8, 8), torch.rand(3, 3, 8, 8)).shape
        torch.Size([3, 22, 32])
    """
    count = min(count, originals.shape[0])
    images = torch.cat([originals[:count], reconstructions[:count]]).detach().float().cpu().clamp(0, 1)
    grid = make_grid(images, nrow=count, padding=2, pad_value=1.0)
    write_atomic(path, lambda tmp: save_image(grid, tmp, format="png"))
    return grid
