"""Meta's ``flow_matching`` library on the fused sphere kernels.

:class:`FusedSphere` implements ``flow_matching.utils.manifolds.Manifold``, so
``flow_matching.path.GeodesicProbPath`` and
``flow_matching.solver.RiemannianODESolver`` run on :mod:`sphere_ops`. Needs the
``flow-matching`` extra: ``pip install dinosae[flow-matching]``.

``GeodesicProbPath`` takes the path velocity with ``torch.func.jvp`` inside
``torch.func.vmap``: the ops batch under vmap as one fused call, and under jvp
they differentiate their reference formulas (see :mod:`sphere_ops.ops`). For
training, ``sphere_ops.geodesic_velocity`` gives the same ``(x_t, dx_t)`` in one
fused pass.
"""

from __future__ import annotations

import torch
from torch import Tensor

try:
    from flow_matching.utils.manifolds import Manifold
except ImportError as err:
    raise ImportError(
        "sphere_ops.flow_matching needs Meta's flow_matching library, which is not installed;"
        " install the `flow-matching` extra: pip install dinosae[flow-matching]"
    ) from err

from . import ops

__all__ = ["FusedSphere"]


class FusedSphere(Manifold):
    """The unit sphere S^(D-1) of ``flow_matching``, on the fused :mod:`sphere_ops` kernels.

    A drop-in for ``flow_matching.utils.manifolds.Sphere``: rows ``(..., D)``
    are points, arguments broadcast against each other. Unlike that class it
    stays finite where ``x == y`` (``logmap`` is 0), follows a fixed great
    circle between antipodal points (``logmap`` has norm pi), and keeps float32
    accuracy at small angles.

    ``GeodesicProbPath`` wants one time per sample and points ``(B, D)``;
    latents ``(B, N, D)`` go in as ``(B * N, D)`` with ``t`` repeated N times.

    Example:
        >>> import torch, sphere_ops
        >>> from flow_matching.path import GeodesicProbPath
        >>> from flow_matching.path.scheduler import CondOTScheduler
        >>> from sphere_ops.flow_matching import FusedSphere
        >>> path = GeodesicProbPath(CondOTScheduler(), FusedSphere())
        >>> x0, x1 = sphere_ops.random_uniform(8, 32), sphere_ops.random_uniform(8, 32)
        >>> sample = path.sample(x_0=x0, x_1=x1, t=torch.rand(8))
        >>> xt, ut = sphere_ops.geodesic_velocity(x0, x1, sample.t)
        >>> torch.allclose(sample.dx_t, ut, atol=1e-5)
        True
    """

    def expmap(self, x: Tensor, u: Tensor) -> Tensor:
        """Follow the geodesic from ``x`` with initial velocity ``u``."""
        return ops.expmap(*torch.broadcast_tensors(x, u))

    def logmap(self, x: Tensor, y: Tensor) -> Tensor:
        """The tangent vector at ``x`` pointing to ``y``, of norm ``dist(x, y)``."""
        return ops.logmap(*torch.broadcast_tensors(x, y))

    def projx(self, x: Tensor) -> Tensor:
        """Normalize every row onto the sphere."""
        return ops.normalize(x)

    def proju(self, x: Tensor, u: Tensor) -> Tensor:
        """Project ``u`` onto the tangent space at ``x``."""
        return ops.proju(*torch.broadcast_tensors(x, u))
