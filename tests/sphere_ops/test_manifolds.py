"""ProductSphere: geoopt's manifold interface and optimizers on the fused sphere ops."""

from __future__ import annotations

import math

import geoopt
import pytest
import torch

import sphere_ops
from sphere_ops import reference
from sphere_ops.manifolds import ProductSphere

from helpers import BACKENDS, at_angle, tangent, unit


def karcher_mean(cloud: torch.Tensor, iters: int = 100) -> torch.Tensor:
    """Per-row Frechet mean of ``cloud`` (K, ..., D), in float64.

    The fixed-point iteration x <- exp_x(mean_k log_x(y_k)) on the reference ops.
    """
    x = reference.normalize(cloud.mean(0))
    for _ in range(iters):
        x = reference.expmap(x, reference.logmap(x.expand_as(cloud).contiguous(), cloud).mean(0))
    return x


def point_cloud(K: int, *shape: int, spread: float, seed: int) -> torch.Tensor:
    """K points (float64) scattered by ``spread`` around a random center on every row."""
    g = torch.Generator().manual_seed(seed)
    center = unit(*shape, generator=g).expand(K, *shape).contiguous()
    return reference.expmap(center, tangent(center, spread, generator=g))


def test_riemannian_adam_finds_the_karcher_mean_of_every_row() -> None:
    K, B, N, D = 6, 3, 4, 5
    cloud = point_cloud(K, B, N, D, spread=0.4, seed=1)
    expected = karcher_mean(cloud)
    residual = reference.logmap(expected.expand_as(cloud).contiguous(), cloud).mean(0)
    assert residual.norm(dim=-1).max() < 1e-12  # the reference really is a critical point

    sphere = ProductSphere(ndim=2)
    z = geoopt.ManifoldParameter(cloud[0].float().clone(), manifold=sphere)
    opt = geoopt.optim.RiemannianAdam([z], lr=0.05)
    schedule = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.99)
    data = cloud.float()
    for _ in range(800):
        opt.zero_grad()
        # The product metric decouples the rows, so one loss over (B, N) solves B * N problems.
        (sphere.dist2(z, data).sum() / (2 * K)).backward()
        opt.step()
        schedule.step()

    assert sphere.check_point_on_manifold(z, atol=1e-6, rtol=0)
    assert sphere_ops.dist(z.detach().double(), expected).max() < 1e-5


@pytest.mark.parametrize("stabilize", [5, None])
def test_riemannian_sgd_with_momentum_reaches_the_closed_form_minimum(stabilize: int | None) -> None:
    # -sum <x_i, a_i> is minimal at x_i = a_i / |a_i|.
    a = torch.randn(6, 5) * 3
    sphere = ProductSphere(ndim=1)
    z = geoopt.ManifoldParameter(sphere.random(6, 5), manifold=sphere)
    opt = geoopt.optim.RiemannianSGD([z], lr=0.05, momentum=0.9, stabilize=stabilize)

    def step() -> None:
        opt.zero_grad()
        (-(z * a).sum()).backward()
        opt.step()

    for _ in range(5):
        step()
    # geoopt seeds the momentum buffer with the Euclidean gradient, which is not tangent;
    # only the periodic projx/proju of `stabilize` makes it tangent again.
    buffer = opt.state[z]["momentum_buffer"]
    assert sphere.check_vector_on_tangent(z, buffer, atol=1e-6, rtol=1e-6) == (stabilize is not None)
    for _ in range(195):
        step()

    assert sphere.check_point_on_manifold(z, atol=1e-6, rtol=0)
    assert sphere_ops.dist(z.detach(), sphere.projx(a)).max() < 1e-4


@pytest.mark.parametrize("name", BACKENDS)
def test_adam_steps_keep_points_on_the_manifold_and_state_tangent(name: str) -> None:
    sphere = ProductSphere(ndim=2)
    z = geoopt.ManifoldParameter(sphere.random(2, 3, 8), manifold=sphere)
    w = torch.randn(2, 3, 8)
    opt = geoopt.optim.RiemannianAdam([z], lr=0.3)
    with sphere_ops.backend(name):
        for _ in range(4):
            opt.zero_grad()
            ((z * w).sum(-1) ** 2).sum().backward()
            rgrad = sphere.egrad2rgrad(z, z.grad)
            ok, reason = sphere.check_vector_on_tangent(z, rgrad, explain=True)
            assert ok, reason
            opt.step()
            ok, reason = sphere.check_point_on_manifold(z, explain=True, atol=1e-6, rtol=0)
            assert ok, reason
            ok, reason = sphere.check_vector_on_tangent(z, opt.state[z]["exp_avg"], explain=True)
            assert ok, reason


@pytest.mark.parametrize("ndim", [1, 2, 3])
def test_inner_norm_and_component_inner_against_direct_sums(ndim: int) -> None:
    sphere = ProductSphere(ndim=ndim)
    x = unit(2, 3, 4, 5)
    u, v = tangent(x), tangent(x)
    dims = tuple(range(-ndim, 0))
    batch = x.shape[:-ndim]

    inner = sphere.inner(x, u, v)
    assert inner.shape == batch
    torch.testing.assert_close(inner, (u * v).sum(dims))
    assert sphere.inner(x, u, v, keepdim=True).shape == batch + (1,) * ndim
    torch.testing.assert_close(sphere.inner(x, u), (u * u).sum(dims))

    norm = sphere.norm(x, u)
    assert norm.shape == batch
    torch.testing.assert_close(norm, sphere.inner(x, u).sqrt())
    assert sphere.norm(x, u, keepdim=True).shape == batch + (1,) * ndim

    rows = sphere.component_inner(x, u, v)
    assert rows.shape == x.shape[:-1] + (1,)
    torch.testing.assert_close(rows, (u * v).sum(-1, keepdim=True))
    assert sphere.component_inner(x, u, v, keepdim=False).shape == x.shape[:-1]
    torch.testing.assert_close(sphere.component_inner(x, u), (u * u).sum(-1, keepdim=True))


def test_metric_values_expand_to_every_point_of_x() -> None:
    sphere = ProductSphere(ndim=2)
    x = unit(4, 3, 6)
    u = tangent(x[:1])  # one vector, broadcast against four points
    assert sphere.inner(x, u).shape == (4,)
    assert sphere.norm(x, u).shape == (4,)
    assert sphere.component_inner(x, u).shape == (4, 3, 1)


@pytest.mark.parametrize("ndim", [1, 2, 3])
def test_dist_is_the_root_sum_of_squared_row_angles(ndim: int) -> None:
    sphere = ProductSphere(ndim=ndim)
    x = unit(2, 3, 4, 5)
    angles = torch.logspace(-6, math.log10(3.1), 24, dtype=torch.float64).reshape(2, 3, 4)
    y = at_angle(x, angles)

    def per_point(rows: torch.Tensor) -> torch.Tensor:
        """Root sum of squares over the rows of each point."""
        return rows.reshape(*rows.shape[: rows.dim() - ndim + 1], -1).square().sum(-1).sqrt()

    dist = sphere.dist(x, y)
    assert dist.shape == x.shape[:-ndim]
    torch.testing.assert_close(dist, per_point(angles), rtol=1e-9, atol=0)
    torch.testing.assert_close(dist, per_point(sphere_ops.dist(x, y)))
    torch.testing.assert_close(sphere.dist2(x, y), per_point(angles).square(), rtol=2e-9, atol=0)
    assert sphere.dist(x, y, keepdim=True).shape == x.shape[:-ndim] + (1,) * ndim
    assert sphere.dist2(x, y, keepdim=True).shape == x.shape[:-ndim] + (1,) * ndim


def test_dist_is_zero_with_finite_gradient_at_equal_points() -> None:
    sphere = ProductSphere(ndim=2)
    x = unit(3, 4, 6).requires_grad_()
    d = sphere.dist(x, x.detach())
    assert torch.equal(d, torch.zeros(3, dtype=x.dtype))
    d.sum().backward()
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("name", BACKENDS)
def test_logmap_inverts_expmap_and_has_the_norm_of_dist(name: str) -> None:
    sphere = ProductSphere(ndim=2)
    x, y = unit(3, 4, 7), unit(3, 4, 7)
    with sphere_ops.backend(name):
        u = sphere.logmap(x, y)
        torch.testing.assert_close(sphere.expmap(x, u), y)
        torch.testing.assert_close(sphere.norm(x, u), sphere.dist(x, y))
        assert sphere.check_vector_on_tangent(x, u)


@pytest.mark.parametrize("name", BACKENDS)
def test_transp_keeps_inner_products_and_lands_in_the_tangent_space(name: str) -> None:
    sphere = ProductSphere(ndim=2)
    x, y = unit(3, 4, 7), unit(3, 4, 7)
    u, v = tangent(x), tangent(x)
    with sphere_ops.backend(name):
        tu, tv = sphere.transp(x, y, u), sphere.transp(x, y, v)
        torch.testing.assert_close(sphere.component_inner(y, tu, tv), sphere.component_inner(x, u, v))
        torch.testing.assert_close(sphere.norm(y, tu), sphere.norm(x, u))
        assert sphere.check_vector_on_tangent(y, tu)
        torch.testing.assert_close(sphere.transp(x, x, u), u)


def test_transport_along_a_step_is_the_geodesic_velocity_at_its_end() -> None:
    # Parallel transport of the velocity of a geodesic along itself is its velocity at the end.
    sphere = ProductSphere(ndim=2)
    x = unit(3, 4, 7)
    u = tangent(x)
    u = u / u.norm(dim=-1, keepdim=True) * torch.rand(3, 4, 1, dtype=x.dtype) * 3
    y, moved = sphere.retr_transp(x, u, u)
    _, velocity = sphere_ops.geodesic_velocity(x, y, 1.0)
    torch.testing.assert_close(moved, velocity)


def test_retractions_and_transports_agree() -> None:
    sphere = ProductSphere(ndim=2)
    x = unit(3, 4, 7)
    u, v = tangent(x), tangent(x)
    y = sphere.expmap(x, u)
    moved = sphere.transp(x, y, v)
    torch.testing.assert_close(sphere.retr(x, u), y)
    for pair in (sphere.retr_transp(x, u, v), sphere.expmap_transp(x, u, v)):
        torch.testing.assert_close(pair[0], y)
        torch.testing.assert_close(pair[1], moved)
    torch.testing.assert_close(sphere.transp_follow_retr(x, u, v), moved)
    torch.testing.assert_close(sphere.transp_follow_expmap(x, u, v), moved)


def test_maps_broadcast_like_geoopt_manifold_tensors() -> None:
    sphere = ProductSphere(ndim=2)
    x = sphere.random(4, 3, 6)
    y = sphere.random(3, 6)
    torch.testing.assert_close(sphere.dist(x, y), sphere.dist(x, y.expand_as(x)))
    torch.testing.assert_close(x.dist(y, p="g"), sphere.dist(x, y.expand_as(x)))
    torch.testing.assert_close(x.logmap(y), sphere.logmap(x, y.expand_as(x)))
    w = torch.randn(6)
    torch.testing.assert_close(x.proju(w), sphere.proju(x, w.expand_as(x)))


def test_random_points_are_uniform_rows_on_the_manifold() -> None:
    sphere = ProductSphere(ndim=2)
    z = sphere.random(5, 3, 8, dtype=torch.float64)
    assert isinstance(z, geoopt.ManifoldTensor) and z.manifold is sphere
    assert z.shape == (5, 3, 8) and z.dtype == torch.float64
    assert sphere.check_point_on_manifold(z, atol=1e-12, rtol=0)
    a = sphere.random_uniform((2, 4), generator=torch.Generator().manual_seed(3))
    b = sphere.random_uniform((2, 4), generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    # Uniform on S^(D-1): the mean of many rows is near 0.
    assert sphere.random(4000, 2, 3).mean((0, 1)).abs().max() < 0.05


def test_origin_is_fixed_and_leaves_the_global_rng_alone() -> None:
    sphere = ProductSphere(ndim=2)
    state = torch.random.get_rng_state()
    first = sphere.origin(2, 3, 4)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(first, sphere.origin((2, 3, 4)))
    assert not torch.equal(first, sphere.origin(2, 3, 4, seed=7))
    assert sphere.check_point_on_manifold(first)


@pytest.mark.parametrize(
    ("ndim", "shape", "message"),
    [(2, (5,), "fewer than the 2 dims"), (1, (3, 1), "D >= 2")],
)
def test_bad_shapes_are_rejected(ndim: int, shape: tuple[int, ...], message: str) -> None:
    sphere = ProductSphere(ndim=ndim)
    with pytest.raises(ValueError, match=message):
        geoopt.ManifoldParameter(torch.ones(shape), manifold=sphere)
    with pytest.raises(ValueError, match=message):
        sphere.random(*shape)


@pytest.mark.parametrize("ndim", [0, 1.5, True])
def test_ndim_must_be_a_positive_int(ndim: object) -> None:
    with pytest.raises(ValueError, match="ndim must be an int >= 1"):
        ProductSphere(ndim=ndim)


def test_repr_names_ndim() -> None:
    assert repr(ProductSphere(ndim=2)) == "ProductSphere(ndim=2) manifold"


def test_point_check_names_the_worst_row() -> None:
    sphere = ProductSphere(ndim=2)
    x = unit(3, 4, 5)
    assert sphere.check_point_on_manifold(x, explain=True) == (True, None)
    x[0, 3] *= 1.001
    x[1, 2] *= 1.01
    ok, reason = sphere.check_point_on_manifold(x, explain=True)
    assert not ok
    assert "x[1, 2]" in reason and "0.01" in reason and "2 of 12 rows" in reason
    with pytest.raises(ValueError, match=r"x\[1, 2\]"):
        sphere.assert_check_point_on_manifold(x)
    assert sphere.check_point_on_manifold(x, atol=0.02)

    x[2, 0, 1] = float("nan")
    ok, reason = sphere.check_point_on_manifold(x, explain=True)
    assert not ok and "x[2, 0]" in reason and "nan" in reason


def test_point_check_of_a_single_sphere_names_the_point() -> None:
    ok, reason = ProductSphere(ndim=1).check_point_on_manifold(2 * unit(5), explain=True)
    assert not ok and "row x is off the unit sphere" in reason


def test_tangent_check_names_the_worst_row() -> None:
    sphere = ProductSphere(ndim=2)
    x = unit(3, 4, 5)
    u = tangent(x)
    assert sphere.check_vector_on_tangent(x, u, explain=True) == (True, None)
    u[0, 0] += 1e-3 * x[0, 0]
    u[2, 1] += 0.1 * x[2, 1]
    ok, reason = sphere.check_vector_on_tangent(x, u, explain=True)
    assert not ok
    assert "u[2, 1]" in reason and "0.1" in reason and "2 of 12 rows" in reason
    with pytest.raises(ValueError, match=r"u\[2, 1\]"):
        sphere.assert_check_vector_on_tangent(x, u)


def test_tangent_check_scales_with_the_vector() -> None:
    # The same normal part is rounding on a long vector and an error on a short one.
    sphere = ProductSphere(ndim=1)
    x = unit(5)
    direction = tangent(x)
    direction = direction / direction.norm()
    assert sphere.check_vector_on_tangent(x, 1e4 * direction + 1e-3 * x)
    assert not sphere.check_vector_on_tangent(x, direction + 1e-3 * x)
