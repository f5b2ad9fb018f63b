"""Converting config dataclasses to and from JSON-ready dicts, checking their fields, presets and
override files.

Every config dataclass calls :func:`check_fields` first in ``__post_init__``,
so a wrong type or a non-finite number is refused however the config is built
(in Python, from a file or from flags). :func:`from_dict` reads a nested dict
(a config file, a checkpoint's ``meta.json``) and names the place of any
problem by its path (``train.lr``), with a "did you mean" for unknown keys.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import math
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A config field, key or file that cannot be used; the message names its path."""


def preset(presets: dict[str, T], name: str) -> T:
    """A fresh copy of the preset ``name`` (edits never leak into the registry)."""
    if name not in presets:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(presets)}")
    return from_dict(type(presets[name]), to_dict(presets[name]))


def to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready dict of a (nested) config dataclass."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def unknown_key_message(key: str, known: typing.Iterable[str], where: str) -> str:
    """``"unknown key 'lrr' in train (did you mean 'lr'?)"``, listing the choices when nothing is close.

    Example:
        >>> unknown_key_message("lrr", ["lr", "steps"], "train")
        "unknown key 'lrr' in train (did you mean 'lr'?)"
    """
    known = sorted(known)
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"did you mean {close[0]!r}?" if close else f"the keys are {', '.join(known)}"
    return f"unknown key {key!r} in {where} ({hint})"


def from_dict(cls: type[T], data: dict[str, Any], path: str = "") -> T:
    """Build ``cls`` from a dict, recursively; unknown keys and wrong values are a ``ConfigError`` that
    names their path (``path`` prefixes it: ``"train"``).

    Lists become tuples, and a numeric string becomes a number where the field is a number (YAML reads
    ``1e-4`` as a string).

    Example:
        >>> from dinosae.config import AETrainConfig
        >>> from_dict(AETrainConfig, {"lr": "1e-4"}).lr
        0.0001
        >>> from_dict(AETrainConfig, {"lrr": 1e-4}, "train")
        Traceback (most recent call last):
        ...
        dinosae.config.base.ConfigError: unknown key 'lrr' in train (did you mean 'lr'?)
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{path or cls.__name__}: expected a mapping of fields, got {_shown(data)}")
    hints = _field_types(cls)
    for key in data:
        if key not in hints:
            raise ConfigError(unknown_key_message(str(key), hints, path or cls.__name__))
    values = {}
    for name, value in data.items():
        where = f"{path}.{name}" if path else name
        nested = _dataclass_in(hints[name])
        if nested is not None and isinstance(value, dict):
            value = from_dict(nested, value, where)
        else:
            value = _coerce(value, hints[name])
        values[name] = value
    try:
        return cls(**values)
    except ConfigError as error:
        raise ConfigError(f"{path}.{error}" if path else str(error)) from error
    except ValueError as error:
        raise ConfigError(f"{path}: {error}" if path else str(error)) from error


def check_fields(config: Any) -> None:
    """Refuse a field whose value does not have its annotated type, or a number that is not finite.

    Example:
        >>> from dinosae.config import AETrainConfig
        >>> AETrainConfig(lr=float("inf"))
        Traceback (most recent call last):
        ...
        dinosae.config.base.ConfigError: lr: expected a finite number, got inf
    """
    for name, kind in _field_types(type(config)).items():
        problem = _mismatch(getattr(config, name), kind)
        if problem:
            raise ConfigError(f"{name}: {problem}")


def check_at_least(config: Any, minimum: int, *names: str) -> None:
    """Refuse integer fields below ``minimum`` (cadences, counts), naming each."""
    for name in names:
        if getattr(config, name) < minimum:
            raise ConfigError(f"{name}: must be at least {minimum}, got {getattr(config, name)}")


def check_range(config: Any, low: int, high: int, *names: str) -> None:
    """Refuse integer fields (or the items of tuple fields) outside ``[low, high]``, naming each: sizes beyond
    any model's, from a hostile or mistyped file, would allocate terabytes before anything else failed.

    Example:
        >>> from dinosae.config import DiTConfig
        >>> DiTConfig(grid_size=100_000)
        Traceback (most recent call last):
        ...
        dinosae.config.base.ConfigError: grid_size: must lie in [1, 1024], got 100000
    """
    for name in names:
        value = getattr(config, name)
        for item in value if isinstance(value, tuple) else (value,):
            if item is not None and not low <= item <= high:
                raise ConfigError(f"{name}: must lie in [{low}, {high}], got {item}")


@functools.cache
def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _options(kind: Any) -> tuple[Any, ...]:
    """The alternatives of a union annotation (``float | None`` -> ``(float, NoneType)``), else ``(kind,)``."""
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        return typing.get_args(kind)
    return (kind,)


def _dataclass_in(kind: Any) -> type | None:
    return next((k for k in _options(kind) if dataclasses.is_dataclass(k)), None)


def _coerce(value: Any, kind: Any) -> Any:
    options = _options(kind)
    sequence = next((k for k in options if typing.get_origin(k) is tuple), None)
    if isinstance(value, (list, tuple)) and sequence is not None:
        args = typing.get_args(sequence)
        items = args[:1] * len(value) if len(args) == 2 and args[1] is Ellipsis else args
        if len(items) != len(value):
            return tuple(value)  # check_fields names the count
        return tuple(_coerce(item, item_kind) for item, item_kind in zip(value, items))
    if isinstance(value, str) and float in options and str not in options:
        try:
            return float(value)
        except ValueError:
            return value  # check_fields names it
    return value


def _mismatch(value: Any, kind: Any) -> str | None:
    """Why ``value`` is not of type ``kind`` (None when it is)."""
    options = _options(kind)
    problems = [_mismatch_one(value, option) for option in options]
    if any(problem is None for problem in problems):
        return None
    named = [problem for option, problem in zip(options, problems) if option is not type(None)]
    return named[0] if len(named) == 1 else f"expected {_describe(kind)}, got {_shown(value)}"


def _mismatch_one(value: Any, kind: Any) -> str | None:
    if kind is type(None):
        return None if value is None else "expected None"
    if kind is bool:
        return None if isinstance(value, bool) else f"expected true or false, got {_shown(value)}"
    if kind is int:
        return None if isinstance(value, int) and not isinstance(value, bool) else \
            f"expected an integer, got {_shown(value)}"
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"expected a number, got {_shown(value)}"
        return None if math.isfinite(value) else f"expected a finite number, got {value}"
    if kind is str:
        return None if isinstance(value, str) else f"expected a string, got {_shown(value)}"
    if dataclasses.is_dataclass(kind):
        return None if isinstance(value, kind) else f"expected a {kind.__name__}, got {_shown(value)}"
    if typing.get_origin(kind) is tuple:
        if not isinstance(value, (tuple, list)):
            return f"expected a list, got {_shown(value)}"
        args = typing.get_args(kind)
        items = args[:1] * len(value) if len(args) == 2 and args[1] is Ellipsis else args
        if len(items) != len(value):
            return f"expected {len(items)} values, got {len(value)}"
        for index, (item, item_kind) in enumerate(zip(value, items)):
            problem = _mismatch(item, item_kind)
            if problem:
                return f"item {index}: {problem}"
        return None
    return None  # annotations this module does not check (Any, dicts)


def _describe(kind: Any) -> str:
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string", type(None): "null"}
    return " or ".join(names.get(k, getattr(k, "__name__", str(k))) for k in _options(kind))


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def merge(config: T, overrides: dict[str, Any], path: str = "") -> T:
    """``config`` with fields replaced by ``overrides`` (nested dicts merge into nested configs)."""
    data = to_dict(config)
    deep_update(data, overrides)
    return from_dict(type(config), data, path)


def deep_update(target: dict[str, Any], updates: dict[str, Any]) -> None:
    """Update ``target`` in place; nested dicts merge key by key.

    Example:
        >>> config = {"decoder": {"depths": [1, 1], "act": "silu"}}
        >>> deep_update(config, {"decoder": {"act": "relu"}})
        >>> config
        {'decoder': {'depths': [1, 1], 'act': 'relu'}}
    """
    for key, value in updates.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            deep_update(target[key], value)
        else:
            target[key] = value


# The sections of a config file: what each overrides.
SECTIONS = ("model", "train")


def read_overrides(path: str | Path) -> dict[str, Any]:
    """Overrides from a ``.json`` or ``.yaml``/``.yml`` file: a mapping with ``model`` and ``train`` sections.

    A missing file is a ``FileNotFoundError``; unreadable syntax, another top-level key or a section
    that is not a mapping is a ``ConfigError`` naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {str(path)!r} does not exist")
    data = _parse(path)
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping with sections {', '.join(SECTIONS)}")
    for key, value in data.items():
        if key not in SECTIONS:
            raise ConfigError(f"config file {str(path)!r}: {unknown_key_message(str(key), SECTIONS, 'the file')}")
        if not isinstance(value, dict):
            raise ConfigError(f"config file {str(path)!r}: {key} must be a mapping of fields, got {_shown(value)}")
    return data


# A config file is a few dozen fields: these bounds refuse what no config is (a deep or huge structure, a YAML
# "billion laughs" of aliases) before it costs minutes and gigabytes.
MAX_CONFIG_BYTES = 1 << 20
MAX_CONFIG_DEPTH = 16


def _parse(path: Path) -> Any:
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise ConfigError(f"config file {str(path)!r} is larger than {MAX_CONFIG_BYTES >> 20} MiB: not a config")
    yaml_file = path.suffix.lower() in (".yaml", ".yml")
    try:
        text = path.read_text()
        data = _load_yaml(text) if yaml_file else json.loads(text)
    except RecursionError as error:
        raise ConfigError(f"config file {str(path)!r} nests deeper than {MAX_CONFIG_DEPTH} levels") from error
    except ConfigError as error:
        raise ConfigError(f"config file {str(path)!r}: {error}") from error
    except Exception as error:  # yaml.YAMLError, ValueError (JSON), UnicodeDecodeError: the file's syntax
        reason = " ".join(str(error).split())[:300]
        raise ConfigError(f"config file {str(path)!r} is not valid {'YAML' if yaml_file else 'JSON'}: {reason}") from error
    _check_depth(data, str(path))
    return data


def _load_yaml(text: str) -> Any:
    """YAML's safe subset without anchors and aliases: no config needs them, and aliases nested in aliases
    expand exponentially."""
    import yaml

    class Loader(yaml.SafeLoader):
        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.events.AliasEvent) or getattr(self.peek_event(), "anchor", None):
                raise ConfigError("YAML anchors and aliases (& and *) are not allowed in a config")
            return super().compose_node(parent, index)

    return yaml.load(text, Loader=Loader)


def _check_depth(data: Any, where: str) -> None:
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_CONFIG_DEPTH:
            raise ConfigError(f"config file {where!r} nests deeper than {MAX_CONFIG_DEPTH} levels")
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
        stack.extend((child, depth + 1) for child in children)
