"""The ops under torch.func: vmap batches as one fused call; jvp, grad and forward AD are exact."""

import warnings

import pytest
import torch
import torch.autograd.forward_ad as fwAD

import sphere_ops
from sphere_ops._spec import SPECS

from helpers import BACKENDS, at_angle, tangent, unit

CASES = {
    "normalize": (sphere_ops.normalize, lambda x, y, v, t: (v,)),
    "proju": (sphere_ops.proju, lambda x, y, v, t: (x, v)),
    "dist": (sphere_ops.dist, lambda x, y, v, t: (x, y)),
    "expmap": (sphere_ops.expmap, lambda x, y, v, t: (x, tangent(x))),
    "logmap": (sphere_ops.logmap, lambda x, y, v, t: (x, y)),
    "geodesic": (sphere_ops.geodesic, lambda x, y, v, t: (x, y, t)),
    "geodesic_velocity": (sphere_ops.geodesic_velocity, lambda x, y, v, t: (x, y, t)),
    "transp": (sphere_ops.transp, lambda x, y, v, t: (x, y, v)),
}


def _args(op: str, dtype: torch.dtype = torch.float64) -> tuple:
    x = unit(4, 3, 7)
    y = at_angle(x, torch.rand(4, 3, dtype=torch.float64) * 2.8 + 0.2)
    v, t = torch.randn(4, 3, 7, dtype=torch.float64), torch.rand(4, 3, 1, dtype=torch.float64)
    return tuple(a.to(dtype) for a in CASES[op][1](x, y, v, t))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op", sorted(SPECS))
def test_vmap_is_one_batched_call(backend: str, op: str) -> None:
    fn, args = CASES[op][0], _args(op, torch.float32)
    with sphere_ops.backend(backend), warnings.catch_warnings():
        warnings.simplefilter("error")  # vmap's per-sample fallback warns
        batched = torch.func.vmap(fn, in_dims=1, out_dims=1)(*args)
        direct = fn(*args)
    for b, d in zip(batched if isinstance(batched, tuple) else (batched,), direct if isinstance(direct, tuple) else (direct,)):
        torch.testing.assert_close(b, d)


def test_vmap_broadcasts_unbatched_arguments() -> None:
    x, y = unit(5, 8, dtype=torch.float32), unit(8, dtype=torch.float32)
    got = torch.func.vmap(sphere_ops.logmap, in_dims=(0, None))(x, y)
    torch.testing.assert_close(got, sphere_ops.logmap(x, y.expand_as(x)))


@pytest.mark.parametrize("op", sorted(SPECS))
def test_jvp_matches_finite_differences(op: str) -> None:
    fn, args = CASES[op][0], _args(op)
    tangents = tuple(torch.randn_like(a) for a in args)
    _, jvp_out = torch.func.jvp(fn, args, tangents)
    h = 1e-6
    plus = fn(*(a + h * t for a, t in zip(args, tangents)))
    minus = fn(*(a - h * t for a, t in zip(args, tangents)))
    plus, minus = (p if isinstance(p, tuple) else (p,) for p in (plus, minus))
    jvp_out = jvp_out if isinstance(jvp_out, tuple) else (jvp_out,)
    for j, p, m in zip(jvp_out, plus, minus):
        assert j.abs().max() > 0, "a zero tangent means the forward-mode derivative was dropped"
        torch.testing.assert_close(j, (p - m) / (2 * h), rtol=1e-5, atol=1e-6)


def test_forward_ad_dual_tensors_carry_tangents() -> None:
    x, u = _args("expmap")
    du = torch.randn_like(u)
    with fwAD.dual_level():
        out = sphere_ops.expmap(x, fwAD.make_dual(u, du))
        tangent_out = fwAD.unpack_dual(out).tangent
    _, expected = torch.func.jvp(lambda w: sphere_ops.expmap(x, w), (u,), (du,))
    torch.testing.assert_close(tangent_out, expected)


@pytest.mark.parametrize("op", ["logmap", "geodesic_velocity", "transp", "dist"])
def test_func_grad_equals_the_fused_backward(op: str) -> None:
    fn, args = CASES[op][0], _args(op)

    def loss(*a):
        out = fn(*a)
        return sum(o.pow(2).sum() for o in (out if isinstance(out, tuple) else (out,)))

    got = torch.func.grad(loss, argnums=tuple(range(len(args))))(*args)
    leaves = [a.clone().requires_grad_(True) for a in args]
    expected = torch.autograd.grad(loss(*leaves), leaves)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op", ["logmap", "expmap", "geodesic_velocity", "transp", "dist", "normalize"])
def test_double_backward(backend: str, op: str) -> None:
    fn, args = CASES[op][0], _args(op)
    leaves = tuple(a.clone().requires_grad_(True) for a in args)
    with sphere_ops.backend(backend):
        assert torch.autograd.gradgradcheck(fn, leaves, eps=1e-6, atol=1e-6)
