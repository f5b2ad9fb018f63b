"""ODE samplers: on the sphere by construction, convergence orders, guidance, reproducibility."""

import math

import pytest
import torch
from scipy.integrate import quad

import sphere_ops
from dinosae.config import DiTConfig
from dinosae.generation.sampling import sample_euclidean, sample_sphere, time_grid
from dinosae.models.dit import DiT

from helpers import unit


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class Recorder:
    """A model that records every state it is evaluated at and returns ``field(x, t, y)``."""

    num_classes = 3

    def __init__(self, field) -> None:
        self.field, self.states = field, []

    def __call__(self, x, t, y):
        self.states.append(x)
        return self.field(x, t, y)


# A rotation field on S^2 with a time-dependent speed: v = omega(t) A x with A skew, whose flow is
# x(t) = expm(Omega(t) A) x0. Its orbits are small circles, not geodesics, so Euler errs at first order.
A = torch.tensor([[0.0, -1.0, 0.5], [1.0, 0.0, -0.3], [-0.5, 0.3, 0.0]], dtype=torch.float64)


def omega(t):
    return (1 + 2 * t) * torch.cos(3 * t) if isinstance(t, torch.Tensor) else (1 + 2 * t) * math.cos(3 * t)


def rotation(x, t, y):
    return omega(t).view(-1, 1) * (x @ A.T)


def run(field, shape, y, **options):
    """sample_sphere in float64 from a fixed seed."""
    return sample_sphere(field, shape, y, generator=seeded(), dtype=torch.float64, **options)


@pytest.mark.parametrize(("method", "order"), [("euler", 1), ("heun", 2)])
def test_errors_fall_at_the_order_of_the_method(method: str, order: int) -> None:
    y = torch.zeros(32, dtype=torch.long)
    x0 = Recorder(rotation)
    run(x0, (32, 3), y, steps=1)
    exact = x0.states[0] @ torch.linalg.matrix_exp(quad(omega, 0, 1, epsabs=1e-14)[0] * A).T
    errors = [
        sphere_ops.dist(run(rotation, (32, 3), y, steps=n, method=method), exact).max().item() for n in (8, 16, 32, 64)
    ]
    rates = [math.log2(a / b) for a, b in zip(errors, errors[1:])]
    assert all(abs(r - order) < 0.15 for r in rates), (errors, rates)
    assert errors[-1] < (0.05 if method == "euler" else 2e-4)


@pytest.mark.parametrize("steps", [1, 7])
def test_euler_follows_the_geodesic_to_a_fixed_target_exactly(steps: int) -> None:
    """v(x, t) = logmap(x, p) / (1 - t) carries every x0 to p along a geodesic; an Euler step is an exact step.

    (Heun is not checked on this field: it evaluates the field at t = 1, where it is 0 / 0 at x = p.)
    """
    p = unit(50, 4, 6, generator=seeded(5))

    def to_p(x, t, y):
        return sphere_ops.logmap(x, p) / (1 - t.view(-1, 1, 1))

    x = run(to_p, (50, 4, 6), torch.zeros(50, dtype=torch.long), steps=steps)
    assert sphere_ops.dist(x, p).max() < 1e-12


@pytest.mark.parametrize("method", ["euler", "heun"])
def test_states_stay_on_the_sphere_over_250_steps_in_float32(method: str) -> None:
    model = DiT(DiTConfig(hidden_size=32, depth=1, num_heads=2, in_dim=16, grid_size=2, num_classes=3)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.3 * torch.randn_like(p))
    recorder = Recorder(model)
    x = sample_sphere(recorder, (4, 4, 16), torch.tensor([0, 1, 2, 3]), steps=250, method=method, cfg_scale=1.5)
    states = torch.cat(recorder.states + [x])  # with guidance, the model sees each state twice (cond, null)
    assert len(recorder.states) == 250 * (1 if method == "euler" else 2)
    assert ((states.double().norm(dim=-1) - 1).abs().max() <= 1e-5)
    assert sphere_ops.dist(recorder.states[0][:4], x).min() > 0.1  # it did move


def test_velocities_are_projected_onto_the_tangent_space() -> None:
    """A field that ignores the sphere moves like its tangent part; a normal field does not move at all."""
    w = torch.randn(6, 5, dtype=torch.float64)

    def free(x, t, y):
        return w * (1 + t.view(-1, 1))

    def tangent(x, t, y):
        return sphere_ops.proju(x, free(x, t, y))

    def normal(x, t, y):
        return 3.0 * x

    y = torch.zeros(6, dtype=torch.long)
    for method in ("euler", "heun"):
        projected = run(tangent, (6, 5), y, steps=20, method=method)
        torch.testing.assert_close(run(free, (6, 5), y, steps=20, method=method), projected, rtol=0, atol=1e-12)
    noise = sphere_ops.random_uniform((6,), 5, generator=seeded(), dtype=torch.float64)
    torch.testing.assert_close(run(normal, (6, 5), y, steps=20), noise)


NULL = 3  # Recorder.num_classes


def labelled(x, t, y):
    """A field that depends on the label, the null class included."""
    return (y.view(-1, 1).to(x.dtype) + 1) * (x @ A.T) * (1 + t.view(-1, 1))


def guided(w: float):
    """The guided field written out: v_null + w (v_cond - v_null)."""

    def field(x, t, y):
        null = labelled(x, t, torch.full_like(y, NULL))
        return null + w * (labelled(x, t, y) - null)

    return field


def test_classifier_free_guidance_combines_the_conditional_and_null_fields() -> None:
    model = Recorder(labelled)
    y = torch.tensor([0, 1, 2, 0])
    heun = dict(steps=10, method="heun")
    conditional = run(labelled, (4, 3), y, **heun)
    torch.testing.assert_close(run(model, (4, 3), y, cfg_scale=1.0, **heun), conditional, rtol=0, atol=0)
    assert model.states[0].shape[0] == 4  # scale 1: the conditional field only, one batch
    written_out = run(guided(4.0), (4, 3), y, **heun)
    torch.testing.assert_close(run(model, (4, 3), y, cfg_scale=4.0, **heun), written_out, rtol=0, atol=1e-14)
    assert model.states[-1].shape[0] == 8  # conditional and null in one batch
    unconditional = run(labelled, (4, 3), torch.full_like(y, NULL), **heun)
    torch.testing.assert_close(run(model, (4, 3), y, cfg_scale=0.0, **heun), unconditional, rtol=0, atol=1e-14)


def test_the_guidance_interval_limits_guidance_to_its_times() -> None:
    lo, hi = 0.3, 0.6

    def piecewise(x, t, y):
        inside = (t >= lo) & (t <= hi)
        return torch.where(inside.view(-1, 1), guided(3.0)(x, t, y), labelled(x, t, y))

    y = torch.tensor([2, 1, 0])
    within = run(Recorder(labelled), (3, 3), y, steps=10, cfg_scale=3.0, guidance_interval=(lo, hi))
    torch.testing.assert_close(within, run(piecewise, (3, 3), y, steps=10), rtol=0, atol=1e-14)
    assert not torch.allclose(within, run(Recorder(labelled), (3, 3), y, steps=10, cfg_scale=3.0))


def test_a_fixed_seed_gives_identical_samples() -> None:
    model = DiT(DiTConfig(hidden_size=32, depth=1, num_heads=2, in_dim=8, grid_size=2, num_classes=3)).eval()
    with torch.no_grad():
        model.final_layer.linear.weight.normal_()
    y = torch.tensor([0, 2])
    for sampler in (sample_sphere, sample_euclidean):
        a = sampler(model, (2, 4, 8), y, steps=5, cfg_scale=2.0, generator=seeded(7))
        b = sampler(model, (2, 4, 8), y, steps=5, cfg_scale=2.0, generator=seeded(7))
        c = sampler(model, (2, 4, 8), y, steps=5, cfg_scale=2.0, generator=seeded(8))
        assert torch.equal(a, b) and not torch.equal(a, c)


def test_time_grid() -> None:
    assert time_grid(4) == [0.0, 0.25, 0.5, 0.75, 1.0]
    for shift in (0.3, 1.0, 6.928):
        grid = time_grid(25, shift)
        assert grid[0] == 0.0 and grid[-1] == 1.0 and all(a < b for a, b in zip(grid, grid[1:]))
    steps = torch.tensor(time_grid(10, 3.0)).diff()
    assert (steps.diff() > 0).all()  # shift > 1: small steps near noise, large near data
    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        time_grid(0)


def test_euclidean_sampler_reaches_a_fixed_target_and_projects() -> None:
    """v = (s p - x) / (1 - t) is the linear path to s p; Euler is exact on it."""
    p = unit(5, 3, 8, generator=seeded(1))
    scale = math.sqrt(8)

    def to_p(x, t, y):
        return (scale * p - x) / (1 - t.view(-1, 1, 1))

    def drift(x, t, y):
        return torch.ones_like(x)

    y = torch.zeros(5, dtype=torch.long)
    options = dict(generator=seeded(), dtype=torch.float64)
    raw = sample_euclidean(to_p, (5, 3, 8), y, steps=3, project=False, **options)
    torch.testing.assert_close(raw, p, rtol=0, atol=1e-12)
    options = dict(generator=seeded(), dtype=torch.float64)
    half = sample_euclidean(to_p, (5, 3, 8), y, steps=3, project=False, scale=2 * scale, **options)
    torch.testing.assert_close(half, p / 2, rtol=0, atol=1e-12)
    projected = sample_euclidean(drift, (5, 3, 8), y, steps=4, method="heun", dtype=torch.float64)
    torch.testing.assert_close(projected.norm(dim=-1), torch.ones(5, 3, dtype=torch.float64))


def test_bad_requests_raise_value_errors() -> None:
    y = torch.zeros(2, dtype=torch.long)
    with pytest.raises(ValueError, match="method must be one of"):
        sample_sphere(rotation, (2, 3), y, method="rk4")
    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        sample_sphere(rotation, (2, 3), y, steps=0)
    with pytest.raises(ValueError, match="y must be a tensor of 2 labels"):
        sample_sphere(rotation, (2, 3), y[:1])
    with pytest.raises(ValueError, match="shape must be"):
        sample_euclidean(rotation, (2,), y)
    with pytest.raises(ValueError, match="guidance_interval"):
        sample_sphere(Recorder(rotation), (2, 3), y, cfg_scale=2.0, guidance_interval=(0.8, 0.2))
    with pytest.raises(ValueError, match="model.num_classes"):
        sample_sphere(rotation, (2, 3), y, cfg_scale=2.0)
