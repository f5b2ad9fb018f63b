"""The names of the models: ``<kind>-<preset>``, and the config each stands for."""

from __future__ import annotations

import dataclasses
from typing import Any

from dinosae.config.autoencoder import AE_PRESETS
from dinosae.config.base import merge, preset
from dinosae.config.dit import DIT_PRESETS

PRESETS: dict[str, dict[str, Any]] = {"ae": AE_PRESETS, "dit": DIT_PRESETS}


def preset_names(kind: str) -> list[str]:
    """The preset names of one kind of model (``"ae"`` or ``"dit"``), smallest first."""
    if kind not in PRESETS:
        raise ValueError(f"unknown model kind {kind!r}; choose one of {sorted(PRESETS)}")
    return list(PRESETS[kind])


def list_models(kind: str | None = None) -> list[str]:
    """Every model name ``create_model`` takes (of one kind when given)."""
    kinds = [kind] if kind is not None else list(PRESETS)
    return [f"{k}-{name}" for k in kinds for name in preset_names(k)]


def model_config(name: str, **overrides: Any) -> tuple[str, Any]:
    """``(kind, config)`` of the model ``name`` with config fields overridden (nested dicts merge)."""
    kind, _, size = name.partition("-")
    if kind not in PRESETS or size not in PRESETS[kind]:
        raise ValueError(f"unknown model {name!r}; choose one of {list_models()}")
    config = preset(PRESETS[kind], size)
    known = {f.name for f in dataclasses.fields(config)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown {type(config).__name__} fields {unknown}; the fields are {sorted(known)}")
    return kind, merge(config, overrides) if overrides else config
