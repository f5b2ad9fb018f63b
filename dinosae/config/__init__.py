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

from dinosae.config.autoencoder import AE_PRESETS, AEConfig, DecoderConfig
from dinosae.config.base import ConfigError, from_dict, merge, preset, read_overrides, to_dict
from dinosae.config.dit import DIT_PRESETS, LIGHTNING_FLAGS, DiTConfig
from dinosae.config.registry import PRESETS, list_models, model_config, preset_names
from dinosae.config.resolve import ResolvedRun, RunRequest, resolve_ae_run, resolve_dit_run
from dinosae.config.training import AETrainConfig, DiTTrainConfig, DistillConfig

__all__ = [
    "AE_PRESETS", "AEConfig", "AETrainConfig", "ConfigError", "DIT_PRESETS", "DecoderConfig", "DiTConfig",
    "DiTTrainConfig", "DistillConfig", "LIGHTNING_FLAGS", "PRESETS", "ResolvedRun", "RunRequest", "from_dict", "list_models",
    "merge", "model_config", "preset", "preset_names", "read_overrides",
    "resolve_ae_run", "resolve_dit_run",
    "to_dict",
]
