"""Checkpoints that survive a crash at any moment and load without running code.

Layout of a run directory::

    RUN/checkpoints/step_00001000/model.safetensors   weights (the modules that define the model)
                                  ema.safetensors     EMA of the trainable weights, if any
                                  state.safetensors   tensors of the training state (optimizers, ...)
                                  state.json          the rest of it: step counters, skipped files, ...
                                  meta.json           format version, step, kind, config
    RUN/checkpoints/latest                            name of the newest complete checkpoint

A checkpoint directory is assembled under a temporary name and renamed into
place only when every file is written and flushed; ``latest`` is replaced the
same way, and older checkpoints are removed only after that. Whatever moment a
run dies at, ``latest`` names a complete checkpoint; if it was damaged anyway
(a copy, a hand edit), the newest complete checkpoint is used, with a warning.

Nothing is unpickled: weights and state are safetensors, the rest JSON
(``dinosae.io.state``). Weights are memory-mapped rather than read: the ranks
of a node then share one copy in the page cache. ``meta.json`` carries the
layout's ``format_version``: a checkpoint of a newer layout is refused (one
written before the field existed is version 1).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import save_file

from dinosae.io.atomic import fsync_dir, fsync_file, naming, remove_leftovers, temporary_dir, write_text
from dinosae.io.state import load_state, save_state
from dinosae.io.tensor_files import read_safetensors

CHECKPOINTS = "checkpoints"
LATEST = "latest"
MODEL, EMA_FILE, META = "model.safetensors", "ema.safetensors", "meta.json"
STATE_TENSORS, STATE_JSON = "state.safetensors", "state.json"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint path does not exist or does not hold a usable checkpoint."""


@dataclass
class Checkpoint:
    """What a checkpoint holds, loaded onto the CPU.

    Example:
        >>> import tempfile, torch
        >>> run = tempfile.mkdtemp()
        >>> path = save_checkpoint(run, Checkpoint(step=3, model={"w": torch.ones(2)}, meta={"kind": "demo"}))
        >>> load_checkpoint(run).step
        3
    """

    step: int
    model: dict[str, torch.Tensor]
    ema: dict[str, torch.Tensor] | None = None
    state: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None


def check_finite(tensors: dict[str, torch.Tensor], what: str) -> None:
    """A ``FloatingPointError`` naming the first tensor of ``tensors`` that holds a NaN or an infinity."""
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise FloatingPointError(f"{what} {name!r} holds NaN or infinite values; not saved")


def save_checkpoint(run_dir: str | os.PathLike, checkpoint: Checkpoint, keep_last: int = 2) -> Path:
    """Write ``checkpoint`` as ``RUN/checkpoints/step_XXXXXXXX`` atomically; returns its path.

    Keeps the ``keep_last`` newest checkpoints (the new one included). Non-finite weights or EMA
    values are refused: a checkpoint is never worse than the one before it.
    """
    root = Path(run_dir) / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    name = _step_name(checkpoint.step)
    files = {MODEL: checkpoint.model}
    if checkpoint.ema is not None:
        files[EMA_FILE] = checkpoint.ema
    staging = temporary_dir(root, name)
    try:
        for filename, tensors in files.items():
            contiguous = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
            check_finite(contiguous, "weight" if filename == MODEL else "EMA weight")
            with naming(root / name / filename):
                save_file(contiguous, staging / filename)
        with naming(root / name / STATE_TENSORS):
            save_state(checkpoint.state, staging / STATE_TENSORS, staging / STATE_JSON)
        meta = dict(checkpoint.meta, step=checkpoint.step, format_version=FORMAT_VERSION)
        with naming(root / name / META):
            (staging / META).write_text(json.dumps(meta, indent=2, sort_keys=True))
            for path in staging.iterdir():
                fsync_file(path)
        final = root / name
        if final.exists():
            # A step saved twice (a rerun of the same step): replace it only once the new copy is whole.
            stale = temporary_dir(root, f"old.{name}")
            os.replace(final, stale / name)
            os.replace(staging, final)
            shutil.rmtree(stale)
        else:
            os.replace(staging, final)
        fsync_dir(root)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    write_text(root / LATEST, name + "\n")
    _prune(root, keep_last, keep=name)
    return final


def _prune(root: Path, keep_last: int, keep: str) -> None:
    for path in _complete_checkpoints(root)[:-keep_last] if keep_last > 0 else []:
        if path.name != keep:
            shutil.rmtree(path, ignore_errors=True)


def _complete_checkpoints(root: Path) -> list[Path]:
    """The checkpoint directories under ``root``, oldest first."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("step_") and _is_complete(p))


def _is_complete(directory: Path) -> bool:
    return (directory / MODEL).is_file() and (directory / META).is_file()


def remove_checkpoint_leftovers(run_dir: str | os.PathLike) -> list[Path]:
    """Delete the staging directories and temporary files that killed saves left in a run (call it
    under the run's lock); returns what was removed."""
    run_dir = Path(run_dir)
    removed = remove_leftovers(run_dir) + remove_leftovers(run_dir / CHECKPOINTS)
    return removed


def has_checkpoint(run_dir: str | os.PathLike) -> bool:
    """Whether ``run_dir`` holds a checkpoint to resume from (``latest`` may be damaged)."""
    root = Path(run_dir) / CHECKPOINTS
    return (root / LATEST).is_file() or bool(_complete_checkpoints(root))


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """The checkpoint directory (or file) that ``path`` designates.

    ``path`` may be a run directory (its latest checkpoint), ``RUN@STEP`` (the
    run's checkpoint of that step, if it was kept), a ``checkpoints``
    directory, a checkpoint directory, or a weights file (``.safetensors``,
    ``.pt``, ``.pth``, ``.ckpt``).
    """
    path = Path(path)
    at_step = _AT_STEP.fullmatch(str(path))
    if not path.exists() and at_step is not None and Path(at_step.group(1)).is_dir():
        return _checkpoint_at(Path(at_step.group(1)), int(at_step.group(2)))
    if not path.exists():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    if path.is_file() or (path / MODEL).is_file():
        return path
    for root in (path / CHECKPOINTS, path):
        latest = root / LATEST
        if latest.is_file():
            try:
                target = root / latest.read_text().strip()
            except (OSError, UnicodeDecodeError):
                target = root / "unreadable"
            if target.parent == root and _is_complete(target):
                return target
            complete = _complete_checkpoints(root)
            if not complete:
                raise CheckpointError(f"{str(latest)!r} names {target.name!r}, which is incomplete or missing, "
                                      "and no other checkpoint is complete")
            warnings.warn(f"{str(latest)!r} names {target.name!r}, which is incomplete or missing; using the "
                          f"newest complete checkpoint, {complete[-1].name}", stacklevel=2)
            return complete[-1]
    raise CheckpointError(f"{str(path)!r} is neither a run directory with checkpoints nor a checkpoint")


_AT_STEP = re.compile(r"(.+)@(\d+)")


def kept_steps(run: str | os.PathLike) -> list[int]:
    """The steps of the complete checkpoints that ``run`` (a run or its ``checkpoints`` directory) keeps,
    oldest first: what ``RUN@STEP`` may name."""
    steps = (p.name.removeprefix("step_") for p in _complete_checkpoints(_checkpoints_of(Path(run))))
    return [int(step) for step in steps if step.isdigit()]


def _checkpoints_of(run: Path) -> Path:
    """The folder of ``run``'s checkpoints: ``run/checkpoints``, or ``run`` itself when it is that folder."""
    return run / CHECKPOINTS if (run / CHECKPOINTS).is_dir() else run


def _step_name(step: int) -> str:
    return f"step_{step:08d}"


def _checkpoint_at(run: Path, step: int) -> Path:
    """``RUN@STEP``: the checkpoint of ``step`` in ``run`` (a run or its ``checkpoints`` directory)."""
    target = _checkpoints_of(run) / _step_name(step)
    if _is_complete(target):
        return target
    kept = kept_steps(run)
    raise CheckpointError(f"{str(run)!r} has no checkpoint of step {step}; it keeps steps {kept or 'none'} "
                          "(train with a larger keep_last to keep earlier ones)")


def load_checkpoint(path: str | os.PathLike, with_state: bool = True) -> Checkpoint:
    """Load a checkpoint written by ``save_checkpoint`` (see ``resolve_checkpoint`` for ``path``); its
    tensors map the files (copy-on-write) instead of being read into private memory."""
    directory = resolve_checkpoint(path)
    if directory.is_file():
        raise CheckpointError(f"{str(directory)!r} is a weights file, not a checkpoint directory "
                              "(pass it to a loader that accepts external weights)")
    try:
        model = read_safetensors(directory / MODEL)
        ema = read_safetensors(directory / EMA_FILE) if (directory / EMA_FILE).is_file() else None
        meta = json.loads((directory / META).read_text())
        state = load_state(directory / STATE_TENSORS, directory / STATE_JSON) if with_state else {}
        step = int(meta["step"])
    except (OSError, ValueError, RuntimeError, KeyError, TypeError, SafetensorError) as error:
        reason = " ".join(str(error).split()) or type(error).__name__
        raise CheckpointError(f"checkpoint {str(directory)!r} is unreadable: {reason}") from error
    version = meta.get("format_version", 1)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {str(directory)!r} has format version {version!r}; this dinosae reads up "
                              f"to {FORMAT_VERSION} (a newer dinosae wrote it)")
    return Checkpoint(step=step, model=model, ema=ema, state=state, meta=meta, path=directory)


def read_checkpoint_meta(directory: str | os.PathLike) -> dict[str, Any]:
    """A checkpoint directory's ``meta.json`` without its weights.

    Example:
        >>> import tempfile, torch
        >>> run = tempfile.mkdtemp()
        >>> path = save_checkpoint(run, Checkpoint(step=3, model={"w": torch.ones(1)}, meta={"kind": "x"}))
        >>> read_checkpoint_meta(path)
        {'format_version': 1, 'kind': 'x', 'step': 3}
    """
    try:
        meta = json.loads((Path(directory) / META).read_text())
    except (OSError, ValueError) as error:
        raise CheckpointError(f"checkpoint {str(directory)!r} has no readable {META}: {error}") from error
    if not isinstance(meta, dict):
        raise CheckpointError(f"checkpoint {str(directory)!r}: its {META} does not hold a mapping")
    return meta
