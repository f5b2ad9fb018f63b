"""What the trainers do: stage rules, schedules, noise bounds, counts, and frozen configs."""

from __future__ import annotations

import dataclasses

import pytest

from dinosae.config import AETrainConfig, ConfigError, DiTTrainConfig
from dinosae.config.training import RESUME_MODES, STAGE_RULE_FIELDS


def test_none_fields_take_their_stage_rules_and_derived_ones_follow():
    config = AETrainConfig(stage=4, lr=2e-5, gan_start=30)
    assert (config.lr, config.disc_lr, config.gan_weight, config.train_stem, config.latent_noise) == (
        2e-5, 2e-5, 0.5, False, True)
    assert config.disc_start == 30
    assert AETrainConfig(stage=1).gan_weight == 0.0 and set(STAGE_RULE_FIELDS) <= set(dataclasses.asdict(config))
    with pytest.raises(ValueError, match="stage must be one of"):
        AETrainConfig(stage=7)


def test_learning_rate_schedules_and_noise_ramps_are_functions_of_the_step():
    warm = AETrainConfig(steps=10, lr=1.0, warmup_steps=2, lr_schedule="cosine", lr_min_ratio=0.1)
    assert [round(warm.lr_at(s), 4) for s in (0, 1, 2, 9)] == [0.5, 1.0, 1.0, 0.1343]
    assert warm.schedule_depends_on_steps() and not AETrainConfig().schedule_depends_on_steps()
    ramp = AETrainConfig(stage=4, noise_max_start=0.2, noise_max=0.6, noise_ramp_steps=4)
    assert [round(ramp.noise_bound(s), 3) for s in (0, 2, 4, 100)] == [0.2, 0.4, 0.6, 0.6]
    assert AETrainConfig(stage=1).noise_bound(5) == 0.0


@pytest.mark.parametrize("fields, message", [
    (dict(batch_size=6, grad_accum=4), "not a multiple of grad_accum"),
    (dict(ckpt_every=0), "ckpt_every: must be at least 1"),
    (dict(lr=float("nan")), "lr: expected a finite number"),
    (dict(noise="uniform"), "noise must be one of"),
    (dict(crop="left"), "crop must be one of"),
])
def test_bad_fields_are_refused_by_name(fields, message):
    with pytest.raises((ConfigError, ValueError), match=message):
        AETrainConfig(**fields)


def test_configs_are_frozen_and_resume_has_one_spelling():
    with pytest.raises(dataclasses.FrozenInstanceError):
        AETrainConfig().lr = 1.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        DiTTrainConfig().steps = 1
    assert RESUME_MODES == (None, "latest", "auto")
    with pytest.raises(ValueError, match="radial_weight must be >= 0"):
        DiTTrainConfig(radial_weight=-1.0)
