"""ODE samplers for flow-matching models: on the product of spheres, and the Euclidean baseline.

Both integrate ``dx/dt = v(x, t, y)`` from noise at t = 0 to data at t = 1 on a
time grid (:func:`time_grid`, optionally shifted towards noise), with Euler or
Heun steps. On the sphere a step is ``x <- expmap(x, h v)`` with ``v`` projected
onto the tangent space at ``x``, so every state is on the sphere; Heun averages
the slope at ``x`` and the slope at the Euler prediction after transporting the
latter back to ``x``.

Classifier-free guidance batches the conditional and the null-class inputs
into one model call and returns ``v_null + w (v_cond - v_null)``, optionally
only for times inside a guidance interval. The null class is ``model.num_classes``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Callable, NamedTuple

import torch
from torch import Tensor

import sphere_ops
from dinosae.generation.rfm import Model, time_shift

__all__ = ["time_grid", "sample_sphere", "sample_euclidean"]

Velocity = Callable[[Tensor, float], Tensor]
METHODS = ("euler", "heun")


def time_grid(steps: int, shift: float = 1.0) -> list[float]:
    """``steps + 1`` times from 0 (noise) to 1 (data), uniform and then warped by :func:`dinosae.generation.rfm.time_shift`.

    ``shift > 1`` puts smaller steps near noise. Plain floats: the samplers
    branch on them (guidance interval) without reading the device.

    Example:
        >>> time_grid(4, shift=3.0)
        [0.0, 0.1, 0.25, 0.5, 1.0]
    """
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    grid = time_shift(torch.linspace(0, 1, steps + 1, dtype=torch.float64), shift)
    # rounding away the last ulp makes the ends exactly 0 and 1 for every shift
    return [round(t, 15) for t in grid.tolist()]


@torch.no_grad()
def sample_sphere(
    model: Model,
    shape: Sequence[int],
    y: Tensor,
    *,
    steps: int = 50,
    method: str = "euler",
    cfg_scale: float = 1.0,
    guidance_interval: tuple[float, float] | None = None,
    shift: float = 1.0,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    noise: Tensor | None = None,
) -> Tensor:
    """Sample points (B, ..., D) on the product of spheres by integrating ``model`` from uniform noise.

    ``model(x, t, y)`` is a velocity field (put it in eval mode); its output
    is projected onto the tangent space at ``x`` here, so any field works.
    ``cfg_scale`` w gives ``v_null + w (v_cond - v_null)`` (w = 1: conditional
    only, one model call per evaluation), applied at times in
    ``guidance_interval = (lo, hi)`` when given and at every time otherwise.
    ``shift`` warps the time grid (:func:`time_grid`). The noise comes from
    ``generator`` on ``y``'s device, so a seeded generator gives the same samples;
    ``noise`` gives the starting points instead (unit tokens of ``shape``).

    Example:
        >>> from dinosae import create_model
        >>> model = create_model("dit-tiny", in_dim=16, grid_size=4, num_classes=10).eval()
        >>> x = sample_sphere(model, (2, 16, 16), torch.tensor([1, 2]), steps=4, method="heun", cfg_scale=2.0)
        >>> x.shape, bool(((x.norm(dim=-1) - 1).abs() < 1e-6).all())
        (torch.Size([2, 16, 16]), True)
    """
    shape = _check_request(shape, y, steps, method)
    x = _start(noise, shape, dtype, y.device) if noise is not None else sphere_ops.random_uniform(
        shape[:-1], shape[-1], generator=generator, dtype=dtype, device=y.device)
    guided = _guided_velocity(model, y, cfg_scale, guidance_interval)

    def tangent_velocity(x: Tensor, t: float) -> Tensor:
        return sphere_ops.proju(x, guided(x, t))

    return _integrate(_SPHERE, tangent_velocity, x, time_grid(steps, shift), method)


@torch.no_grad()
def sample_euclidean(
    model: Model,
    shape: Sequence[int],
    y: Tensor,
    *,
    steps: int = 50,
    method: str = "euler",
    cfg_scale: float = 1.0,
    guidance_interval: tuple[float, float] | None = None,
    shift: float = 1.0,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    scale: float | None = None,
    project: bool = True,
    noise: Tensor | None = None,
) -> Tensor:
    """Sample latents (B, ..., D) with a Euclidean flow-matching model (the baseline) from Gaussian noise.

    The ODE runs in the model's space, where data were scaled by ``scale``
    (default ``sqrt(D)``, as in :func:`dinosae.generation.rfm.euclidean_fm_loss`); the
    result is divided by it and, with ``project``, normalized onto the spheres,
    which is what a decoder of spherical latents takes. Other arguments as in
    :func:`sample_sphere` (``noise``: Gaussian starting points).

    Example:
        >>> from dinosae import create_model
        >>> model = create_model("dit-tiny", in_dim=16, grid_size=4, num_classes=10, manifold="euclidean").eval()
        >>> sample_euclidean(model, (2, 16, 16), torch.tensor([1, 2]), steps=4).shape
        torch.Size([2, 16, 16])
    """
    shape = _check_request(shape, y, steps, method)
    scale = shape[-1] ** 0.5 if scale is None else float(scale)
    x = _start(noise, shape, dtype, y.device) if noise is not None else torch.randn(
        shape, generator=generator, dtype=dtype, device=y.device)
    velocity = _guided_velocity(model, y, cfg_scale, guidance_interval)
    x = _integrate(_EUCLIDEAN, velocity, x, time_grid(steps, shift), method) / scale
    return sphere_ops.normalize(x) if project else x


# ---------------------------------------------------------------- integration


class _Geometry(NamedTuple):
    """How a solver moves: ``step(x, u)`` follows u from x; ``transport(x, z, v)`` carries v at z to x."""

    step: Callable[[Tensor, Tensor], Tensor]
    transport: Callable[[Tensor, Tensor, Tensor], Tensor]


_SPHERE = _Geometry(sphere_ops.expmap, lambda x, z, v: sphere_ops.transp(z, x, v))
_EUCLIDEAN = _Geometry(torch.add, lambda x, z, v: v)


def _integrate(geometry: _Geometry, velocity: Velocity, x: Tensor, grid: list[float], method: str) -> Tensor:
    for t0, t1 in zip(grid[:-1], grid[1:]):
        h = t1 - t0
        v0 = velocity(x, t0)
        if method == "euler":
            x = geometry.step(x, h * v0)
        else:
            predicted = geometry.step(x, h * v0)
            v1 = geometry.transport(x, predicted, velocity(predicted, t1))
            x = geometry.step(x, 0.5 * h * (v0 + v1))
    return x


def _guided_velocity(
    model: Model, y: Tensor, cfg_scale: float, guidance_interval: tuple[float, float] | None
) -> Velocity:
    """``v(x, t)`` for a float time: the conditional field, or its guided version where guidance applies."""
    guide = cfg_scale != 1.0
    if guide:
        if not hasattr(model, "num_classes"):
            raise ValueError("classifier-free guidance needs model.num_classes (the null class label)")
        y_both = torch.cat([y, torch.full_like(y, model.num_classes)])
    if guidance_interval is not None:
        lo, hi = guidance_interval
        if not 0.0 <= lo <= hi <= 1.0:
            raise ValueError(f"guidance_interval must be (lo, hi) with 0 <= lo <= hi <= 1, got {guidance_interval}")

    def velocity(x: Tensor, t: float) -> Tensor:
        time_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        tt = torch.full((x.shape[0],), t, dtype=time_dtype, device=x.device)
        if not guide or (guidance_interval is not None and not lo <= t <= hi):
            return model(x, tt, y).to(x.dtype)
        v_cond, v_null = model(torch.cat([x, x]), torch.cat([tt, tt]), y_both).to(x.dtype).chunk(2)
        return v_null + cfg_scale * (v_cond - v_null)

    return velocity


def _start(noise: Tensor, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> Tensor:
    if tuple(noise.shape) != shape:
        raise ValueError(f"noise must have the sample shape {shape}, got {tuple(noise.shape)}")
    return noise.to(device=device, dtype=dtype)


def _check_request(shape: Sequence[int], y: Tensor, steps: int, method: str) -> tuple[int, ...]:
    shape = tuple(int(n) for n in shape)
    if len(shape) < 2 or min(shape) < 1 or shape[-1] < 2:
        raise ValueError(f"shape must be (B, ..., D) with D >= 2, got {shape}")
    if not isinstance(y, Tensor) or y.shape != shape[:1]:
        raise ValueError(f"y must be a tensor of {shape[0]} labels, got {getattr(y, 'shape', type(y).__name__)}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    return shape
