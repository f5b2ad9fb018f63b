"""Configurations as dataclasses with named presets, overridable from a JSON/YAML file or flags.

A run's full configuration is written to ``RUN/config.json`` and stored in each
checkpoint, so a checkpoint alone rebuilds its model.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass
class DecoderConfig:
    """Stage widths, depths and block kinds, from full resolution (index 0) to the latent grid.

    ``blocks[i]`` is ``"res"`` (two 3x3 convolutions) or ``"vit"`` (EfficientViT:
    linear attention + GLU conv MLP, cheap enough at low resolution). Five stages
    upsample by 2 four times: x16, one pixel block per token. The remaining
    fields choose between this toolkit's defaults and the official release's
    variants (``dinosae.official`` sets them when it reads a released file).
    """

    widths: tuple[int, ...] = (256, 512, 512, 1024, 1024)
    depths: tuple[int, ...] = (5, 5, 3, 3, 3)
    blocks: tuple[str, ...] = ("res", "res", "res", "vit", "vit")
    head_dim: int = 32
    norm: str = "pixel"
    vit_norm: bool = True
    attention_scales: tuple[int, ...] = (5,)
    upsample: str = "interpolate"
    out_act: str = "silu"
    in_shortcut: bool = False


@dataclass
class AEConfig:
    """The autoencoder: ViT, stem and decoder."""

    vit: str = "vit_base_patch16_dinov3"
    image_size: int = 256
    stem: str = "hierarchical"
    stem_norm: str = "pixel"
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    disc_depths: tuple[int, ...] = (2, 5, 8, 11)


AE_PRESETS: dict[str, AEConfig] = {
    "tiny": AEConfig(vit="vit_tiny_patch16_dinov3_qkvb", image_size=64,
                     decoder=DecoderConfig(widths=(16, 32, 64, 128, 128), depths=(0, 1, 1, 1, 1),
                                           head_dim=16),
                     disc_depths=(3, 7, 11)),
    "S": AEConfig(vit="vit_small_patch16_dinov3",
                  decoder=DecoderConfig(widths=(128, 256, 256, 512, 512), depths=(2, 2, 2, 2, 2))),
    "B": AEConfig(vit="vit_base_patch16_dinov3"),
    "L": AEConfig(vit="vit_large_patch16_dinov3", disc_depths=(5, 11, 17, 23)),
}


def preset(presets: dict[str, T], name: str) -> T:
    """A fresh copy of the preset ``name`` (edits never leak into the registry)."""
    if name not in presets:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(presets)}")
    return from_dict(type(presets[name]), to_dict(presets[name]))


def to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready dict of a (nested) config dataclass."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Build ``cls`` from a dict, recursively; unknown keys are an error naming them."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields: {sorted(unknown)}")
    values = {}
    for name, value in data.items():
        nested = _dataclass_of(cls, name)
        if nested is not None and isinstance(value, dict):
            value = from_dict(nested, value)
        elif isinstance(value, list):
            value = tuple(value)
        values[name] = value
    return cls(**values)


def _dataclass_of(cls: type, name: str) -> type | None:
    default = next(f for f in dataclasses.fields(cls) if f.name == name)
    if default.default_factory is not dataclasses.MISSING:
        sample = default.default_factory()
        if dataclasses.is_dataclass(sample):
            return type(sample)
    return None


def merge(config: T, overrides: dict[str, Any]) -> T:
    """``config`` with fields replaced by ``overrides`` (nested dicts merge into nested configs)."""
    data = to_dict(config)
    _deep_update(data, overrides)
    return from_dict(type(config), data)


def _deep_update(target: dict[str, Any], updates: dict[str, Any]) -> None:
    for key, value in updates.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _deep_update(target[key], value)
        else:
            target[key] = value


def read_overrides(path: str | Path) -> dict[str, Any]:
    """Overrides from a ``.json`` or ``.yaml``/``.yml`` file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {str(path)!r} does not exist")
    text = path.read_text()
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(text)
    else:
        data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError(f"config file {str(path)!r} must hold a mapping of fields")
    return data
