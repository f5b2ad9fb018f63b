"""The ops as torch.library custom ops: opcheck, and torch.compile(fullgraph=True) through them."""

import pytest
import torch

import sphere_ops
from helpers import BACKENDS, at_angle, tangent, unit

OPS = {
    "normalize": lambda x, y, v, t: (torch.ops.sphere_ops.normalize, (v, 1e-12)),
    "proju": lambda x, y, v, t: (torch.ops.sphere_ops.proju, (x, v)),
    "dist": lambda x, y, v, t: (torch.ops.sphere_ops.dist, (x, y)),
    "expmap": lambda x, y, v, t: (torch.ops.sphere_ops.expmap, (x, tangent(x))),
    "logmap": lambda x, y, v, t: (torch.ops.sphere_ops.logmap, (x, y)),
    "geodesic": lambda x, y, v, t: (torch.ops.sphere_ops.geodesic, (x, y, t)),
    "geodesic_velocity": lambda x, y, v, t: (torch.ops.sphere_ops.geodesic_velocity, (x, y, t)),
    "transp": lambda x, y, v, t: (torch.ops.sphere_ops.transp, (x, y, v)),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op", sorted(OPS))
def test_opcheck(backend: str, op: str) -> None:
    x = unit(3, 5, 6, dtype=torch.float32)
    y = at_angle(x, 1.2).float()
    v = torch.randn(3, 5, 6)
    t = torch.rand(3, 5, 1)
    fn, args = OPS[op](x, y, v, t)
    args = tuple(a.clone().requires_grad_(True) if isinstance(a, torch.Tensor) else a for a in args)
    with sphere_ops.backend(backend):
        torch.library.opcheck(fn, args)


def _rfm_loss(x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
    xt, ut = sphere_ops.geodesic_velocity(x0, x1, t)
    v = sphere_ops.proju(xt, pred * xt.shape[-1] ** 0.5)
    step = sphere_ops.expmap(xt, 0.1 * v)
    return (v - ut).pow(2).mean() + sphere_ops.dist(step, x1).mean() + sphere_ops.logmap(xt, x1).sum()


@pytest.mark.parametrize("backend", ["cpp", "torch"])
def test_compiles_with_fullgraph_and_matches_eager(backend: str) -> None:
    x0 = sphere_ops.random_uniform((2, 8), 16)
    x1 = sphere_ops.random_uniform((2, 8), 16)
    t = torch.rand(2, 1, 1)
    pred = torch.randn(2, 8, 16, requires_grad=True)
    compiled = torch.compile(_rfm_loss, fullgraph=True, backend="inductor")
    with sphere_ops.backend(backend):
        eager_loss = _rfm_loss(x0, x1, t, pred)
        (eager_grad,) = torch.autograd.grad(eager_loss, pred)
        loss = compiled(x0, x1, t, pred)
        (grad,) = torch.autograd.grad(loss, pred)
    torch.testing.assert_close(loss, eager_loss)
    torch.testing.assert_close(grad, eager_grad)
