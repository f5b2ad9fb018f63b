"""Configurations as dataclasses with named presets, overridable from a JSON/YAML file or flags.

Nothing here imports torch: the command line reads presets and checks
options before any model is built. A run's full configuration is written to
``RUN/config.json`` and stored in each checkpoint, so a checkpoint alone
rebuilds its model.

Models are named ``<kind>-<preset>``: ``ae-tiny``, ``ae-S``, ``ae-B``,
``ae-L`` for the autoencoder and ``dit-tiny`` ... ``dit-XL`` for the DiT.

Example:
    >>> list_models("dit")
    ['dit-tiny', 'dit-S', 'dit-B', 'dit-L', 'dit-XL']
    >>> kind, config = model_config("ae-tiny", image_size=128)
    >>> kind, config.image_size, config.vit
    ('ae', 128, 'vit_tiny_patch16_dinov3_qkvb')
"""

from __future__ import annotations

import dataclasses
from typing import Any

from dinosae.config.autoencoder import AE_PRESETS, AEConfig, DecoderConfig
from dinosae.config.base import from_dict, merge, preset, read_overrides, to_dict
from dinosae.config.dit import DIT_PRESETS, LIGHTNING_FLAGS, DiTConfig
from dinosae.config.training import AETrainConfig, DiTTrainConfig, dimension_shift

PRESETS: dict[str, dict[str, Any]] = {"ae": AE_PRESETS, "dit": DIT_PRESETS}

__all__ = [
    "AE_PRESETS", "AEConfig", "AETrainConfig", "DIT_PRESETS", "DecoderConfig", "DiTConfig", "DiTTrainConfig",
    "LIGHTNING_FLAGS", "PRESETS", "dimension_shift", "from_dict", "list_models", "merge", "model_config",
    "preset", "preset_names", "read_overrides", "to_dict",
]


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
