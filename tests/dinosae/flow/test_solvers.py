"""ODE solvers: on the sphere by construction, convergence orders, guidance, endpoint models, reproducibility."""

import math

import pytest
import torch
from scipy.integrate import quad

import sphere_ops
from dinosae.config import DiTConfig
from dinosae.flow import (Euclidean, Sphere, VelocityField, evaluation_times, function_evaluations, sample, solve,
                          time_grid)
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


SPHERE = Sphere(1.0)


def run(field, shape, y, manifold=SPHERE, **options):
    """sample in float64 from a fixed seed."""
    return sample(field, manifold, shape, y, generator=seeded(), dtype=torch.float64, **options)


@pytest.mark.parametrize(("method", "order"), [("euler", 1), ("heun", 2), ("midpoint", 2)])
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
    assert errors[-1] < (0.05 if method == "euler" else 5e-4)


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


@pytest.mark.parametrize("method", ["euler", "heun", "midpoint"])
def test_states_stay_on_the_sphere_over_250_steps_in_float32(method: str) -> None:
    model = DiT(DiTConfig(hidden_size=32, depth=1, num_heads=2, in_dim=16, grid_size=2, num_classes=3)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.3 * torch.randn_like(p))
    recorder = Recorder(model)
    x = sample(recorder, model.manifold, (4, 4, 16), torch.tensor([0, 1, 2, 3]), steps=250, method=method,
               cfg_scale=1.5)
    states = torch.cat(recorder.states + [x])  # with guidance, the model sees each state twice (cond, null)
    assert len(recorder.states) == function_evaluations(method, 250)
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
    for method in ("euler", "heun", "midpoint"):
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
    for manifold in (model.manifold, Euclidean(3.0)):
        a = sample(model, manifold, (2, 4, 8), y, steps=5, cfg_scale=2.0, generator=seeded(7))
        b = sample(model, manifold, (2, 4, 8), y, steps=5, cfg_scale=2.0, generator=seeded(7))
        c = sample(model, manifold, (2, 4, 8), y, steps=5, cfg_scale=2.0, generator=seeded(8))
        assert torch.equal(a, b) and not torch.equal(a, c)


def test_euclidean_solvers_reach_a_fixed_target() -> None:
    """v = (p - x) / (1 - t) is the straight path to p; Euler is exact on it, from noise of std 1 / scale."""
    p = unit(5, 3, 8, generator=seeded(1))

    def to_p(x, t, y):
        return (p - x) / (1 - t.view(-1, 1, 1))

    y = torch.zeros(5, dtype=torch.long)
    torch.testing.assert_close(run(to_p, (5, 3, 8), y, Euclidean(4.0), steps=3), p, rtol=0, atol=1e-12)
    noise = Euclidean(4.0).prior((5, 3, 8), generator=seeded(), dtype=torch.float64)
    assert 0.2 < noise.norm(dim=-1).mean() / math.sqrt(8) < 0.3


@pytest.mark.parametrize("manifold", [SPHERE, Euclidean(2.0)], ids=repr)
@pytest.mark.parametrize("method", ["euler", "heun", "midpoint"])
def test_an_endpoint_model_is_integrated_to_its_endpoint(manifold, method: str) -> None:
    """prediction="x1": a model that always predicts p carries every start to p with any solver, Heun's last
    step (where the implied velocity is 0 / 0) included, and the NFE is counted."""
    p = unit(7, 2, 5, generator=seeded(3))
    y = torch.zeros(7, dtype=torch.long)
    field = VelocityField(lambda x, t, y: p, manifold, y, prediction="x1")
    start = manifold.prior(p.shape, generator=seeded(), dtype=torch.float64)
    x = solve(field, start, time_grid(6, 2.0), method)
    assert manifold.dist(x, p).max() < 1e-9
    assert field.nfe == function_evaluations(method, 6, "x1")


@pytest.mark.parametrize("method", ["euler", "midpoint"])  # Heun evaluates at t = 1, where the velocity form is 0 / 0
def test_endpoint_and_velocity_predictions_agree(method: str) -> None:
    """A model that predicts x1_hat(x, t) and one that predicts logmap(x, x1_hat) / (1 - t) give one sample."""
    target = unit(4, 3, 6, generator=seeded(4))

    def endpoint(x, t, y):
        return sphere_ops.normalize(target + 0.3 * (1 - t.view(-1, 1, 1)) * x)

    def velocity(x, t, y):
        return sphere_ops.logmap(x, endpoint(x, t, y)) / (1 - t.view(-1, 1, 1))

    y = torch.zeros(4, dtype=torch.long)
    torch.testing.assert_close(run(endpoint, (4, 3, 6), y, prediction="x1", steps=12, method=method),
                               run(velocity, (4, 3, 6), y, steps=12, method=method), rtol=0, atol=1e-10)


def test_bad_requests_raise_value_errors() -> None:
    y = torch.zeros(2, dtype=torch.long)
    with pytest.raises(ValueError, match="unknown solver .*; choose one of euler, heun, midpoint"):
        sample(rotation, SPHERE, (2, 3), y, method="rk4")
    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        sample(rotation, SPHERE, (2, 3), y, steps=0)
    with pytest.raises(ValueError, match="y must be a tensor of 2 labels"):
        sample(rotation, SPHERE, (2, 3), y[:1])
    with pytest.raises(ValueError, match="shape must be"):
        sample(rotation, Euclidean(1.0), (2,), y)
    with pytest.raises(ValueError, match="guidance_interval"):
        sample(Recorder(rotation), SPHERE, (2, 3), y, cfg_scale=2.0, guidance_interval=(0.8, 0.2))
    with pytest.raises(ValueError, match="model.num_classes"):
        sample(rotation, SPHERE, (2, 3), y, cfg_scale=2.0)
    with pytest.raises(ValueError, match="unknown prediction .*; choose one of velocity, x1"):
        sample(rotation, SPHERE, (2, 3), y, prediction="eps")
    with pytest.raises(ValueError, match="noise must have the sample shape"):
        sample(rotation, SPHERE, (2, 3), y, noise=torch.ones(2, 4))


def weak(x, t, y):
    """A weaker field of the same task: the labelled one, damped and turned a little."""
    return 0.6 * labelled(x, t, y) + 0.2 * rotation(x, t, y)


def test_autoguidance_extrapolates_from_the_guide_in_the_tangent_space() -> None:
    y = torch.tensor([0, 1, 2, 0])
    for weight in (0.5, 1.7, 3.0):
        written_out = lambda x, t, y: weak(x, t, y) + weight * (labelled(x, t, y) - weak(x, t, y))  # noqa: E731
        guide = Recorder(weak)
        guided_run = run(labelled, (4, 3), y, steps=10, method="heun", guide=guide, guidance=weight)
        torch.testing.assert_close(guided_run, run(written_out, (4, 3), y, steps=10, method="heun"), rtol=0,
                                   atol=1e-13)
        assert len(guide.states) == function_evaluations("heun", 10)
    # A guide that is the main model changes nothing, whatever the weight.
    torch.testing.assert_close(run(labelled, (4, 3), y, steps=6, guide=labelled, guidance=2.5),
                               run(labelled, (4, 3), y, steps=6), rtol=0, atol=1e-14)


def test_autoguidance_and_cfg_add_their_differences_within_the_interval() -> None:
    cfg, weight, lo, hi = 2.0, 1.5, 0.2, 0.7
    y = torch.tensor([2, 0, 1])

    def written_out(x, t, y):
        null = labelled(x, t, torch.full_like(y, NULL))
        both = null + cfg * (labelled(x, t, y) - null) + (weight - 1) * (labelled(x, t, y) - weak(x, t, y))
        inside = ((t >= lo) & (t <= hi)).view(-1, 1)
        return torch.where(inside, both, labelled(x, t, y))

    guide = Recorder(weak)
    combined = run(Recorder(labelled), (3, 3), y, steps=10, method="midpoint", cfg_scale=cfg, guide=guide,
                   guidance=weight, guidance_interval=(lo, hi))
    torch.testing.assert_close(combined, run(written_out, (3, 3), y, steps=10, method="midpoint"), rtol=0,
                               atol=1e-13)
    inside = [t for t in evaluation_times("midpoint", time_grid(10)) if lo <= t <= hi]
    assert len(guide.states) == len(inside) > 0


def test_autoguidance_refuses_non_finite_weights_and_a_missing_guide() -> None:
    y = torch.tensor([0])
    for bad in (math.nan, math.inf):
        with pytest.raises(ValueError, match="guidance scales must be finite"):
            VelocityField(labelled, SPHERE, y, guide=weak, guidance=bad)
    with pytest.raises(ValueError, match="needs a guide model"):
        VelocityField(labelled, SPHERE, y, guidance=2.0)
