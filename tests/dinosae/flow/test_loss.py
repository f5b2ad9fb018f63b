"""The flow-matching loss on the sphere and in R^D, for both predictions."""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import sphere_ops
from dinosae.flow import Euclidean, LogitNormalTime, ShiftedTime, Sphere, UniformTime, flow_matching_loss
from dinosae.flow.prediction import TRAIN_FLOOR

from helpers import unit

UNIT = Sphere(1.0)  # the network's scale 1: the loss in data units
SAMPLERS = [
    UniformTime(),
    LogitNormalTime(0.5, 1.2),
    ShiftedTime(LogitNormalTime(), 3.0),
    ShiftedTime(UniformTime(), 0.5),
]


class Spy:
    """A model that records its inputs and returns ``field(x, t, y)``."""

    def __init__(self, field) -> None:
        self.field, self.calls = field, []

    def __call__(self, x, t, y):
        self.calls.append((x, t, y))
        return self.field(x, t, y)


@pytest.mark.parametrize("sampler", SAMPLERS, ids=repr)
def test_the_exact_conditional_field_has_zero_loss(sampler) -> None:
    """v(x_t, t) = logmap(x_t, x1) / (1 - t), the velocity that reaches x1 at t = 1, is the target."""
    x1 = unit(16, 9, 12)
    y = torch.zeros(16, dtype=torch.long)
    oracle = Spy(lambda x, t, y: sphere_ops.logmap(x, x1) / (1 - t.view(-1, 1, 1)))
    loss, aux = flow_matching_loss(oracle, UNIT, x1, y, time_sampler=sampler,
                                   generator=torch.Generator().manual_seed(0))
    assert loss.item() < 1e-20 and aux["loss"].max() < 1e-20
    x, t, _ = oracle.calls[0]
    assert torch.equal(t, aux["t"]) and x.shape == x1.shape
    assert ((x.norm(dim=-1) - 1).abs() < 1e-12).all()  # the model sees points in data units (it scales them itself)
    assert sphere_ops.dist(x, x1).max() < math.pi  # x_t lies on the arc to x1


def test_euclidean_oracle_has_zero_loss() -> None:
    """On the linear path from Gaussian x0 (of std 1 / scale) to x1, the field (x1 - x_t) / (1 - t) is the target."""
    x1 = unit(16, 9, 12)
    oracle = Spy(lambda x, t, y: (x1 - x) / (1 - t.view(-1, 1, 1)))
    y = torch.zeros(16, dtype=torch.long)
    loss, _ = flow_matching_loss(oracle, Euclidean(math.sqrt(12)), x1, y, generator=torch.Generator().manual_seed(1))
    assert loss.item() < 1e-20
    x, t, _ = oracle.calls[0]
    assert 0.5 < x.norm(dim=-1).mean() < 1.5  # noise and data tokens are of one size


@pytest.mark.parametrize("c", [0.3, -2.0])
def test_targets_are_tangent_and_the_loss_is_the_mean_squared_token_norm(c: float) -> None:
    """|c x_t - u|^2 = c^2 + |u|^2 exactly when u is tangent at x_t; the zero field's loss is mean |u|^2 = mean dist^2.

    |u_t| = dist(x0, x1) (a geodesic at constant speed) is checked by drawing t and x0 again from the seed.
    """
    x1 = unit(32, 5, 7)
    y = torch.zeros(32, dtype=torch.long)
    zero = Spy(lambda x, t, y: torch.zeros_like(x))
    normal = Spy(lambda x, t, y: c * x)
    loss0, aux0 = flow_matching_loss(zero, UNIT, x1, y, generator=torch.Generator().manual_seed(2))
    loss1, aux1 = flow_matching_loss(normal, UNIT, x1, y, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(aux1["loss"] - aux0["loss"], torch.full((32,), c**2, dtype=torch.float64))
    g = torch.Generator().manual_seed(2)
    t = torch.rand(32, generator=g, dtype=torch.float64)
    x0 = sphere_ops.random_uniform((32, 5), 7, generator=g, dtype=torch.float64)
    torch.testing.assert_close(aux0["t"], t)
    torch.testing.assert_close(aux0["loss"], sphere_ops.dist(x0, x1).pow(2).mean(-1))


@pytest.mark.parametrize("radius, weight", [(1.0, 0.1), (32.0, 0.1), (3.0, 1.0)])
def test_radius_and_radial_weight_follow_the_hae_loss(radius: float, weight: float) -> None:
    """R^2 (|v_tan - u|^2 + w |v_rad|^2): the exact target plus a radial part c x_t costs R^2 w c^2 per
    token; w = 1 is the plain squared error."""
    x1 = unit(16, 5, 7)
    y = torch.zeros(16, dtype=torch.long)
    oracle = Spy(lambda x, t, y: sphere_ops.logmap(x, x1) / (1 - t.view(-1, 1, 1)))
    leaky = Spy(lambda x, t, y: sphere_ops.logmap(x, x1) / (1 - t.view(-1, 1, 1)) + 0.5 * x)
    kwargs = dict(radial_weight=weight, generator=torch.Generator().manual_seed(3))
    loss_exact, _ = flow_matching_loss(oracle, Sphere(radius), x1, y, **kwargs)
    kwargs["generator"] = torch.Generator().manual_seed(3)
    loss_leaky, aux = flow_matching_loss(leaky, Sphere(radius), x1, y, **kwargs)
    assert loss_exact.item() < 1e-18 * radius**2
    torch.testing.assert_close(aux["loss"], torch.full((16,), radius**2 * weight * 0.25, dtype=torch.float64))
    torch.testing.assert_close(loss_leaky, torch.tensor(radius**2 * weight * 0.25, dtype=torch.float64))


def test_gradients_flow_to_the_model_and_are_finite() -> None:
    from dinosae import create_model

    model = create_model("dit-tiny", hidden_size=32, depth=1, num_heads=2, in_dim=8, grid_size=2, num_classes=3)
    x1 = sphere_ops.random_uniform((6, 4), 8)
    loss, aux = flow_matching_loss(model, model.manifold, x1, torch.randint(3, (6,)), time_sampler=LogitNormalTime())
    loss.backward()
    assert model.final_layer.linear.weight.grad.abs().max() > 0
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert aux["loss"].shape == aux["t"].shape == (6,) and not aux["loss"].requires_grad


@pytest.mark.parametrize("manifold", [UNIT, Euclidean(2.0)], ids=repr)
def test_a_generator_makes_the_loss_reproducible(manifold) -> None:
    x1 = unit(8, 4, 6, dtype=torch.float32)
    y = torch.zeros(8, dtype=torch.long)
    def model(x, t, y):
        return x * t.view(-1, 1, 1)

    a = flow_matching_loss(model, manifold, x1, y, generator=torch.Generator().manual_seed(3))
    b = flow_matching_loss(model, manifold, x1, y, generator=torch.Generator().manual_seed(3))
    c = flow_matching_loss(model, manifold, x1, y, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1]["t"], b[1]["t"])
    assert not torch.equal(a[0], c[0])


def test_bad_inputs_raise_value_errors() -> None:
    def model(x, t, y):
        return x

    x1 = unit(4, 3, 5)
    y = torch.zeros(4, dtype=torch.long)
    with pytest.raises(ValueError, match="unit tokens"):
        flow_matching_loss(model, UNIT, 1.5 * x1, y)
    with pytest.raises(ValueError, match="x1 must have shape"):
        flow_matching_loss(model, UNIT, x1[0, 0], y)
    with pytest.raises(ValueError, match="x1 must be a floating tensor"):
        flow_matching_loss(model, UNIT, x1.long(), y)
    with pytest.raises(ValueError, match="y must be a tensor of 4 labels"):
        flow_matching_loss(model, UNIT, x1, y[:3])
    with pytest.raises(ValueError, match="the model returned shape"):
        flow_matching_loss(lambda x, t, y: x[..., :2], UNIT, x1, y)
    with pytest.raises(ValueError, match="unknown prediction .*; choose one of velocity, x1"):
        flow_matching_loss(model, UNIT, x1, y, prediction="noise")
    with pytest.raises(ValueError, match="radial_weight must be >= 0"):
        flow_matching_loss(model, UNIT, x1, y, radial_weight=-1.0)
    # the Euclidean loss takes any latents
    flow_matching_loss(model, Euclidean(1.0), 1.5 * x1, y)


@pytest.mark.parametrize("manifold", [Sphere(3.0), Euclidean(2.0)], ids=repr)
def test_an_exact_endpoint_has_zero_loss_at_every_time_up_to_one(manifold) -> None:
    """x1-prediction: the model that returns x1 has zero loss, times t = 1 and 1 - 1e-9 included."""
    x1 = unit(6, 3, 5)
    y = torch.zeros(6, dtype=torch.long)
    t = torch.tensor([0.0, 0.3, 0.9, 0.97, 1 - 1e-9, 1.0], dtype=torch.float64)
    x0 = manifold.prior(x1.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    loss, aux = flow_matching_loss(lambda x, t, y: x1, manifold, x1, y, prediction="x1", draws=(t, x0))
    assert loss.item() < 1e-20 and torch.isfinite(aux["loss"]).all()


@given(seed=st.integers(0, 2**31 - 1), t=st.floats(0.0, 1.0), noise=st.floats(0.05, 1.0))
def test_endpoint_loss_is_the_velocity_loss_of_the_implied_velocity_then_bounded(seed: int, t: float,
                                                                                 noise: float) -> None:
    """For t <= 1 - TRAIN_FLOOR the x1 loss is the velocity loss of logmap(x_t, x1_hat) / (1 - t); above, the
    weight 1 / (1 - t)^2 is capped at 1 / TRAIN_FLOOR^2, so the loss stays below the endpoint error's multiple."""
    g = torch.Generator().manual_seed(seed)
    sphere = Sphere(2.0)
    x1 = unit(3, 4, 6, generator=g)
    x0 = sphere.prior(x1.shape, generator=g, dtype=torch.float64)
    wrong = sphere_ops.normalize(x1 + noise * torch.randn(x1.shape, generator=g, dtype=torch.float64))
    y = torch.zeros(3, dtype=torch.long)
    times = torch.full((3,), t, dtype=torch.float64)
    x1_loss, _ = flow_matching_loss(lambda x, t, y: wrong, sphere, x1, y, prediction="x1", draws=(times, x0))
    xt, _ = sphere.interpolate(x0, x1, times.view(-1, 1, 1))
    endpoint_error = sphere_ops.logmap(xt, wrong) - sphere_ops.logmap(xt, x1)
    if t <= 1 - TRAIN_FLOOR:
        implied = sphere_ops.logmap(xt, wrong) / (1 - t)
        v_loss, _ = flow_matching_loss(lambda x, t, y: implied, sphere, x1, y, draws=(times, x0))
        torch.testing.assert_close(x1_loss, v_loss, rtol=1e-9, atol=1e-12)
    bound = 4.0 * endpoint_error.pow(2).sum(-1).mean() / TRAIN_FLOOR**2
    assert x1_loss <= bound * (1 + 1e-9)
