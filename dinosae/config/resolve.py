"""The one resolution of a run's configuration: preset, then recipe, then config file, then flags.

The command line and Python callers get the same configs from the same
inputs. Each resolution also says which fields were set on purpose (a preset
or recipe that was named, a file's keys, flags): a resumed run compares only
those with what it was trained with, so that an omitted flag never reads as a
change.

Example:
    >>> run = resolve_ae_run("tiny", stage=2, train={"steps": 400})
    >>> run.model.image_size, run.train.stage, run.train.steps, run.train.lr
    (64, 2, 400, 0.0001)
    >>> sorted(run.explicit["train"]), len(run.explicit["model"]) > 5
    (['stage', 'steps'], True)
    >>> resolve_ae_run(recipe="hae", stage=2, train={"steps": 400}).train.noise_ramp_steps
    200
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from dinosae.config.autoencoder import AEConfig
from dinosae.config.base import ConfigError, merge, unknown_key_message
from dinosae.config.dit import DIT_PRESETS, LIGHTNING_FLAGS, DiTConfig
from dinosae.config.recipes import ae_model_recipe, ae_train_recipe, dit_model_recipe, dit_train_recipe
from dinosae.config.registry import model_config
from dinosae.config.training import AETrainConfig, DiTTrainConfig

DEFAULT_AE_PRESET, DEFAULT_DIT_PRESET, DEFAULT_RECIPE = "B", "XL", "dino-sae"


@dataclass
class ResolvedRun:
    """A run's model and training configs, and the fields (per section) that were set on purpose."""

    model: Any
    train: Any
    explicit: dict[str, frozenset[str]]


def _given(values: dict[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (values or {}).items() if v is not None}


def _field_names(config: Any) -> frozenset[str]:
    return frozenset(f.name for f in dataclasses.fields(config))


def _explicit(named: dict[str, set[str]], model_config: Any, preset: str | None, recipe: str | None,
              model_recipe: dict[str, Any], train_recipe: dict[str, Any]) -> dict[str, frozenset[str]]:
    """The fields set on purpose: those ``named`` (file keys, flags), every model field of a named preset,
    and a named recipe's fields."""
    model = named["model"] | (_field_names(model_config) if preset is not None else set())
    train = set(named["train"])
    if recipe is not None:
        model |= set(model_recipe)
        train |= set(train_recipe)
    return {"model": frozenset(model), "train": frozenset(train)}


def _check_keys(section: str, values: dict[str, Any], cls: type) -> None:
    names = {f.name for f in dataclasses.fields(cls)}
    for key in values:
        if key not in names:
            raise ConfigError(unknown_key_message(str(key), names, section))


def resolve_ae_run(preset: str | None = None, *, recipe: str | None = None, stage: int | None = None,
                   file: dict[str, Any] | None = None, model: dict[str, Any] | None = None,
                   train: dict[str, Any] | None = None) -> ResolvedRun:
    """The autoencoder and training configs of one stage.

    ``None`` means "not given" (the default, and not compared on resume): the preset is ``B``, the
    recipe ``dino-sae``, the stage 1. ``file`` holds a config file's ``model`` and ``train``
    sections; ``model`` and ``train`` the flags (``None`` values are ignored).
    """
    file = file or {}
    model_flags, train_flags = _given(model), _given(train)
    _check_keys("model", file.get("model", {}), AEConfig)
    _check_keys("train", file.get("train", {}), AETrainConfig)
    recipe_name = recipe or DEFAULT_RECIPE
    _, ae_config = model_config(f"ae-{preset or DEFAULT_AE_PRESET}")
    model_recipe = ae_model_recipe(recipe_name)
    ae_config = merge(ae_config, {**model_recipe, **file.get("model", {}), **model_flags}, "model")

    train_values = {**file.get("train", {}), **train_flags}
    if stage is not None:
        train_values["stage"] = stage
    stage_now = train_values.get("stage", AETrainConfig.stage)
    train_recipe = ae_train_recipe(recipe_name, stage_now, train_values.get("steps", AETrainConfig.steps))
    train_config = merge(AETrainConfig(stage=stage_now), {**train_recipe, **train_values}, "train")

    named = {"model": set(file.get("model", {})) | set(model_flags), "train": set(train_values)}
    return ResolvedRun(ae_config, train_config, _explicit(named, ae_config, preset, recipe, model_recipe,
                                                          train_recipe))


def resolve_dit_run(preset: str | None = None, *, dim: int, grid_size: int, num_classes: int,
                    recipe: str | None = None, lightning: bool = False, file: dict[str, Any] | None = None,
                    model: dict[str, Any] | None = None, train: dict[str, Any] | None = None) -> ResolvedRun:
    """The DiT and training configs for latents of ``grid_size``² tokens of width ``dim``.

    As :func:`resolve_ae_run`; the preset defaults to ``XL``. ``lightning`` adds LightningDiT's flags.
    """
    file = file or {}
    name = preset or DEFAULT_DIT_PRESET
    if name not in DIT_PRESETS:
        raise ValueError(f"unknown DiT preset {name!r}; choose one of {list(DIT_PRESETS)}")
    _check_keys("model", file.get("model", {}), DiTConfig)
    _check_keys("train", file.get("train", {}), DiTTrainConfig)
    recipe_name = recipe or DEFAULT_RECIPE
    model_recipe = dit_model_recipe(recipe_name, dim)
    model_values = {**model_recipe, **file.get("model", {}), **(LIGHTNING_FLAGS if lightning else {}),
                    **_given(model), "in_dim": dim, "grid_size": grid_size, "num_classes": num_classes}
    dit_config = merge(DIT_PRESETS[name], model_values, "model")
    train_recipe = dit_train_recipe(recipe_name, dim)
    train_values = {**file.get("train", {}), **_given(train)}
    train_config = merge(DiTTrainConfig(), {**train_recipe, **train_values}, "train")

    named = {"model": set(file.get("model", {})) | set(_given(model)) | (set(LIGHTNING_FLAGS) if lightning else set()),
             "train": set(train_values)}
    return ResolvedRun(dit_config, train_config, _explicit(named, dit_config, preset, recipe, model_recipe,
                                                           train_recipe))
