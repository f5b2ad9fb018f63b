"""One resolution of a run's config: preset < recipe < file < flags, and what was set on purpose."""

from __future__ import annotations

import pytest

from dinosae.config import ConfigError, resolve_ae_run, resolve_dit_run


def test_flags_win_over_the_file_which_wins_over_the_recipe():
    file = {"train": {"lr": 2e-5, "ema_decay": 0.99}, "model": {"image_size": 128}}
    run = resolve_ae_run("tiny", recipe="hae", stage=2, file=file, train={"lr": 3e-5, "steps": 100},
                         model={"image_size": None})
    assert run.train.lr == 3e-5 and run.train.ema_decay == 0.99 and run.model.image_size == 128
    assert run.train.betas == (0.5, 0.9) and run.train.noise_ramp_steps == 50  # the recipe, for 100 steps
    assert run.model.latent_scale == "raw_tokens"


def test_only_what_was_given_counts_as_explicit():
    quiet = resolve_ae_run()
    assert quiet.explicit == {"model": frozenset(), "train": frozenset()}
    assert quiet.model.vit == "vit_base_patch16_dinov3" and quiet.train.stage == 1
    named = resolve_ae_run("tiny", recipe="hae", train={"seed": 3})
    assert "vit" in named.explicit["model"] and {"seed", "batch_size", "lr"} <= named.explicit["train"]


def test_the_dit_takes_the_cache_shape_and_lightning_flags():
    run = resolve_dit_run("tiny", dim=32, grid_size=4, num_classes=7, lightning=True,
                          model={"manifold": "euclidean", "prediction": "x1"})
    assert (run.model.in_dim, run.model.grid_size, run.model.num_classes, run.model.rope) == (32, 4, 7, True)
    assert (run.model.manifold, run.model.prediction) == ("euclidean", "x1")
    assert {"rope", "norm", "manifold", "prediction"} <= run.explicit["model"]


def test_unknown_file_keys_are_refused_before_anything_runs():
    with pytest.raises(ConfigError, match="did you mean 'lr'"):
        resolve_ae_run("tiny", file={"train": {"lrr": 1.0}})
