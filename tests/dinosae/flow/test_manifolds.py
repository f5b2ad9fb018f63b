"""Geometric identities of the flow's manifolds, on random inputs, against float64."""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import sphere_ops
from dinosae.flow import Euclidean, Sphere, make_manifold

from helpers import unit

seeds = st.integers(0, 2**31 - 1)
times = st.floats(0.0, 1.0)
MANIFOLDS = [Sphere(1.0), Sphere(5.0, step="project"), Euclidean(3.0)]


def pair(manifold, seed: int, dtype=torch.float64):
    """Noise and data of shape (3, 4, 6): x0 from the prior, x1 unit tokens."""
    g = torch.Generator().manual_seed(seed)
    return manifold.prior((3, 4, 6), generator=g, dtype=dtype), unit(3, 4, 6, generator=g, dtype=dtype)


@pytest.mark.parametrize("manifold", MANIFOLDS, ids=repr)
@given(seed=seeds)
def test_the_interpolant_starts_at_noise_and_ends_at_data(manifold, seed: int) -> None:
    x0, x1 = pair(manifold, seed)
    ones = torch.ones(3, 1, 1, dtype=torch.float64)
    torch.testing.assert_close(manifold.interpolate(x0, x1, 0 * ones)[0], x0, rtol=0, atol=1e-12)
    torch.testing.assert_close(manifold.interpolate(x0, x1, ones)[0], x1, rtol=0, atol=1e-12)


@pytest.mark.parametrize("manifold", MANIFOLDS, ids=repr)
@given(seed=seeds, t=st.floats(0.0, 0.999))
def test_the_velocity_is_tangent_and_points_at_the_data(manifold, seed: int, t: float) -> None:
    """u_t is tangent at x_t, of constant speed dist(x0, x1), and equals logmap(x_t, x1) / (1 - t)."""
    x0, x1 = pair(manifold, seed)
    xt, ut = manifold.interpolate(x0, x1, torch.full((3, 1, 1), t, dtype=torch.float64))
    torch.testing.assert_close(manifold.project(xt, ut), ut, rtol=0, atol=1e-12)
    torch.testing.assert_close(ut.norm(dim=-1), manifold.dist(x0, x1), rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(manifold.logmap(xt, x1) / (1 - t), ut, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("manifold", MANIFOLDS, ids=repr)
@given(seed=seeds, t=times)
def test_float32_follows_the_float64_interpolant(manifold, seed: int, t: float) -> None:
    x0, x1 = pair(manifold, seed)
    tt = torch.full((3, 1, 1), t, dtype=torch.float64)
    xt, ut = manifold.interpolate(x0, x1, tt)
    xt32, ut32 = manifold.interpolate(x0.float(), x1.float(), tt.float())
    torch.testing.assert_close(xt32.double(), xt, rtol=0, atol=2e-6)
    torch.testing.assert_close(ut32.double(), ut, rtol=0, atol=2e-5)


@given(seed=seeds)
def test_the_exponential_step_inverts_the_log_map(seed: int) -> None:
    x0, x1 = pair(Sphere(1.0), seed)
    torch.testing.assert_close(Sphere(1.0).step(x0, Sphere(1.0).logmap(x0, x1)), x1, rtol=0, atol=1e-10)
    flat = Euclidean(2.0)
    torch.testing.assert_close(flat.step(x0, flat.logmap(x0, x1)), x1, rtol=0, atol=1e-12)


@given(seed=seeds, size=st.floats(1e-3, 0.1))
def test_the_projection_retraction_agrees_with_the_exponential_map_to_second_order(seed: int, size: float) -> None:
    """normalize(x + u) lands atan|u| along the geodesic where expmap lands |u|: an error of |u|^3 / 3."""
    x, direction = pair(Sphere(1.0), seed)
    u = sphere_ops.proju(x, direction)
    u = size * u / u.norm(dim=-1, keepdim=True)
    retracted, exact = Sphere(1.0, step="project").step(x, u), Sphere(1.0).step(x, u)
    assert ((retracted.norm(dim=-1) - 1).abs() < 1e-12).all()
    error = sphere_ops.dist(retracted, exact)
    torch.testing.assert_close(error, torch.full_like(error, size - math.atan(size)), rtol=1e-6, atol=1e-14)


@given(seed=seeds)
def test_transport_keeps_tangency_and_length(seed: int) -> None:
    x, y = pair(Sphere(1.0), seed)
    v = sphere_ops.proju(y, torch.randn(y.shape, generator=torch.Generator().manual_seed(seed), dtype=y.dtype))
    carried = Sphere(1.0).transport(x, y, v)
    torch.testing.assert_close((carried * x).sum(-1), torch.zeros(3, 4, dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(carried.norm(dim=-1), v.norm(dim=-1), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("manifold", MANIFOLDS, ids=repr)
@given(seed=seeds)
def test_model_outputs_come_back_in_data_units(manifold, seed: int) -> None:
    """The network sees scale * x; its velocity output is divided by the scale (and made tangent), its endpoint
    output added to x and put on the manifold."""
    x, _ = pair(Sphere(1.0), seed)
    out = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed), dtype=x.dtype)
    torch.testing.assert_close(manifold.to_model(x), manifold.scale * x, rtol=0, atol=0)
    v = manifold.from_model(x, out, "velocity")
    torch.testing.assert_close(v, manifold.project(x, out / manifold.scale), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(manifold.from_model(x, out, "velocity", project=False), out / manifold.scale)
    endpoint = manifold.from_model(x, out, "x1")
    torch.testing.assert_close(endpoint, manifold.project_point(x + out / manifold.scale))


def test_sphere_noise_is_uniform_and_euclidean_noise_has_its_scale() -> None:
    g = torch.Generator().manual_seed(0)
    noise = Sphere(2.0).prior((20_000, 3), generator=g, dtype=torch.float64)
    torch.testing.assert_close(noise.norm(dim=-1), torch.ones(20_000, dtype=torch.float64))
    assert noise.mean(0).abs().max() < 0.03
    flat = Euclidean(4.0).prior((20_000, 3), generator=g, dtype=torch.float64)
    assert abs(flat.std().item() - 0.25) < 0.005


def test_bad_settings_raise_value_errors() -> None:
    with pytest.raises(ValueError, match="unknown manifold .*; choose one of sphere, euclidean"):
        make_manifold("torus", 8)
    with pytest.raises(ValueError, match="must be a finite number > 0"):
        Sphere(0.0)
    with pytest.raises(ValueError, match="must be a finite number > 0"):
        Euclidean(math.inf)
    with pytest.raises(ValueError, match="step must be one of"):
        Sphere(1.0, step="cayley")
    assert make_manifold("sphere", 16).scale == 4.0 and make_manifold("euclidean", 9, 2.0).scale == 2.0
