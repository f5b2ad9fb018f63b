"""FusedSphere: flow_matching's Manifold interface (paths and ODE solver) on the fused sphere ops."""

from __future__ import annotations

import importlib
import sys

import pytest
import torch
from flow_matching.path import GeodesicProbPath, PathSample
from flow_matching.path.scheduler import CondOTScheduler
from flow_matching.solver import RiemannianODESolver
from flow_matching.utils import ModelWrapper
from flow_matching.utils.manifolds import Sphere
from torch.func import jvp, vmap

import sphere_ops
from sphere_ops import ops
from sphere_ops.flow_matching import FusedSphere

from helpers import BACKENDS, PI, at_angle, tangent, unit

# torch warns of a "performance drop" when vmap falls back to looping over the batch.
ONE_FUSED_CALL = pytest.mark.filterwarnings("error:.*performance drop")


def path_sample(manifold, x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor) -> PathSample:
    return GeodesicProbPath(CondOTScheduler(), manifold).sample(x_0=x0, x_1=x1, t=t)


def test_import_without_flow_matching_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m == "flow_matching" or m.startswith("flow_matching.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.delitem(sys.modules, "sphere_ops.flow_matching")
    with pytest.raises(ImportError, match=r"pip install dinosae\[flow-matching\]"):
        importlib.import_module("sphere_ops.flow_matching")


@ONE_FUSED_CALL
@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, 1e-12), (torch.float32, 2e-6)])
def test_geodesic_path_matches_flow_matching_sphere(name: str, dtype: torch.dtype, tol: float) -> None:
    # Random points in 16 dims are far from equal and from antipodal, where Sphere is accurate.
    x0, x1 = unit(64, 16, dtype=dtype), unit(64, 16, dtype=dtype)
    t = torch.rand(64, dtype=dtype)
    expected = path_sample(Sphere(), x0, x1, t)
    with sphere_ops.backend(name):
        got = path_sample(FusedSphere(), x0, x1, t)
    torch.testing.assert_close(got.x_t, expected.x_t, rtol=0, atol=tol)
    torch.testing.assert_close(got.dx_t, expected.dx_t, rtol=0, atol=tol * 4)
    # ... and both are the fused geodesic and its velocity.
    xt, ut = sphere_ops.geodesic_velocity(x0, x1, t[:, None])
    torch.testing.assert_close(got.x_t, xt, rtol=0, atol=tol)
    torch.testing.assert_close(got.dx_t, ut, rtol=0, atol=tol * 4)


def test_geodesic_path_is_exact_at_equal_points() -> None:
    x0 = unit(64, 8)
    # flow_matching's Sphere takes acos of a dot product that rounds above 1 on some rows.
    assert torch.isnan(Sphere().dist(x0, x0)).any()
    assert torch.equal(FusedSphere().logmap(x0, x0), torch.zeros_like(x0))

    got = path_sample(FusedSphere(), x0, x0, torch.rand(64, dtype=x0.dtype))
    torch.testing.assert_close(got.x_t, x0)
    assert torch.equal(got.dx_t, torch.zeros_like(x0))


def test_geodesic_path_crosses_to_antipodal_points() -> None:
    x0 = unit(16, 8)
    t = torch.linspace(0, 1, 16, dtype=x0.dtype)
    # flow_matching's Sphere finds no direction between x and -x: its path never leaves x0.
    assert path_sample(Sphere(), x0, -x0, t).dx_t.norm(dim=-1).max() < 1e-3

    got = path_sample(FusedSphere(), x0, -x0, t)
    assert torch.isfinite(got.x_t).all() and torch.isfinite(got.dx_t).all()
    torch.testing.assert_close(got.dx_t.norm(dim=-1), torch.full((16,), PI, dtype=x0.dtype))
    torch.testing.assert_close(got.x_t.norm(dim=-1), torch.ones(16, dtype=x0.dtype))
    torch.testing.assert_close(sphere_ops.dist(got.x_t, x0), PI * t)
    torch.testing.assert_close(got.x_t[-1], -x0[-1])


def test_geodesic_path_keeps_float32_accuracy_at_small_angles() -> None:
    # Points exact in float32, so that float64 on the same points is the truth.
    x0 = unit(32, 16).float()
    x1 = at_angle(x0, torch.logspace(-4, -2, 32)).float()
    t = torch.rand(32)
    exact = path_sample(FusedSphere(), x0.double(), x1.double(), t.double()).dx_t

    def rel_error(manifold) -> float:
        dx_t = path_sample(manifold, x0, x1, t).dx_t.double()
        return ((dx_t - exact).norm(dim=-1) / exact.norm(dim=-1)).max().item()

    assert rel_error(FusedSphere()) < 2e-6
    assert rel_error(Sphere()) > 1e-2  # acos of a float32 dot product


class TowardTarget(ModelWrapper):
    """The constant-speed geodesic flow that reaches ``target`` at t = 1: v = log_x(target) / (1 - t)."""

    def __init__(self, manifold: FusedSphere, target: torch.Tensor) -> None:
        super().__init__(torch.nn.Identity())
        self.manifold, self.target = manifold, target

    def forward(self, x: torch.Tensor, t: torch.Tensor, **extras) -> torch.Tensor:
        return self.manifold.logmap(x, self.target.expand_as(x)) / (1 - t)


# rk4 would evaluate the field at t = 1, where it is 0 / 0; the step errors shrink like step^3.
@pytest.mark.parametrize(("method", "tol"), [("euler", 3e-5), ("midpoint", 1e-5)])
def test_riemannian_ode_solver_follows_the_flow_to_its_target(method: str, tol: float) -> None:
    manifold = FusedSphere()
    target = unit(8, dtype=torch.float32)
    x_init = unit(32, 8, dtype=torch.float32)
    targets = target.expand_as(x_init)
    solver = RiemannianODESolver(manifold, TowardTarget(manifold, target))
    grid = torch.linspace(0, 1, 5)
    path = solver.sample(x_init, step_size=1 / 64, method=method, time_grid=grid, return_intermediates=True)
    assert path.shape == (5, 32, 8)
    assert ((path.norm(dim=-1) - 1).abs() <= 4e-7).all()
    torch.testing.assert_close(path[0], x_init)
    assert sphere_ops.dist(path[-1], targets).max() < tol
    # At every time t, each point has covered the fraction t of its initial distance.
    start = sphere_ops.dist(x_init, targets)
    for t, points in zip(grid, path):
        torch.testing.assert_close(sphere_ops.dist(points, targets), (1 - t) * start, atol=1e-3, rtol=0)


def central_difference(
    f, primals: tuple[torch.Tensor, ...], tangents: tuple[torch.Tensor, ...], h: float = 1e-6
) -> torch.Tensor:
    plus = f(*(p + h * d for p, d in zip(primals, tangents)))
    minus = f(*(p - h * d for p, d in zip(primals, tangents)))
    return (plus - minus) / (2 * h)


def test_expmap_jvp_matches_finite_differences() -> None:
    x = unit(40, 7)
    u = tangent(x) * torch.logspace(-5, 0.4, 40, dtype=torch.float64)[:, None]
    u[0] = 0
    u[1] += 0.3 * x[1]  # not tangent: the op normalizes, so must its derivative
    dx, du = torch.randn_like(x), torch.randn_like(u)
    m = FusedSphere()
    out, got = jvp(m.expmap, (x, u), (dx, du))
    torch.testing.assert_close(out, ops.expmap(x, u))
    torch.testing.assert_close(got, central_difference(ops.expmap, (x, u), (dx, du)), rtol=0, atol=1e-7)
    _, got32 = jvp(m.expmap, (x.float(), u.float()), (dx.float(), du.float()))
    torch.testing.assert_close(got32.double(), got, rtol=0, atol=1e-5)


@pytest.mark.parametrize("method", ["proju", "projx"])
def test_projection_jvps_match_finite_differences(method: str) -> None:
    x = 1.5 * unit(10, 6)
    u = torch.randn_like(x)
    m = FusedSphere()
    f, reference = {"proju": (m.proju, ops.proju), "projx": (m.projx, ops.normalize)}[method]
    primals = (x, u) if method == "proju" else (x,)
    tangents = tuple(torch.randn_like(p) for p in primals)
    _, got = jvp(f, primals, tangents)
    torch.testing.assert_close(got, central_difference(reference, primals, tangents), rtol=0, atol=1e-7)


def test_logmap_jvp_matches_finite_differences() -> None:
    x = unit(30, 6)
    y = ops.expmap(x, tangent(x) * torch.linspace(0.05, 3.0, 30, dtype=torch.float64)[:, None])
    dx, dy = torch.randn_like(x), torch.randn_like(y)
    _, got = jvp(FusedSphere().logmap, (x, y), (dx, dy))
    torch.testing.assert_close(got, central_difference(ops.logmap, (x, y), (dx, dy)), rtol=0, atol=1e-6)


@ONE_FUSED_CALL
def test_vmap_makes_one_fused_call_per_map() -> None:
    m = FusedSphere()
    x, y = unit(4, 3, 6), unit(3, 6)
    u = tangent(x)
    expmap = vmap(m.expmap, in_dims=(1, 1))(x, u)
    logmap = vmap(m.logmap, in_dims=(0, None))(x, y)
    proju = vmap(m.proju, in_dims=(0, None))(x, y)
    projx = vmap(m.projx, in_dims=1)(2 * x)
    torch.testing.assert_close(expmap, ops.expmap(x, u).transpose(0, 1))
    torch.testing.assert_close(logmap, ops.logmap(x, y.expand_as(x)))
    torch.testing.assert_close(proju, ops.proju(x, y.expand_as(x)))
    torch.testing.assert_close(projx, x.transpose(0, 1))


@pytest.mark.parametrize(
    ("method", "op"),
    [("expmap", ops.expmap), ("logmap", ops.logmap), ("proju", ops.proju), ("projx", ops.normalize)],
)
def test_gradients_are_those_of_the_fused_ops(method: str, op) -> None:
    x, y = unit(5, 6), unit(5, 6)
    inputs = (x,) if method == "projx" else (x, tangent(x) if method == "expmap" else y)
    weights = torch.randn(5, 6, dtype=x.dtype)
    grads = []
    for f in (getattr(FusedSphere(), method), op):
        leaves = [t.clone().requires_grad_() for t in inputs]
        (f(*leaves) * weights).sum().backward()
        grads.append([t.grad for t in leaves])
    for got, expected in zip(*grads):
        torch.testing.assert_close(got, expected)


def test_maps_broadcast_their_arguments() -> None:
    m = FusedSphere()
    x, y = unit(4, 6), unit(6)
    torch.testing.assert_close(m.logmap(x, y), ops.logmap(x, y.expand_as(x)))
    torch.testing.assert_close(m.proju(y, x), ops.proju(y.expand_as(x), x))
