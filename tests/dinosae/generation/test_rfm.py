"""Flow-matching objectives and time samplers."""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

import sphere_ops
from dinosae.generation.rfm import (LogitNormalTime, ShiftedTime, UniformTime, dimension_shift, euclidean_fm_loss,
                                    rfm_loss, time_shift)

from helpers import unit

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
    loss, aux = rfm_loss(oracle, x1, y, time_sampler=sampler, generator=torch.Generator().manual_seed(0))
    assert loss.item() < 1e-20 and aux["loss"].max() < 1e-20
    x, t, _ = oracle.calls[0]
    assert torch.equal(t, aux["t"]) and x.shape == x1.shape
    assert ((x.norm(dim=-1) - 1).abs() < 1e-12).all()  # the model sees points (it scales them itself)
    assert sphere_ops.dist(x, x1).max() < math.pi  # x_t lies on the arc to x1


def test_euclidean_oracle_has_zero_loss() -> None:
    """On the linear path from Gaussian x0 to sqrt(D) x1, the field (sqrt(D) x1 - x_t) / (1 - t) is the target."""
    x1 = unit(16, 9, 12)
    oracle = Spy(lambda x, t, y: (math.sqrt(12) * x1 - x) / (1 - t.view(-1, 1, 1)))
    y = torch.zeros(16, dtype=torch.long)
    loss, _ = euclidean_fm_loss(oracle, x1, y, generator=torch.Generator().manual_seed(1))
    assert loss.item() < 1e-20
    x, t, _ = oracle.calls[0]
    assert 0.5 < (x.norm(dim=-1) / math.sqrt(12)).mean() < 1.5  # noise and data tokens are of one size


@pytest.mark.parametrize("c", [0.3, -2.0])
def test_targets_are_tangent_and_the_loss_is_the_mean_squared_token_norm(c: float) -> None:
    """|c x_t - u|^2 = c^2 + |u|^2 exactly when u is tangent at x_t; the zero field's loss is mean |u|^2 = mean dist^2.

    |u_t| = dist(x0, x1) (a geodesic at constant speed) is checked by drawing t and x0 again from the seed.
    """
    x1 = unit(32, 5, 7)
    y = torch.zeros(32, dtype=torch.long)
    zero = Spy(lambda x, t, y: torch.zeros_like(x))
    normal = Spy(lambda x, t, y: c * x)
    loss0, aux0 = rfm_loss(zero, x1, y, generator=torch.Generator().manual_seed(2))
    loss1, aux1 = rfm_loss(normal, x1, y, generator=torch.Generator().manual_seed(2))
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
    kwargs = dict(radius=radius, radial_weight=weight, generator=torch.Generator().manual_seed(3))
    loss_exact, _ = rfm_loss(oracle, x1, y, **kwargs)
    kwargs["generator"] = torch.Generator().manual_seed(3)
    loss_leaky, aux = rfm_loss(leaky, x1, y, **kwargs)
    assert loss_exact.item() < 1e-18 * radius**2
    torch.testing.assert_close(aux["loss"], torch.full((16,), radius**2 * weight * 0.25, dtype=torch.float64))
    torch.testing.assert_close(loss_leaky, torch.tensor(radius**2 * weight * 0.25, dtype=torch.float64))


def test_gradients_flow_to_the_model_and_are_finite() -> None:
    from dinosae import create_model

    model = create_model("dit-tiny", hidden_size=32, depth=1, num_heads=2, in_dim=8, grid_size=2, num_classes=3)
    x1 = sphere_ops.random_uniform((6, 4), 8)
    loss, aux = rfm_loss(model, x1, torch.randint(3, (6,)), time_sampler=LogitNormalTime())
    loss.backward()
    assert model.final_layer.linear.weight.grad.abs().max() > 0
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert aux["loss"].shape == aux["t"].shape == (6,) and not aux["loss"].requires_grad


@pytest.mark.parametrize("loss_fn", [rfm_loss, euclidean_fm_loss])
def test_a_generator_makes_the_loss_reproducible(loss_fn) -> None:
    x1 = unit(8, 4, 6, dtype=torch.float32)
    y = torch.zeros(8, dtype=torch.long)
    def model(x, t, y):
        return x * t.view(-1, 1, 1)

    a = loss_fn(model, x1, y, generator=torch.Generator().manual_seed(3))
    b = loss_fn(model, x1, y, generator=torch.Generator().manual_seed(3))
    c = loss_fn(model, x1, y, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1]["t"], b[1]["t"])
    assert not torch.equal(a[0], c[0])


def test_time_samplers_have_their_distributions() -> None:
    """Kolmogorov-Smirnov against the exact laws (a fixed seed, so the test is deterministic)."""
    n, g = 20_000, torch.Generator().manual_seed(5)
    t = UniformTime()(n, generator=g, dtype=torch.float64)
    assert stats.kstest(t.numpy(), "uniform").pvalue > 1e-3
    t = LogitNormalTime(0.7, 1.3)(n, generator=g, dtype=torch.float64)
    assert ((t > 0) & (t < 1)).all()
    assert stats.kstest(torch.logit(t).numpy(), "norm", args=(0.7, 1.3)).pvalue > 1e-3
    shift = 4.0
    t = ShiftedTime(UniformTime(), shift)(n, generator=g, dtype=torch.float64)
    unshifted = shift * t / (1 + (shift - 1) * t)  # the inverse of time_shift
    assert stats.kstest(unshifted.numpy(), "uniform").pvalue > 1e-3
    assert t.mean() < 0.35  # towards noise


def test_dimension_shift() -> None:
    assert dimension_shift(4096) == 1.0
    assert math.isclose(dimension_shift(256 * 768), math.sqrt(48))
    assert math.isclose(dimension_shift(16 * 8, base_dim=32), 2.0)


@given(
    t=st.floats(0.0, 1.0),
    a=st.floats(0.05, 20.0),
    b=st.floats(0.05, 20.0),
)
def test_time_shift_is_a_group_of_warps(t: float, a: float, b: float) -> None:
    """Shifts fix 0 and 1, keep order, compose by multiplying, and shift 1 is the identity."""
    assert time_shift(0.0, a) == 0.0 and math.isclose(time_shift(1.0, a), 1.0)
    assert math.isclose(time_shift(t, 1.0), t)
    assert math.isclose(time_shift(time_shift(t, a), b), time_shift(t, a * b), rel_tol=1e-9, abs_tol=1e-12)
    assert (time_shift(t, a) <= t) == (a >= 1) or math.isclose(time_shift(t, a), t)


def test_bad_inputs_raise_value_errors() -> None:
    def model(x, t, y):
        return x

    x1 = unit(4, 3, 5)
    y = torch.zeros(4, dtype=torch.long)
    with pytest.raises(ValueError, match="unit tokens"):
        rfm_loss(model, 1.5 * x1, y)
    with pytest.raises(ValueError, match="x1 must have shape"):
        rfm_loss(model, x1[0, 0], y)
    with pytest.raises(ValueError, match="x1 must be a floating tensor"):
        rfm_loss(model, x1.long(), y)
    with pytest.raises(ValueError, match="y must be a tensor of 4 labels"):
        rfm_loss(model, x1, y[:3])
    with pytest.raises(ValueError, match="the model returned shape"):
        rfm_loss(lambda x, t, y: x[..., :2], x1, y)
    with pytest.raises(ValueError, match="shift must be > 0"):
        ShiftedTime(UniformTime(), 0.0)
    with pytest.raises(ValueError, match="std must be > 0"):
        LogitNormalTime(0.0, -1.0)
    # the Euclidean objective takes any latents
    euclidean_fm_loss(model, 1.5 * x1, y)
