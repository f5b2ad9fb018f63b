"""Sampling on products of spheres."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .ops import normalize


def random_uniform(
    shape: Sequence[int] | int,
    D: int,
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Points uniform on S^(D-1), one per entry of ``shape``: a tensor ``(*shape, D)``.

    Gaussian samples are drawn in float32 (float64 when asked for) and normalized,
    which is exactly uniform on the sphere.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> z = sphere_ops.random_uniform((2, 256), 768, generator=g)
        >>> z.shape
        torch.Size([2, 256, 768])
    """
    if isinstance(shape, int):
        shape = (shape,)
    if D < 2:
        raise ValueError(f"D must be >= 2 for points on S^(D-1), got {D}")
    dtype = dtype or torch.get_default_dtype()
    if not dtype.is_floating_point:
        raise TypeError(f"dtype must be floating, got {dtype}")
    draw = torch.float64 if dtype == torch.float64 else torch.float32
    if generator is not None and device is None:
        device = generator.device
    g = torch.randn(*shape, D, generator=generator, dtype=draw, device=device)
    return normalize(g).to(dtype)
