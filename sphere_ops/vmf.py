"""Exact von Mises-Fisher samples on S^(D-1).

The density of vMF(mu, kappa) is proportional to ``exp(kappa <mu, x>)``. A draw
splits into the cosine ``w = <mu, x>``, which has the one-dimensional density
``(1 - w^2)^((D-3)/2) exp(kappa w)``, and a direction uniform on the sphere of
tangent vectors at ``mu``. ``w`` comes from Wood's rejection sampler (Wood 1994,
"Simulation of the von Mises Fisher distribution"), whose acceptance rate is
bounded away from 0 for every ``D`` and ``kappa``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._checks import check_point_like
from .ops import normalize

__all__ = ["random_vmf"]


def random_vmf(mu: Tensor, kappa: float | Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Draw one vMF(mu, kappa) sample per row of ``mu`` (..., D): a tensor shaped like ``mu``.

    ``kappa >= 0`` is a float or a tensor broadcastable to ``mu.shape[:-1]``;
    ``kappa = 0`` is the uniform distribution. ``E[<mu, x>] = I_{D/2}(kappa) /
    I_{D/2-1}(kappa)``. The cosine to ``mu`` is computed in float64 (its
    rejection test compares quantities of size ``kappa``); the result has the
    dtype of ``mu``. Each rejection round reads on the host how many rows are
    still waiting, so on a GPU this synchronizes once per round (one or two
    rounds in practice).

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> mu = sphere_ops.random_uniform((4, 16), 32, generator=g)
        >>> x = sphere_ops.random_vmf(mu, 50.0, generator=g)
        >>> x.shape, bool(((x * mu).sum(-1) > 0.5).all())
        (torch.Size([4, 16, 32]), True)
    """
    check_point_like("mu", mu)
    if mu.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"mu must be float32 or float64, got {mu.dtype}")
    norm_error = float((mu.norm(dim=-1) - 1).abs().max()) if mu.numel() else 0.0
    if not norm_error <= 1e-4:
        raise ValueError(f"mu must have unit rows (points on S^(D-1)); the largest | |mu| - 1 | is {norm_error:.3g}")
    kappa = torch.as_tensor(kappa, dtype=torch.float64, device=mu.device)
    try:
        kappa = kappa.broadcast_to(mu.shape[:-1])
    except RuntimeError:
        raise ValueError(
            f"kappa of shape {tuple(kappa.shape)} does not broadcast to mu.shape[:-1] = {tuple(mu.shape[:-1])}"
        ) from None
    if not bool(torch.isfinite(kappa).all()) or bool((kappa < 0).any()):
        raise ValueError("kappa must be finite and >= 0")

    one_minus_w = _wood_one_minus_cosine(kappa.reshape(-1), mu.shape[-1], generator).reshape(kappa.shape)
    # 1 - w (not w) keeps its digits when kappa is large and w is within an ulp of 1.
    cos = (1 - one_minus_w).unsqueeze(-1)
    sin = (one_minus_w * (2 - one_minus_w)).clamp_min(0).sqrt().unsqueeze(-1)
    g = torch.randn(mu.shape, generator=generator, dtype=mu.dtype, device=mu.device)
    direction = normalize(g - (g * mu).sum(-1, keepdim=True) * mu)
    x = cos.to(mu.dtype) * mu + sin.to(mu.dtype) * direction
    return normalize(x)


def _wood_one_minus_cosine(kappa: Tensor, dim: int, generator: torch.Generator | None) -> Tensor:
    """``1 - w`` for ``w`` drawn from the vMF cosine density on S^(dim-1), one per entry of ``kappa`` (float64).

    Wood's proposal is ``w = (1 - (1 + b) z) / (1 - (1 - b) z)`` with ``z ~ Beta(a, a)``,
    ``a = (dim - 1) / 2``, accepted when ``kappa (w - x0) + (dim - 1) log((1 - x0 w) / (1 - x0^2)) >= log u``.
    Everything is written with ``1 - w`` and ``1 - x0`` so that nothing cancels at large kappa.
    """
    m1 = float(dim - 1)
    b = m1 / (2 * kappa + torch.sqrt(4 * kappa**2 + m1**2))  # the stable root of b^2 m1 + 4 kappa b - m1 = 0
    x0 = (1 - b) / (1 + b)
    one_minus_x0 = 2 * b / (1 + b)
    alpha = torch.full_like(kappa, m1 / 2)

    out = torch.empty_like(kappa)
    pending = torch.arange(kappa.numel(), device=kappa.device)
    while pending.numel():
        # Beta(a, a) as a ratio of gammas: torch.distributions.Beta cannot take a generator.
        g1 = torch._standard_gamma(alpha[pending], generator=generator)
        g2 = torch._standard_gamma(alpha[pending], generator=generator)
        z = g1 / (g1 + g2)
        u = torch.rand(pending.shape, generator=generator, dtype=torch.float64, device=kappa.device)
        bp, x0p, omx0 = b[pending], x0[pending], one_minus_x0[pending]
        omw = 2 * bp * z / (1 - (1 - bp) * z)
        log_ratio = kappa[pending] * (omx0 - omw) + m1 * (torch.log1p(x0p * omw / omx0) - torch.log1p(x0p))
        accept = log_ratio >= torch.log(u)
        out[pending[accept]] = omw[accept]
        pending = pending[~accept]
    return out
