"""The numerical contract of DESIGN.md, for every backend that runs here, in float32.

Errors are measured against the float64 reference on the same float32 inputs.
"""

from __future__ import annotations

import math

import pytest
import torch

import sphere_ops
from sphere_ops import reference as R

from helpers import BACKENDS, PI, at_angle, row_rel, tangent, unit

ANGLES = [1e-4, 3e-4, 1e-3, 1e-2, 0.1, 1.0, PI / 2, 2.0, 3.0, 3.1, PI - 1e-3]
SMALL_ANGLES = [0.0, 1e-8, 1e-7, 1e-6, 1e-5, 9e-5]


def _pairs(angles: list[float], d: int, per_angle: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    x = unit(len(angles) * per_angle, d)
    theta = torch.tensor(angles, dtype=torch.float64).repeat_interleave(per_angle)
    y = at_angle(x, theta)
    return x.float(), y.float()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("d", [3, 768])
def test_dist_relative_error_at_every_angle(backend: str, d: int) -> None:
    x, y = _pairs(ANGLES, d)
    truth = R.dist(x.double(), y.double())
    with sphere_ops.backend(backend):
        got = sphere_ops.dist(x, y).double()
    rel = ((got - truth).abs() / truth).max().item()
    assert rel <= 1e-6, f"dist relative error {rel:.2e}"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("d", [3, 768])
def test_dist_absolute_error_below_1e4(backend: str, d: int) -> None:
    x, y = _pairs(SMALL_ANGLES, d)
    truth = R.dist(x.double(), y.double())
    with sphere_ops.backend(backend):
        got = sphere_ops.dist(x, y).double()
        assert (sphere_ops.dist(x, x) == 0).all()
    assert (got - truth).abs().max().item() <= 1e-6


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("d", [3, 768])
def test_logmap_relative_error_at_every_angle(backend: str, d: int) -> None:
    x, y = _pairs(ANGLES + SMALL_ANGLES[1:], d)
    truth = R.logmap(x.double(), y.double())
    with sphere_ops.backend(backend):
        got = sphere_ops.logmap(x, y)
    assert row_rel(got, truth).max().item() <= 2e-6


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("d", [2, 31, 768, 1100])
def test_point_outputs_have_unit_norm(backend: str, d: int) -> None:
    rows = 256
    x, y = _pairs([0.3, 1.0, 2.5, 3.1], d, per_angle=rows // 4)
    u = tangent(x.double(), 1.0).float() * torch.logspace(-6, 1.5, rows).unsqueeze(-1)
    raw = torch.randn(rows, d) * torch.logspace(-10, 15, rows).unsqueeze(-1)
    t = torch.rand(rows, 1)
    with sphere_ops.backend(backend):
        outputs = {
            "normalize": sphere_ops.normalize(raw),
            "expmap": sphere_ops.expmap(x, u),
            "geodesic": sphere_ops.geodesic(x, y, t),
        }
    for name, out in outputs.items():
        err = (out.double().norm(dim=-1) - 1).abs().max().item()
        assert err <= 4e-7, f"{name}: | |x| - 1 | = {err:.2e}"


def _singular_inputs(d: int) -> dict[str, list[torch.Tensor]]:
    x = unit(6, d, dtype=torch.float32)
    u = torch.zeros_like(x)
    return {
        "dist": [x, x.clone()],
        "logmap": [x, x.clone()],
        "expmap": [x, u],
        "transp": [x, x.clone(), tangent(x.double()).float()],
        "geodesic_t0": [x, at_angle(x, 1.0).float(), torch.zeros(6, 1)],
        "geodesic_t1": [x, at_angle(x, 1.0).float(), torch.ones(6, 1)],
        "geodesic_same": [x, x.clone(), torch.rand(6, 1)],
        "dist_antipodal": [x, -x],
        "logmap_antipodal": [x, -x],
        "transp_antipodal": [x, -x, tangent(x.double()).float()],
        "geodesic_antipodal": [x, -x, torch.rand(6, 1)],
    }


def _call(name: str, *args: torch.Tensor):
    op = name.split("_")[0]
    if op == "geodesic":
        return sphere_ops.geodesic_velocity(*args)
    return getattr(sphere_ops, op)(*args)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("d", [2, 7, 64])
@pytest.mark.parametrize("case", sorted(_singular_inputs(4)))
def test_finite_values_and_gradients_at_singular_points(backend: str, d: int, case: str) -> None:
    inputs = [v.clone().requires_grad_(True) for v in _singular_inputs(d)[case]]
    with sphere_ops.backend(backend):
        out = _call(case, *inputs)
        outs = out if isinstance(out, tuple) else (out,)
        torch.autograd.backward(outs, [torch.randn_like(o) for o in outs])
    for o in outs:
        assert torch.isfinite(o).all()
    for v in inputs:
        assert v.grad is not None and torch.isfinite(v.grad).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradients_at_coincident_points_are_the_limits(backend: str) -> None:
    """Near x == y, logmap(x, y) = P(y - x) + O(|y - x|^2), P the projection orthogonal to x."""
    x = unit(5, 9, dtype=torch.float32).requires_grad_(True)
    y = x.detach().clone().requires_grad_(True)
    g = torch.randn(5, 9)
    with sphere_ops.backend(backend):
        (sphere_ops.logmap(x, y) * g).sum().backward()
    projected = g - (g * x).sum(-1, keepdim=True) * x
    torch.testing.assert_close(y.grad, projected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(x.grad, -projected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("d", [2, 3, 8, 9])
def test_antipodal_points_follow_the_documented_great_circle(backend: str, d: int) -> None:
    x = unit(16, d, dtype=torch.float32)
    y = -x
    e = R.antipodal_direction(x.double())
    with sphere_ops.backend(backend):
        log = sphere_ops.logmap(x, y)
        mid = sphere_ops.geodesic(x, y, 0.5)
        end = sphere_ops.geodesic(x, y, 1.0)
        back = sphere_ops.expmap(x, log)
        v = tangent(x.double()).float()
        moved = sphere_ops.transp(x, y, v)
        assert torch.equal(sphere_ops.logmap(x, y), log)  # deterministic
    torch.testing.assert_close(log.double(), math.pi * e, rtol=0, atol=1e-6)
    torch.testing.assert_close(mid.double(), e, rtol=0, atol=1e-6)
    torch.testing.assert_close(end, y, rtol=0, atol=1e-6)
    torch.testing.assert_close(back, y, rtol=0, atol=1e-6)
    torch.testing.assert_close(moved.norm(dim=-1), v.norm(dim=-1), rtol=1e-6, atol=1e-6)
    assert (sphere_ops.dist(x, y) == torch.tensor(math.pi, dtype=torch.float32)).all()
