"""The implementations the kernel benchmark compares, op by op.

* ``sphere_ops:<backend>``: this project's ops on one backend (``auto`` too);
* ``eager``: the formulas a user writes in plain torch (``acos`` of a clamped dot
  product, slerp weights, ``F.normalize``);
* ``compile``: the same formulas under ``torch.compile``;
* ``geoopt``: ``geoopt.Sphere`` (a geodesic is an expmap of a scaled logmap; its
  velocity is ``logmap(x_t, x_1) / (1 - t)``, since geoopt's ``transp`` is a
  projection, not parallel transport);
* ``flow_matching``: ``flow_matching``'s ``Sphere``, its ``geodesic`` (vmapped over
  rows, each with its own time) and, for the velocity, ``GeodesicProbPath``
  (vmap + jvp), as its RFM examples use it.

Every implementation takes the same inputs (see :func:`make_inputs`) and returns
a tuple of outputs.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

import sphere_ops

OPS = ("normalize", "proju", "dist", "expmap", "logmap", "geodesic", "geodesic_velocity", "transp")
Impl = Callable[..., tuple[Tensor, ...]]

_EPS = 1e-7


def make_inputs(op: str, rows: int, dim: int, dtype: torch.dtype, device: torch.device, seed: int = 0) -> dict:
    """Random inputs for ``op``: unit rows, tangent vectors, times in (0, 1)."""
    g = torch.Generator(device=device).manual_seed(seed)
    x = sphere_ops.random_uniform((rows,), dim, generator=g, device=device)
    y = sphere_ops.random_uniform((rows,), dim, generator=g, device=device)
    u = sphere_ops.proju(x, torch.randn(rows, dim, generator=g, device=device) / dim**0.5)
    t = torch.rand(rows, 1, generator=g, device=device)
    inputs = {
        "normalize": {"x": torch.randn(rows, dim, generator=g, device=device)},
        "proju": {"x": x, "u": u},
        "dist": {"x": x, "y": y},
        "expmap": {"x": x, "u": u},
        "logmap": {"x": x, "y": y},
        "geodesic": {"x0": x, "x1": y, "t": t},
        "geodesic_velocity": {"x0": x, "x1": y, "t": t},
        "transp": {"x": x, "y": y, "v": u},
    }[op]
    return {k: (v if k == "t" else v.to(dtype)) for k, v in inputs.items()}


# ----------------------------------------------------------------- eager formulas


def _dot(a: Tensor, b: Tensor) -> Tensor:
    return (a * b).sum(-1, keepdim=True)


def _eager_slerp(x0: Tensor, x1: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    theta = torch.acos(_dot(x0, x1).clamp(-1 + _EPS, 1 - _EPS))
    return theta, torch.sin(theta), (1 - t) * theta, t * theta


def _eager_geodesic(x0: Tensor, x1: Tensor, t: Tensor) -> tuple[Tensor]:
    _, sin_theta, a, b = _eager_slerp(x0, x1, t)
    return ((torch.sin(a) * x0 + torch.sin(b) * x1) / sin_theta,)


def _eager_geodesic_velocity(x0: Tensor, x1: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    theta, sin_theta, a, b = _eager_slerp(x0, x1, t)
    xt = (torch.sin(a) * x0 + torch.sin(b) * x1) / sin_theta
    ut = theta * (torch.cos(b) * x1 - torch.cos(a) * x0) / sin_theta
    return xt, ut


def _eager_expmap(x: Tensor, u: Tensor) -> tuple[Tensor]:
    n = u.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return (torch.cos(n) * x + torch.sin(n) / n * u,)


def _eager_logmap(x: Tensor, y: Tensor) -> tuple[Tensor]:
    dot = _dot(x, y).clamp(-1 + _EPS, 1 - _EPS)
    v = y - dot * x
    return (torch.acos(dot) * v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12),)


EAGER: dict[str, Impl] = {
    "normalize": lambda x: (F.normalize(x, dim=-1),),
    "proju": lambda x, u: (u - _dot(x, u) * x,),
    "dist": lambda x, y: (torch.acos(_dot(x, y).squeeze(-1).clamp(-1, 1)),),
    "expmap": _eager_expmap,
    "logmap": _eager_logmap,
    "geodesic": _eager_geodesic,
    "geodesic_velocity": _eager_geodesic_velocity,
    "transp": lambda x, y, v: (v - _dot(y, v) / (1 + _dot(x, y)) * (x + y),),
}


# ----------------------------------------------------------------- this project


def _ours(op: str, backend: str) -> Impl:
    fn = getattr(sphere_ops, op)

    def run(*args: Tensor) -> tuple[Tensor, ...]:
        with sphere_ops.backend(backend):
            out = fn(*args)
        return out if isinstance(out, tuple) else (out,)

    return run


# ----------------------------------------------------------------- geoopt and flow_matching


def _geoopt(op: str) -> Impl | None:
    try:
        import geoopt
    except ImportError:
        return None
    m = geoopt.Sphere()

    def geodesic_velocity(x0: Tensor, x1: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        xt = m.expmap(x0, t * m.logmap(x0, x1))
        return xt, m.logmap(xt, x1) / (1 - t)

    return {
        "normalize": lambda x: (m.projx(x),),
        "proju": lambda x, u: (m.proju(x, u),),
        "dist": lambda x, y: (m.dist(x, y),),
        "expmap": lambda x, u: (m.expmap(x, u),),
        "logmap": lambda x, y: (m.logmap(x, y),),
        "geodesic": lambda x0, x1, t: (m.expmap(x0, t * m.logmap(x0, x1)),),
        "geodesic_velocity": geodesic_velocity,
        "transp": lambda x, y, v: (m.transp(x, y, v),),
    }[op]


def _flow_matching(op: str) -> Impl | None:
    try:
        from flow_matching.path import GeodesicProbPath
        from flow_matching.path.scheduler import CondOTScheduler
        from flow_matching.utils.manifolds import Sphere, geodesic
    except ImportError:
        return None
    m = Sphere()

    def one_geodesic(x0: Tensor, x1: Tensor, t: Tensor) -> Tensor:
        return geodesic(m, x0, x1)(t).reshape(x0.shape)

    def geodesic_velocity(x0: Tensor, x1: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        sample = GeodesicProbPath(CondOTScheduler(), m).sample(x0, x1, t.squeeze(-1))
        return sample.x_t, sample.dx_t

    return {
        "normalize": lambda x: (m.projx(x),),
        "proju": lambda x, u: (m.proju(x, u),),
        "dist": lambda x, y: (m.dist(x, y),),
        "expmap": lambda x, u: (m.expmap(x, u),),
        "logmap": lambda x, y: (m.logmap(x, y),),
        "geodesic": lambda x0, x1, t: (torch.vmap(one_geodesic)(x0, x1, t),),
        "geodesic_velocity": geodesic_velocity,
    }.get(op)


def implementations(op: str, device: torch.device, backends: tuple[str, ...] | None = None) -> dict[str, Impl]:
    """Every implementation of ``op`` that can run on ``device``, by name."""
    names = backends or ("auto", "cpp", "triton", "torch")
    impls: dict[str, Impl] = {}
    for name in names:
        # Interpreted Triton on a CPU measures the interpreter, not the kernels.
        if name == "triton" and device.type != "cuda":
            continue
        if sphere_ops.available(name, device):
            impls[f"sphere_ops:{name}"] = _ours(op, name)
    impls["eager"] = EAGER[op]
    impls["compile"] = torch.compile(EAGER[op], dynamic=False)
    for name, factory in (("geoopt", _geoopt), ("flow_matching", _flow_matching)):
        impl = factory(op)
        if impl is not None:
            impls[name] = impl
    return impls
