"""Geometric identities as hypothesis properties, for every backend, in float32.

Inputs come from a drawn seed and shape: several leading dims, D from 2 to 1100,
sizes that are not a multiple of any block. Tolerances follow the conditioning of
each identity (near the antipode a direction is only known to ulp / sin(angle)).
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import sphere_ops

from helpers import BACKENDS, tangent, unit

dims = st.one_of(st.integers(2, 9), st.integers(10, 130), st.sampled_from([255, 383, 768, 1023, 1100]))
leading = st.lists(st.integers(1, 4), min_size=1, max_size=3)


@st.composite
def points(draw, count: int = 2):
    """``count`` float32 tensors of unit rows of one drawn shape, and a generator for more."""
    shape = (*draw(leading), draw(dims))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    xs = [unit(*shape, dtype=torch.float32, generator=g) for _ in range(count)]
    return xs, g


def _rows_close(a: torch.Tensor, b: torch.Tensor, atol: float | torch.Tensor) -> None:
    err = (a.double() - b.double()).norm(dim=-1)
    assert (err <= atol).all(), f"largest row error {err.max().item():.2e}"


@pytest.mark.parametrize("backend", BACKENDS)
@given(data=points())
def test_exp_of_log_is_the_target(backend: str, data) -> None:
    (x, y), _ = data
    with sphere_ops.backend(backend):
        _rows_close(sphere_ops.expmap(x, sphere_ops.logmap(x, y)), y, 2e-6)


@pytest.mark.parametrize("backend", BACKENDS)
@given(data=points(1), norms=st.lists(st.floats(0.0, math.pi - 1e-3), min_size=1, max_size=8))
def test_log_of_exp_is_the_velocity(backend: str, data, norms: list[float]) -> None:
    (x,), g = data
    u = tangent(x.double(), generator=g)
    scale = torch.tensor(norms, dtype=torch.float64)[torch.randint(len(norms), x.shape[:-1], generator=g)]
    u = (u / u.norm(dim=-1, keepdim=True) * scale.unsqueeze(-1)).float()
    with sphere_ops.backend(backend):
        back = sphere_ops.logmap(x, sphere_ops.expmap(x, u))
    # the log's direction is known to about ulp / sin|u| near the antipode
    n = u.double().norm(dim=-1)
    _rows_close(back, u, 2e-6 * (1 + n / torch.sin(n).clamp_min(1e-3)))


@pytest.mark.parametrize("backend", BACKENDS)
@given(data=points())
def test_dist_is_symmetric_and_the_norm_of_log(backend: str, data) -> None:
    (x, y), _ = data
    with sphere_ops.backend(backend):
        d = sphere_ops.dist(x, y)
        assert torch.equal(d, sphere_ops.dist(y, x))
        log_norm = sphere_ops.logmap(x, y).double().norm(dim=-1)
    torch.testing.assert_close(log_norm, d.double(), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("backend", BACKENDS)
@given(data=points())
def test_geodesic_hits_its_ends_at_constant_speed(backend: str, data) -> None:
    (x0, x1), g = data
    t = torch.rand(*x0.shape[:-1], 1, generator=g)
    with sphere_ops.backend(backend):
        _rows_close(sphere_ops.geodesic(x0, x1, 0.0), x0, 4e-7)
        _rows_close(sphere_ops.geodesic(x0, x1, 1.0), x1, 2e-6)
        xt, ut = sphere_ops.geodesic_velocity(x0, x1, t)
        d = sphere_ops.dist(x0, x1).double()
    torch.testing.assert_close(ut.double().norm(dim=-1), d, rtol=2e-6, atol=2e-7)
    # the velocity is tangent at x_t
    assert ((ut.double() * xt.double()).sum(-1).abs() <= 2e-6 * (1 + d)).all()


@pytest.mark.parametrize("backend", BACKENDS)
@given(data=points())
def test_velocity_is_the_time_derivative(backend: str, data) -> None:
    (x0, x1), g = data
    t = 0.1 + 0.8 * torch.rand(*x0.shape[:-1], 1, generator=g, dtype=torch.float64)
    h = 1e-3
    with sphere_ops.backend(backend):
        _, ut = sphere_ops.geodesic_velocity(x0.double(), x1.double(), t)
        ahead = sphere_ops.geodesic(x0.double(), x1.double(), t + h)
        behind = sphere_ops.geodesic(x0.double(), x1.double(), t - h)
    _rows_close((ahead - behind) / (2 * h), ut, 1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
@given(data=points())
def test_transport_is_an_isometry_onto_the_tangent_space(backend: str, data) -> None:
    (x, y), g = data
    u, v = tangent(x, generator=g), tangent(x, generator=g)
    with sphere_ops.backend(backend):
        tu, tv = sphere_ops.transp(x, y, u), sphere_ops.transp(x, y, v)
    dot = lambda a, b: (a.double() * b.double()).sum(-1)  # noqa: E731
    scale = u.double().norm(dim=-1) * v.double().norm(dim=-1)
    assert ((dot(tu, tv) - dot(u, v)).abs() <= 4e-6 * scale).all()
    torch.testing.assert_close(tu.double().norm(dim=-1), u.double().norm(dim=-1), rtol=2e-6, atol=1e-7)
    assert (dot(tu, y).abs() <= 2e-6 * u.double().norm(dim=-1)).all()


@pytest.mark.parametrize("backend", BACKENDS)
@given(data=points())
def test_transport_carries_the_geodesic_velocity(backend: str, data) -> None:
    """The velocity of a geodesic at its start, transported to its end, is its velocity there."""
    (x0, x1), _ = data
    with sphere_ops.backend(backend):
        _, u0 = sphere_ops.geodesic_velocity(x0, x1, 0.0)
        _, u1 = sphere_ops.geodesic_velocity(x0, x1, 1.0)
        moved = sphere_ops.transp(x0, x1, u0)
    d = sphere_ops.dist(x0, x1).double()
    _rows_close(moved, u1, 4e-6 * (1 + d / torch.sin(d).clamp_min(1e-3)))


@pytest.mark.parametrize("backend", BACKENDS)
@given(data=points(1))
def test_normalize_and_proju_are_idempotent(backend: str, data) -> None:
    (x,), g = data
    raw = torch.randn(x.shape, generator=g) * 3
    with sphere_ops.backend(backend):
        once = sphere_ops.normalize(raw)
        _rows_close(sphere_ops.normalize(once), once, 4e-7)  # the unit-norm contract
        p = sphere_ops.proju(x, raw)
        _rows_close(sphere_ops.proju(x, p), p, 1e-6 * (1 + raw.double().norm(dim=-1)))
    assert ((p.double() * x.double()).sum(-1).abs() <= 1e-6 * raw.double().norm(dim=-1)).all()
