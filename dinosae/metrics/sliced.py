"""The sliced 2-Wasserstein distance between two sample sets."""

from __future__ import annotations

import torch
from torch import Tensor


def sliced_wasserstein(
    a: Tensor, b: Tensor, *, projections: int = 256, generator: torch.Generator | None = None
) -> Tensor:
    """Sliced 2-Wasserstein distance between sample sets ``a`` (n, ...) and ``b`` (m, ...).

    Each sample is flattened into R^(N D), where the product of spheres sits
    with its chordal metric; both sets are projected on ``projections`` random
    unit directions and the 1-D distributions compared by their quantiles:
    ``sqrt(mean over directions of W2^2)``. It is a metric on distributions;
    between two finite samples of one distribution it is of order n^(-1/2),
    far below its value between different distributions.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> import sphere_ops
        >>> from dinosae.data.toy import VMFMixture
        >>> mixture = VMFMixture.random(2, tokens=3, dim=4, kappa=20.0, generator=g)
        >>> same = sliced_wasserstein(mixture.sample(2000, g)[0], mixture.sample(2000, g)[0], generator=g)
        >>> noise = sphere_ops.random_uniform((2000, 3), 4, generator=g)
        >>> other = sliced_wasserstein(mixture.sample(2000, g)[0], noise, generator=g)
        >>> bool(same < 0.1 * other)
        True
    """
    if not isinstance(a, Tensor) or not isinstance(b, Tensor) or a.shape[1:] != b.shape[1:] or a.dim() < 2:
        raise ValueError(
            "a and b must be tensors (n, ...) with the same sample shape,"
            f" got {getattr(a, 'shape', a)} and {getattr(b, 'shape', b)}"
        )
    if min(a.shape[0], b.shape[0]) < 1 or projections < 1:
        raise ValueError("a and b must hold at least one sample each, and projections must be >= 1")
    a, b = a.flatten(1).double(), b.flatten(1).double()
    directions = torch.randn(a.shape[1], projections, generator=generator, dtype=torch.float64, device=a.device)
    directions = directions / directions.norm(dim=0, keepdim=True)
    # Nearest-rank quantiles at the midpoints of max(n, m) equal cells: for n == m these are the
    # sorted values, so equal sizes give the exact W2 of the projections.
    m = max(a.shape[0], b.shape[0])
    levels = (torch.arange(m, dtype=torch.float64, device=a.device) + 0.5) / m
    qa = torch.quantile(a @ directions, levels, dim=0, interpolation="nearest")
    qb = torch.quantile(b.to(a.device) @ directions, levels, dim=0, interpolation="nearest")
    return (qa - qb).pow(2).mean().sqrt()
