"""The one resolution of a run's configuration: preset, then recipe, then config file, then flags, then resume.

A :class:`RunRequest` says what was asked for; :func:`resolve_ae_run` and
:func:`resolve_dit_run` turn it into frozen configs, in that order, and say for
every field where its value came from (``ResolvedRun.describe``: what
``--print-config`` prints). A run started from a model (``--init``) takes that
model's config in place of the preset's. The command line and Python callers
get the same configs from the same inputs.

Each resolution also says which fields were set on purpose (a preset or recipe
that was named, a file's keys, flags): a resumed run
(:meth:`ResolvedRun.resumed`, the last layer) takes its stored configs and
applies only those, listing each one that changes the run, so that an omitted
flag never reads as a change. Settings of the machine (``RUNTIME`` fields)
follow the request without counting as changes, and so does ``steps`` unless
the learning-rate schedule depends on it.

Example:
    >>> run = resolve_ae_run(RunRequest("tiny", stage=2, train={"steps": 400}))
    >>> run.model.image_size, run.train.stage, run.train.steps, run.train.lr
    (64, 2, 400, 0.0001)
    >>> sorted(run.explicit["train"]), len(run.explicit["model"]) > 5
    (['stage', 'steps'], True)
    >>> run.sources["train.lr"], run.sources["model.image_size"], run.sources["train.seed"]
    ('recipe dino-sae/ae-stage2.yaml', 'preset tiny', 'default')
    >>> resolve_ae_run(RunRequest(recipe="hae", stage=2, train={"steps": 400})).train.noise_ramp_steps
    200
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Collection, Mapping

from dinosae.config.base import (SECTIONS, ConfigError, deep_update, from_dict, read_overrides, to_dict,
                                 unknown_key_message)
from dinosae.config.dit import DIT_PRESETS, LIGHTNING_FLAGS, DiTConfig
from dinosae.config.recipes import DEFAULT_RECIPE, derive, recipe_file, recipe_overrides
from dinosae.config.registry import model_config
from dinosae.config.autoencoder import AEConfig
from dinosae.config.training import STAGE_RULE_FIELDS, AETrainConfig, DiTTrainConfig

logger = logging.getLogger(__name__)

DEFAULT_AE_PRESET, DEFAULT_DIT_PRESET = "B", "XL"
# The fields the data fixes, whatever was asked: a DiT's latent grid, width and classes.
DATA_FIELDS = ("in_dim", "grid_size", "num_classes")


@dataclass(frozen=True)
class RunRequest:
    """What a run was asked for, before resolution.

    ``preset`` and ``recipe`` are names (None: not given; the defaults are ``B`` or
    ``XL`` and ``dino-sae``); ``stage`` is the autoencoder's; ``lightning`` adds
    LightningDiT's flags to a DiT; ``file`` is a ``--config`` file (a path, or its
    sections already read); ``model`` and ``train`` are flags (None values: not
    given). A Python caller may pass whole ``configs`` (model, train) instead,
    either None to keep a resumed run's own; they count as set on purpose, field
    by field, unless ``explicit`` (``{"model": names, "train": names}``) narrows it.

    Example:
        >>> RunRequest.of_configs(None, DiTTrainConfig(steps=5)).configs[1].steps
        5
    """

    preset: str | None = None
    recipe: str | None = None
    stage: int | None = None
    lightning: bool = False
    file: str | os.PathLike | Mapping[str, Any] | None = None
    model: Mapping[str, Any] = field(default_factory=dict)
    train: Mapping[str, Any] = field(default_factory=dict)
    configs: tuple[Any, Any] | None = None
    explicit: Mapping[str, Collection[str]] | None = None

    @classmethod
    def of_configs(cls, model: Any, train: Any, explicit: Mapping[str, Collection[str]] | None = None) -> RunRequest:
        """A Python caller's configs (either may be None) as a request."""
        return cls(configs=(model, train), explicit=explicit)


@dataclass(frozen=True)
class ResolvedRun:
    """A run's model and training configs, the fields (per section) set on purpose, where each field's value
    came from (``"model.image_size"`` -> ``"preset tiny"``), and what a resume changed."""

    model: Any
    train: Any
    explicit: Mapping[str, frozenset[str]]
    sources: Mapping[str, str]
    changes: tuple[str, ...] = ()

    def resumed(self, stored_model: Mapping[str, Any], stored_train: Mapping[str, Any], step: int) -> ResolvedRun:
        """The last layer: a resumed run's stored configs, with the fields set on purpose applied and each one
        that alters the run listed in ``changes`` (``"train.lr: 1e-05 -> 0.0001"``).

        Example:
            >>> run = resolve_ae_run(RunRequest("tiny", train={"lr": 1e-4, "num_workers": 0}))
            >>> stored = to_dict(dataclasses.replace(run.train, lr=1e-5, num_workers=4))
            >>> again = run.resumed(to_dict(run.model), stored, step=7)
            >>> again.train.lr, again.train.num_workers, again.changes, again.sources["train.seed"]
            (0.0001, 0, ('train.lr: 1e-05 -> 0.0001',), 'the run (step 7)')
        """
        changes: list[str] = []
        sources = {}
        configs = []
        for section, stored, given in (("model", stored_model, self.model), ("train", stored_train, self.train)):
            run = from_dict(type(given), dict(stored), section)
            names = sorted(self.explicit.get(section, ()))
            runtime = getattr(type(given), "RUNTIME", ())
            for name in names:
                before, after = getattr(run, name), getattr(given, name)
                if before == after or name in runtime:
                    continue
                if name == "steps" and not run.schedule_depends_on_steps():
                    logger.info("resuming toward %d steps (the run had %d)", after, before)
                    continue
                changes.append(f"{section}.{name}: {before!r} -> {after!r}")
            configs.append(dataclasses.replace(run, **{name: getattr(given, name) for name in names}))
            for key, source in _leaves(to_dict(run), section):
                top = key.split(".")[1]
                sources[key] = self.sources[key] if top in names else f"the run (step {step})"
        return ResolvedRun(configs[0], configs[1], self.explicit, sources, tuple(changes))

    def describe(self) -> str:
        """The resolved configs, one field a line, with the value and where it came from.

        Example:
            >>> lines = resolve_dit_run(RunRequest("tiny"), dim=8, grid_size=2, num_classes=3).describe().splitlines()
            >>> print(lines[0]); print(lines[3])
            model.hidden_size  128  preset tiny
            model.in_dim  8  the latents
        """
        rows = [(key, repr(value), self.sources[key])
                for config, section in ((self.model, "model"), (self.train, "train"))
                for key, value in _leaves(to_dict(config), section)]
        width = [max(len(row[i]) for row in rows) for i in range(2)]
        lines = [f"{key:<{width[0]}}  {value:<{width[1]}}  {source}" for key, value, source in rows]
        return "\n".join(lines + [f"changed on resume: {change}" for change in self.changes])


def _leaves(data: Mapping[str, Any], prefix: str) -> list[tuple[str, Any]]:
    """``("model.decoder.widths", value)`` for every leaf of a nested config dict."""
    out = []
    for key, value in data.items():
        if isinstance(value, dict):
            out += _leaves(value, f"{prefix}.{key}")
        else:
            out.append((f"{prefix}.{key}", value))
    return out


def _given(values: Mapping[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (values or {}).items() if v is not None}


def _field_names(cls: type) -> frozenset[str]:
    return frozenset(f.name for f in dataclasses.fields(cls))


def _check_keys(section: str, values: Mapping[str, Any], cls: type, where: str) -> None:
    names = _field_names(cls)
    for key in values:
        if key not in names:
            raise ConfigError(f"{where}: {unknown_key_message(str(key), names, section)}")


def _read_file(file: str | os.PathLike | Mapping[str, Any] | None) -> tuple[dict[str, Any], str]:
    """A ``--config`` file's sections and the label its fields are shown with."""
    if file is None:
        return {}, ""
    if isinstance(file, Mapping):
        unknown = sorted(set(file) - set(SECTIONS))
        if unknown:
            raise ConfigError(f"the config: {unknown_key_message(unknown[0], SECTIONS, 'the file')}")
        return {k: dict(v) for k, v in file.items()}, "config file"
    return read_overrides(file), f"--config {Path(file).name}"


class _Layers:
    """Config fields set layer by layer (nested sections merge); the last layer to set a field is its source."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self.sources: dict[str, str] = {}

    def add(self, values: Mapping[str, Any], label: str, section: str) -> None:
        values = json.loads(json.dumps(values))  # a copy, nested mappings as dicts
        deep_update(self.values, values)
        self.sources.update({leaf: label for leaf, _ in _leaves(values, section)})


def _add_recipe(request: RunRequest, name: str, model: _Layers, train: _Layers, named: dict[str, set[str]]) -> None:
    """The recipe's file ``name`` as a layer (the default recipe's when none was named); a named recipe's
    fields count as set on purpose."""
    recipe = request.recipe or DEFAULT_RECIPE
    overrides = recipe_overrides(recipe, name)
    label = f"recipe {recipe_file(recipe, name)}"
    for section, layers in (("model", model), ("train", train)):
        layers.add(overrides.get(section, {}), label, section)
        if request.recipe is not None:
            named[section] |= set(overrides.get(section, {}))


def _defaults(sources: dict[str, str], model: Any, train: Any) -> dict[str, str]:
    """``sources`` with every field that no layer set marked as its dataclass default."""
    for config, section in ((model, "model"), (train, "train")):
        for key, _ in _leaves(to_dict(config), section):
            sources.setdefault(key, "default")
    return sources


def _explicit(named: Mapping[str, Collection[str]]) -> dict[str, frozenset[str]]:
    return {section: frozenset(names) for section, names in named.items()}


def resolve_ae_run(request: RunRequest = RunRequest(), *, init: AEConfig | None = None) -> ResolvedRun:
    """The autoencoder and training configs of one stage.

    ``init`` is the config of the model a new stage starts from (``--init``): it replaces the preset (and a
    Python caller's model config: the weights are the init's). The
    recipe's stage file (``recipes/<recipe>/ae-stage<N>.yaml``) applies over it, then the file, then the
    flags; what no layer sets takes the stage rules (``recipes/dino-sae``) and the fields' defaults.

    Example:
        >>> resolve_ae_run(RunRequest("tiny", file={"train": {"lrr": 1.0}}))
        Traceback (most recent call last):
        ...
        dinosae.config.base.ConfigError: config file: unknown key 'lrr' in train (did you mean 'lr'?)
    """
    file, file_label = _read_file(request.file)
    _check_keys("model", file.get("model", {}), AEConfig, file_label)
    _check_keys("train", file.get("train", {}), AETrainConfig, file_label)
    flags_model, flags_train = _given(request.model), _given(request.train)
    given_model, given_train = request.configs or (None, None)
    model, train = _Layers(), _Layers()
    named: dict[str, set[str]] = {"model": set(), "train": set()}

    if init is not None:
        model.add(to_dict(init), "--init", "model")
    elif given_model is not None:
        model.add(to_dict(given_model), "the caller's config", "model")
        named["model"] |= _field_names(AEConfig)
    else:
        name = request.preset or DEFAULT_AE_PRESET
        model.add(to_dict(model_config(f"ae-{name}")[1]), f"preset {name}", "model")
        if request.preset is not None:
            named["model"] |= _field_names(AEConfig)
    if given_train is not None:
        train.add(to_dict(given_train), "the caller's config", "train")
        named["train"] |= _field_names(AETrainConfig)
    stage = request.stage or file.get("train", {}).get("stage") or train.values.get("stage") or AETrainConfig.stage
    if request.configs is None:
        _add_recipe(request, f"ae-stage{stage}", model, train, named)
    for section, layers, values, label in (("model", model, file.get("model", {}), file_label),
                                           ("train", train, file.get("train", {}), file_label),
                                           ("model", model, flags_model, "command line"),
                                           ("train", train, flags_train, "command line")):
        layers.add(values, label, section)
        named[section] |= set(values)
    if request.stage is not None:
        train.add({"stage": request.stage}, "command line", "train")
        named["train"].add("stage")
    train.values.setdefault("stage", stage)
    steps = train.values.get("steps", AETrainConfig.steps)
    train.values = {key: derive(value, key, steps=steps) for key, value in train.values.items()}

    ae_config = from_dict(AEConfig, model.values, "model")
    train_config = from_dict(AETrainConfig, train.values, "train")
    sources = {**model.sources, **train.sources}
    rules = recipe_file(DEFAULT_RECIPE, f"ae-stage{train_config.stage}")
    for name in STAGE_RULE_FIELDS:
        sources.setdefault(f"train.{name}", f"stage rule ({rules})")
    sources.setdefault("train.disc_lr", "= lr")
    sources.setdefault("train.disc_start", "= gan_start")
    if request.explicit is not None:
        named = {section: set(request.explicit.get(section, ())) for section in ("model", "train")}
    return ResolvedRun(ae_config, train_config, _explicit(named), _defaults(sources, ae_config, train_config))


def resolve_dit_run(request: RunRequest = RunRequest(), *, dim: int, grid_size: int,
                    num_classes: int) -> ResolvedRun:
    """The DiT and training configs for latents of ``grid_size``² tokens of width ``dim`` in ``num_classes``
    classes (which the data fixes, whatever the layers say; a Python caller's whole config is checked
    against the data by the trainer instead), as :func:`resolve_ae_run` resolves an autoencoder's;
    the preset defaults to ``XL``, and ``request.lightning`` adds LightningDiT's flags after the file.

    Example:
        >>> run = resolve_dit_run(RunRequest("tiny", recipe="hae"), dim=1024, grid_size=16, num_classes=1000)
        >>> round(run.model.radius, 3), run.sources["model.radius"]
        (31.992, 'recipe hae/dit.yaml')
    """
    file, file_label = _read_file(request.file)
    _check_keys("model", file.get("model", {}), DiTConfig, file_label)
    _check_keys("train", file.get("train", {}), DiTTrainConfig, file_label)
    given_model, given_train = request.configs or (None, None)
    model, train = _Layers(), _Layers()
    named: dict[str, set[str]] = {"model": set(), "train": set()}
    if given_model is not None:
        model.add(to_dict(given_model), "the caller's config", "model")
        named["model"] |= _field_names(DiTConfig)
    else:
        name = request.preset or DEFAULT_DIT_PRESET
        if name not in DIT_PRESETS:
            raise ValueError(f"unknown DiT preset {name!r}; choose one of {list(DIT_PRESETS)}")
        model.add(to_dict(DIT_PRESETS[name]), f"preset {name}", "model")
        if request.preset is not None:
            named["model"] |= _field_names(DiTConfig)
    if given_train is not None:
        train.add(to_dict(given_train), "the caller's config", "train")
        named["train"] |= _field_names(DiTTrainConfig)
    if request.configs is None:
        _add_recipe(request, "dit", model, train, named)
    layers = [("model", model, file.get("model", {}), file_label), ("train", train, file.get("train", {}), file_label)]
    if request.lightning:
        layers.append(("model", model, LIGHTNING_FLAGS, "--lightning"))
    layers += [("model", model, _given(request.model), "command line"),
               ("train", train, _given(request.train), "command line")]
    for section, target, values, label in layers:
        target.add(values, label, section)
        named[section] |= set(values)
    if given_model is None:  # a caller's own config is taken whole: the trainer checks that it fits the data
        model.add(dict(zip(DATA_FIELDS, (dim, grid_size, num_classes))), "the latents", "model")
    model.values = {key: derive(value, key, dim=dim) for key, value in model.values.items()}
    dit_config = from_dict(DiTConfig, model.values, "model")
    train_config = from_dict(DiTTrainConfig, train.values, "train")
    if request.explicit is not None:
        named = {section: set(request.explicit.get(section, ())) for section in ("model", "train")}
    return ResolvedRun(dit_config, train_config, _explicit(named),
                       _defaults({**model.sources, **train.sources}, dit_config, train_config))
