"""The spaces a flow runs in, as objects: the product of spheres (:class:`Sphere`) and R^D (:class:`Euclidean`).

A state ``x`` (B, ..., D) is always in data units: unit tokens on the sphere,
latents as they are in R^D. A manifold owns everything that depends on the
geometry, so that losses and solvers never branch on it:

- ``prior``: the noise at t = 0;
- ``interpolate``: the point x_t between noise and data and its velocity;
- ``to_model`` / ``from_model``: the scale at which the network sees a point
  (``scale``) and the map from its output back to data units, where a
  velocity is projected onto the tangent space and an endpoint (the output
  added to x_t) onto the manifold;
- ``step``: follow a velocity (the exponential map, or a projection retraction);
- ``logmap`` / ``transport`` / ``dist``: what the solvers and metrics need.

The network works at one scale: it sees ``scale * x`` and predicts velocities
of that size, so that its inputs and targets have coordinates of about unit
size whatever D is. On the sphere this scale is the radius of the sphere
the network sees (the HAE paper's R); in R^D it is the factor that gives a
unit token the norm of a standard Gaussian token.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

import sphere_ops
from dinosae.flow.names import MANIFOLDS, check_name

__all__ = ["Manifold", "Sphere", "Euclidean", "make_manifold", "STEPS"]

# How a step follows a velocity on the sphere: the exponential map, or x + u projected back onto the sphere.
STEPS = ("exp", "project")


class Manifold:
    """What the flow-matching losses and solvers ask of a space; see :class:`Sphere` and :class:`Euclidean`.

    Example:
        >>> isinstance(Sphere(4.0), Manifold), isinstance(Euclidean(4.0), Manifold)
        (True, True)
    """

    name: str
    scale: float

    def __init__(self, scale: float) -> None:
        if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
            raise ValueError(f"the scale of a {type(self).__name__} must be a finite number > 0, got {scale!r}")
        self.scale = float(scale)

    def prior(self, shape: Sequence[int], *, generator: torch.Generator | None = None,
              dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> Tensor:
        raise NotImplementedError

    def interpolate(self, x0: Tensor, x1: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def project(self, x: Tensor, v: Tensor) -> Tensor:
        raise NotImplementedError

    def project_point(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def step(self, x: Tensor, u: Tensor) -> Tensor:
        raise NotImplementedError

    def logmap(self, x: Tensor, y: Tensor) -> Tensor:
        raise NotImplementedError

    def transport(self, x: Tensor, y: Tensor, v: Tensor) -> Tensor:
        raise NotImplementedError

    def dist(self, x: Tensor, y: Tensor) -> Tensor:
        raise NotImplementedError

    def check_points(self, x: Tensor, name: str) -> None:
        """A ``ValueError`` naming ``name`` if ``x`` is not on the manifold (reads one number on the host)."""

    def to_model(self, x: Tensor) -> Tensor:
        """The point as the network sees it: ``scale * x``.

        Example:
            >>> Sphere(2.0).to_model(torch.tensor([[0.6, 0.8]]))
            tensor([[1.2000, 1.6000]])
        """
        return x * self.scale

    def from_model(self, x: Tensor, out: Tensor, prediction: str, *, project: bool = True) -> Tensor:
        """The network's output ``out`` at ``x`` in data units: a velocity (made tangent at ``x`` when
        ``project``) or an endpoint (``x + out``, put on the manifold).

        Example:
            >>> x = torch.tensor([[1.0, 0.0]])
            >>> Sphere(2.0).from_model(x, torch.tensor([[4.0, 2.0]]), "velocity")
            tensor([[0., 1.]])
            >>> Sphere(2.0).from_model(x, torch.tensor([[-2.0, 3.0]]), "x1")
            tensor([[0., 1.]])
        """
        out = out / self.scale
        if prediction == "x1":
            # The endpoint is the output added to the point the network sees: a zero-initialized last layer
            # then predicts x1 = x_t (zero velocity), where a bare output of 0 has no direction on the sphere.
            return self.project_point(x + out)
        return self.project(x, out) if project else out

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.scale:g})"


class Sphere(Manifold):
    """The product of unit spheres S^(D-1) over every leading axis (tokens), seen by the network at ``radius``.

    ``step="exp"`` follows velocities along geodesics (``x <- expmap(x, u)``); ``"project"`` is the
    cheaper retraction ``x <- normalize(x + u)``, which agrees with it to second order in ``|u|``. The
    interpolant is the geodesic from x0 to x1 at constant speed, with its velocity in one fused call.

    Example:
        >>> sphere = Sphere(radius=4.0)
        >>> x0 = sphere.prior((2, 3, 8), generator=torch.Generator().manual_seed(0))
        >>> x1 = sphere.prior((2, 3, 8), generator=torch.Generator().manual_seed(1))
        >>> xt, ut = sphere.interpolate(x0, x1, torch.full((2, 1, 1), 0.5))
        >>> bool(torch.allclose(xt.norm(dim=-1), torch.ones(2, 3))), bool((xt * ut).sum(-1).abs().max() < 1e-5)
        (True, True)
    """

    name = "sphere"

    def __init__(self, radius: float, step: str = "exp") -> None:
        super().__init__(radius)
        if step not in STEPS:
            raise ValueError(f"step must be one of {STEPS}, got {step!r}")
        self.step_kind = step

    @property
    def radius(self) -> float:
        return self.scale

    def prior(self, shape: Sequence[int], *, generator: torch.Generator | None = None,
              dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> Tensor:
        """Uniform points on each sphere, of ``shape`` (..., D).

        Example:
            >>> Sphere(1.0).prior((4, 3)).norm(dim=-1).round(decimals=5)
            tensor([1., 1., 1., 1.])
        """
        shape = tuple(shape)
        return sphere_ops.random_uniform(shape[:-1], shape[-1], generator=generator, dtype=dtype, device=device)

    def interpolate(self, x0: Tensor, x1: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """x_t on the shortest arc from x0 to x1 and its velocity d x_t / dt (``t`` broadcasts to x[..., :1])."""
        return sphere_ops.geodesic_velocity(x0, x1, t)

    def project(self, x: Tensor, v: Tensor) -> Tensor:
        """``v`` projected onto the tangent space at ``x``."""
        return sphere_ops.proju(x, v)

    def project_point(self, x: Tensor) -> Tensor:
        """Every token normalized onto its sphere."""
        return sphere_ops.normalize(x)

    def step(self, x: Tensor, u: Tensor) -> Tensor:
        """Follow the tangent vector ``u`` from ``x``: ``expmap(x, u)``, or ``normalize(x + u)``.

        Example:
            >>> x, u = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, math.pi / 2]])
            >>> Sphere(1.0).step(x, u).round(decimals=6).abs()
            tensor([[0., 1.]])
        """
        if self.step_kind == "exp":
            return sphere_ops.expmap(x, u)
        return sphere_ops.normalize(x + u)

    def logmap(self, x: Tensor, y: Tensor) -> Tensor:
        """The tangent vector at ``x`` whose geodesic reaches ``y`` at time 1."""
        return sphere_ops.logmap(x, y)

    def transport(self, x: Tensor, y: Tensor, v: Tensor) -> Tensor:
        """``v``, tangent at ``y``, carried to ``x`` along the geodesic."""
        return sphere_ops.transp(y, x, v)

    def dist(self, x: Tensor, y: Tensor) -> Tensor:
        """The geodesic distance per token (...,)."""
        return sphere_ops.dist(x, y)

    def check_points(self, x: Tensor, name: str) -> None:
        """A ``ValueError`` unless every token of ``x`` is a unit vector (to its dtype's rounding).

        Example:
            >>> Sphere(1.0).check_points(torch.tensor([[3.0, 4.0]]), "x1")
            Traceback (most recent call last):
            ...
            ValueError: x1 must have unit tokens (points on S^(D-1)); the largest | |x| - 1 | is 4
        """
        tol = 1e-3 if x.dtype in (torch.float32, torch.float64) else 2e-2  # half precision: unit to its rounding
        error = float((x.float().norm(dim=-1) - 1).abs().max())
        if not error <= tol:
            raise ValueError(f"{name} must have unit tokens (points on S^(D-1)); the largest | |x| - 1 | is "
                             f"{error:.3g}")

    def __repr__(self) -> str:
        return f"Sphere(radius={self.scale:g}, step={self.step_kind!r})"


class Euclidean(Manifold):
    """R^D with a straight path from Gaussian noise; the network sees ``scale * x``.

    The noise is N(0, I / scale^2), so that at the network's scale it is a standard Gaussian; with
    ``scale = sqrt(D)`` a unit token has the norm of a standard Gaussian draw.

    Example:
        >>> flat = Euclidean(scale=2.0)
        >>> x0, x1 = torch.zeros(1, 2) + 1.0, torch.tensor([[3.0, 5.0]])
        >>> flat.interpolate(x0, x1, torch.tensor([[0.5]]))
        (tensor([[2., 3.]]), tensor([[2., 4.]]))
    """

    name = "euclidean"

    def prior(self, shape: Sequence[int], *, generator: torch.Generator | None = None,
              dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> Tensor:
        """Gaussian noise of standard deviation ``1 / scale``.

        Example:
            >>> round(Euclidean(10.0).prior((100_000, 2)).std().item(), 2)
            0.1
        """
        return torch.randn(tuple(shape), generator=generator, dtype=dtype, device=device) / self.scale

    def interpolate(self, x0: Tensor, x1: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """The straight path: ``x_t = (1 - t) x0 + t x1`` and its velocity ``x1 - x0``."""
        t = t.to(x1.dtype)
        return (1 - t) * x0 + t * x1, x1 - x0

    def project(self, x: Tensor, v: Tensor) -> Tensor:
        """Every vector is tangent: ``v``."""
        return v

    def project_point(self, x: Tensor) -> Tensor:
        """Every point is on R^D: ``x``."""
        return x

    def step(self, x: Tensor, u: Tensor) -> Tensor:
        """``x + u``."""
        return x + u

    def logmap(self, x: Tensor, y: Tensor) -> Tensor:
        """``y - x``."""
        return y - x

    def transport(self, x: Tensor, y: Tensor, v: Tensor) -> Tensor:
        """Vectors need no transport: ``v``."""
        return v

    def dist(self, x: Tensor, y: Tensor) -> Tensor:
        """The Euclidean distance per token (...,)."""
        return (x - y).norm(dim=-1)

    def __repr__(self) -> str:
        return f"Euclidean(scale={self.scale:g})"


def make_manifold(name: str, dim: int, radius: float | None = None, step: str = "exp") -> Manifold:
    """The manifold a config names, for tokens of width ``dim``; ``radius`` None is ``sqrt(dim)``.

    Example:
        >>> make_manifold("sphere", 16), make_manifold("euclidean", 16, 2.0)
        (Sphere(radius=4, step='exp'), Euclidean(scale=2))
    """
    check_name("manifold", name, MANIFOLDS)
    scale = math.sqrt(dim) if radius is None else radius
    return Sphere(scale, step) if name == "sphere" else Euclidean(scale)
