"""Nested run state (optimizer state dicts, counters, lists of paths) as safetensors plus JSON.

A checkpoint's training state must load without running code: a run directory
is shared between colleagues and downloaded from others, and a pickle can
carry any payload. The state is split in two files: every tensor goes to
``state.safetensors`` under the path that leads to it, and the structure
around them (dicts, lists, tuples, numbers, strings) to ``state.json``, where
a tensor is a ``{"__tensor__": key}`` reference. Dicts whose keys are not all
strings (an optimizer's ``state`` is keyed by parameter index) and tuples (an
optimizer's ``betas``) are tagged, so that what loads equals what was saved.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

TENSOR, TUPLE, ITEMS, FLOAT = "__tensor__", "__tuple__", "__items__", "__float__"


def save_state(state: dict[str, Any], tensors_path: str | os.PathLike, json_path: str | os.PathLike) -> None:
    """Write ``state`` as ``tensors_path`` (safetensors) and ``json_path``.

    Example:
        >>> import tempfile
        >>> root = Path(tempfile.mkdtemp())
        >>> state = {"opt": {"state": {0: {"step": torch.tensor(3.0)}}, "betas": (0.9, 0.99)}, "skipped": ["a"]}
        >>> save_state(state, root / "s.safetensors", root / "s.json")
        >>> load_state(root / "s.safetensors", root / "s.json") == state
        True
    """
    tensors: dict[str, torch.Tensor] = {}
    structure = _encode(state, "", tensors)
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tensors_path))
    Path(json_path).write_text(json.dumps(structure, allow_nan=False))


def load_state(tensors_path: str | os.PathLike, json_path: str | os.PathLike) -> dict[str, Any]:
    """Read back what :func:`save_state` wrote; a ``ValueError`` names a file that does not fit."""
    # Read into private memory, not mapped: an optimizer keeps these tensors and updates them every step.
    tensors = load_file(str(tensors_path))
    structure = json.loads(Path(json_path).read_text())
    state = _decode(structure, tensors)
    if not isinstance(state, dict):
        raise ValueError(f"{str(json_path)!r} does not hold a mapping")
    return state


def _encode(value: Any, path: str, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, torch.Tensor):
        tensors[path] = value
        return {TENSOR: path}
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value):
            return {k: _encode(v, f"{path}/{k}", tensors) for k, v in value.items()}
        return {ITEMS: [[_encode(k, f"{path}/key{i}", tensors), _encode(v, f"{path}/{k}", tensors)]
                        for i, (k, v) in enumerate(value.items())]}
    if isinstance(value, tuple):
        return {TUPLE: [_encode(v, f"{path}/{i}", tensors) for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [_encode(v, f"{path}/{i}", tensors) for i, v in enumerate(value)]
    if isinstance(value, float) and not math.isfinite(value):
        return {FLOAT: repr(value)}  # JSON has no inf or nan; AdamW's default clip, for one, is inf
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"run state at {path or '/'} holds a {type(value).__name__}, which a checkpoint cannot store")


def _decode(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, list):
        return [_decode(v, tensors) for v in value]
    if not isinstance(value, dict):
        return value
    if set(value) == {TENSOR}:
        if value[TENSOR] not in tensors:
            raise ValueError(f"run state refers to tensor {value[TENSOR]!r}, which is not stored")
        return tensors[value[TENSOR]]
    if set(value) == {TUPLE}:
        return tuple(_decode(v, tensors) for v in value[TUPLE])
    if set(value) == {ITEMS}:
        return {_decode(k, tensors): _decode(v, tensors) for k, v in value[ITEMS]}
    if set(value) == {FLOAT}:
        return float(value[FLOAT])
    return {k: _decode(v, tensors) for k, v in value.items()}
