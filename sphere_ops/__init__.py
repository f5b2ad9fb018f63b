"""Fused geometry on products of unit hyperspheres.

Every op works row-wise on tensors ``(..., D)`` whose rows are points on
S^(D-1) (or tangent vectors there); all leading dims form the product of
spheres. Ops are ``torch.library`` custom ops with fused forward and backward
kernels on three backends (``torch``, ``triton``, ``cpp``), chosen by
:func:`backend` / ``SPHERE_OPS_BACKEND``.

Example:
    >>> import torch, sphere_ops
    >>> x0 = sphere_ops.random_uniform((2, 16), 64)
    >>> x1 = sphere_ops.random_uniform((2, 16), 64)
    >>> xt, ut = sphere_ops.geodesic_velocity(x0, x1, torch.rand(2, 1, 1))
"""

from .backends import BackendUnavailable, available, backend, current as current_backend, set_backend
from .ops import dist, expmap, geodesic, geodesic_velocity, logmap, normalize, proju, transp
from .random import random_uniform
from .vmf import random_vmf

__all__ = [
    "BackendUnavailable",
    "available",
    "backend",
    "current_backend",
    "set_backend",
    "dist",
    "expmap",
    "geodesic",
    "geodesic_velocity",
    "logmap",
    "normalize",
    "proju",
    "transp",
    "random_uniform",
    "random_vmf",
]
