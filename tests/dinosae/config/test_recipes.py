"""Recipes as data files: every file reads as a config file, the stage rules live there, and the two formulas."""

from __future__ import annotations

import pytest

from dinosae.config import AEConfig, AETrainConfig, DiTConfig, DiTTrainConfig
from dinosae.config.base import ConfigError
from dinosae.config.recipes import (DEFAULT_RECIPE, RECIPES, ROOT, derive, gaussian_radius, recipe_overrides,
                                    stage_rules, stages)

CLASSES = {"ae": (AEConfig, AETrainConfig), "dit": (DiTConfig, DiTTrainConfig)}


@pytest.mark.parametrize("path", sorted(ROOT.glob("*/*.yaml")), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_recipe_file_names_only_real_fields(path):
    sections = recipe_overrides(path.parent.name, path.stem)
    model_class, train_class = CLASSES["dit" if path.stem == "dit" else "ae"]
    for section, cls in (("model", model_class), ("train", train_class)):
        names = {f for f in cls.__dataclass_fields__}
        assert set(sections.get(section, {})) <= names, (path, set(sections.get(section, {})) - names)


def test_the_default_recipes_stage_files_are_the_stage_rules():
    assert RECIPES == ("dino-sae", "hae") and DEFAULT_RECIPE == "dino-sae" and stages() == [1, 2, 3, 4]
    rules = {stage: stage_rules(stage) for stage in stages()}
    assert [rules[s]["lr"] for s in stages()] == [1e-5, 1e-4, 1e-4, 5.4e-5]  # the official release's README
    assert [rules[s]["train_stem"] for s in stages()] == [True, True, False, False]
    assert [rules[s]["latent_noise"] for s in stages()] == [False, False, False, True]
    for stage in stages():  # a config built in Python takes the same rules
        config = AETrainConfig(stage=stage)
        assert all(getattr(config, name) == value for name, value in rules[stage].items())
    with pytest.raises(ValueError, match=r"stage must be one of \[1, 2, 3, 4\], got 5"):
        stage_rules(5)


def test_a_recipe_without_a_stage_names_the_stages_it_has():
    with pytest.raises(ValueError, match=r"the hae recipe has no autoencoder stage 3 \(its stages: \[1, 2\]\)"):
        recipe_overrides("hae", "ae-stage3")
    with pytest.raises(ValueError, match="unknown recipe 'v3'"):
        recipe_overrides("v3", "dit")


def test_the_formulas_evaluate_once_the_run_is_known():
    assert derive("steps / 20", "gan_start", steps=400) == 20 and derive("steps/2", "x", steps=401) == 200
    assert derive("E|N(0, I_D)|", "radius", dim=1024) == pytest.approx(31.9922, abs=1e-4)
    assert gaussian_radius(2) == pytest.approx((3.141592653589793 / 2) ** 0.5)  # the Rayleigh mean
    assert derive("gaussian", "noise") == "gaussian" and derive(3, "lr") == 3
    with pytest.raises(ConfigError, match="divides by zero"):
        derive("steps / 0", "gan_start", steps=10)


def test_recipe_copies_do_not_leak_edits():
    recipe_overrides("hae", "dit")["train"]["lr"] = 1.0
    assert recipe_overrides("hae", "dit")["train"]["lr"] == 2e-4
