"""Post-hoc EMA: the power profiles, their least-squares combination, snapshots of a training run, exact
resume with them on, and `dinosae ema` writing a model folder."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from hypothesis import given, settings, strategies as st

from dinosae.cli import main
from dinosae.config import DiTTrainConfig
from dinosae.config.base import ConfigError
from dinosae.data.latents import LatentCache
from dinosae.io.checkpoint import load_checkpoint
from dinosae.models.loading import load_model
from dinosae.train.dit import dit_config_for, train_dit
from dinosae.train.phema import (MAX_SIGMA_REL, PosthocError, PowerEMA, coefficients, gamma_of, posthoc_average,
                                 read_snapshots, sigma_rel_of)

pytestmark = pytest.mark.usefixtures("one_thread")

FAST = dict(batch_size=32, lr=1e-3, num_workers=0, log_every=1, time_sampler="uniform", shift=1.0,
            phema_update_every=1)


@settings(max_examples=50, deadline=None)
@given(st.floats(0.002, 0.28))
def test_gamma_and_sigma_rel_are_inverse(sigma_rel):
    assert math.isclose(sigma_rel_of(gamma_of(sigma_rel)), sigma_rel, rel_tol=1e-9)


def test_widths_outside_the_profiles_are_refused():
    for bad in (0.0, MAX_SIGMA_REL, 0.5):
        with pytest.raises(ValueError, match="sigma_rel must be in"):
            gamma_of(bad)
    with pytest.raises(ConfigError, match="phema_sigma_rels"):
        DiTTrainConfig(phema_sigma_rels=(0.1, 0.1))


@pytest.mark.parametrize("every", [1, 3])
def test_power_ema_is_the_power_weighted_average_of_the_steps(every):
    """The n-th averaged step weighs the weights by the discrete power profile, whose weights grow as n^gamma;
    with ``every`` only every ``every``-th step's weights are averaged."""
    torch.manual_seed(0)
    layer = torch.nn.Linear(3, 2)
    averages = PowerEMA(layer, (0.05, 0.2), every=every)
    seen = []
    for step in range(1, 121):
        with torch.no_grad():
            layer.weight.add_(torch.randn_like(layer.weight))
        if step % every == 0:
            seen.append(layer.weight.detach().double().clone())
        averages.update(layer)
    assert len(seen) == 120 // every
    for gamma, shadow in zip(averages.gammas, averages.shadows):
        weights = torch.ones(len(seen), dtype=torch.float64)
        for t in range(1, len(seen) + 1):  # unroll the recursion: w_i = (1 - beta_i) * prod_{j > i} beta_j
            beta = (1 - 1 / t) ** (gamma + 1)
            weights[:t - 1] *= beta
            weights[t - 1] *= 1 - beta
        expected = sum(w * s for w, s in zip(weights, seen))
        torch.testing.assert_close(shadow["weight"].double(), expected, rtol=1e-5, atol=1e-6)
        assert math.isclose(float(weights.sum()), 1.0, rel_tol=1e-12)
        assert bool((weights[1:] >= weights[:-1]).all())  # later steps weigh more


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(1, 10_000), min_size=1, max_size=6, unique=True), st.integers(0, 1))
def test_a_tracked_profile_solves_to_itself(steps, which):
    """Least squares over the profiles returns the snapshot itself when the target is one of them."""
    steps = sorted(steps)
    gammas = [gamma_of(0.05), gamma_of(0.10)]
    all_steps = [t for t in steps for _ in gammas]
    all_gammas = gammas * len(steps)
    weights = coefficients(all_steps, all_gammas, steps[-1], gammas[which])
    expected = np.zeros(len(all_steps))
    expected[2 * (len(steps) - 1) + which] = 1.0
    np.testing.assert_allclose(weights, expected, atol=1e-6)


def test_narrow_profiles_at_a_million_steps_stay_finite():
    gammas = [gamma_of(0.05), gamma_of(0.10)]
    steps = [t for t in range(100_000, 1_000_001, 100_000) for _ in gammas]
    with np.errstate(all="raise"):
        weights = coefficients(steps, gammas * 10, 1_000_000, gamma_of(0.005))
    assert np.isfinite(weights).all() and math.isclose(weights.sum(), 1.0, abs_tol=1e-9)


def test_a_profile_between_the_tracked_ones_weighs_the_snapshots_to_one():
    gammas = [gamma_of(0.05), gamma_of(0.10)]
    steps = [t for t in (250, 500, 750, 1000) for _ in gammas]
    weights = coefficients(steps, gammas * 4, 1000, gamma_of(0.07))
    assert math.isclose(weights.sum(), 1.0, abs_tol=1e-9)
    assert weights[-2:].sum() > 0.9  # a profile at the last step comes mostly from its last snapshot


@pytest.fixture(scope="module")
def phema_run(tmp_path_factory, vmf_latents):
    run = tmp_path_factory.mktemp("phema") / "run"
    config = dit_config_for(LatentCache(vmf_latents), "tiny")
    train_dit(run, vmf_latents, config, DiTTrainConfig(steps=12, ckpt_every=6, phema_every=3, **FAST), device="cpu")
    return run, config


def test_training_snapshots_the_profiles_and_reconstructs_them_within_1e5(phema_run):
    run, _ = phema_run
    assert sorted({s.step for s in read_snapshots(run)}) == [3, 6, 9, 12]
    tracked = load_checkpoint(run).state["phema"]
    for index, sigma_rel in enumerate((0.05, 0.10)):
        rebuilt = posthoc_average(run, sigma_rel).weights
        for name, value in rebuilt.items():
            reference = tracked["shadows"][f"{index}/{name}"]
            error = (value - reference).norm() / reference.norm()
            assert error < 1e-5, (sigma_rel, name, float(error))


def test_resume_with_snapshots_on_is_bit_exact(tmp_path, vmf_latents, phema_run):
    run, config = phema_run
    other = tmp_path / "resumed"
    train_dit(other, vmf_latents, config, DiTTrainConfig(steps=6, ckpt_every=6, phema_every=3, **FAST), device="cpu")
    train_dit(other, vmf_latents, None, DiTTrainConfig(steps=12, phema_every=3, **FAST), resume="latest", device="cpu")
    for path in sorted((run / "phema").iterdir()):
        assert path.read_bytes() == (other / "phema" / path.name).read_bytes(), path.name


def test_ema_command_writes_a_folder_with_the_average(phema_run, tmp_path):
    run, _ = phema_run
    out = tmp_path / "ema07"
    result = CliRunner().invoke(main, ["ema", str(run), "--sigma-rel", "0.07", "--out", str(out)])
    assert result.exit_code == 0, result.output
    model = load_model(out, kind="dit")
    expected = posthoc_average(run, 0.07).weights
    for name, param in model.named_parameters():
        assert torch.equal(param.detach(), expected[name]), name
    assert "post-hoc EMA, sigma_rel 0.07 at step 12" in (out / "README.md").read_text()
    at_step = CliRunner().invoke(main, ["ema", str(run), "--sigma-rel", "0.07", "--step", "5", "--out",
                                        str(tmp_path / "bad")])
    assert at_step.exit_code != 0 and "no snapshot at step 5 (the latest before it is 3)" in at_step.output


def test_a_run_without_snapshots_is_named(tmp_path, vmf_latents):
    config = dit_config_for(LatentCache(vmf_latents), "tiny")
    run = tmp_path / "plain"
    train_dit(run, vmf_latents, config, DiTTrainConfig(steps=2, phema_every=0, **FAST), device="cpu")
    assert "phema" not in load_checkpoint(run).state
    with pytest.raises(PosthocError, match="has no post-hoc EMA snapshots"):
        posthoc_average(run, 0.1)
