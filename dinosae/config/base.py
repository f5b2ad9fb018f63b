"""Converting config dataclasses to and from JSON-ready dicts, presets, and override files."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


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
