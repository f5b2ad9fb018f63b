"""Checkpoints that survive a crash at any moment: write aside, then rename.

Layout of a run directory::

    RUN/checkpoints/step_00001000/model.safetensors   weights (the modules that define the model)
                                  ema.safetensors     EMA of the trainable weights, if any
                                  state.pt            optimizers, scalers, step, RNG states
                                  meta.json           step, kind, config
    RUN/checkpoints/latest                            name of the newest complete checkpoint

A checkpoint directory is assembled under a temporary name and renamed into
place only when every file is written and flushed; ``latest`` is replaced the
same way, and older checkpoints are removed only after that. Whatever moment a
run dies at, ``latest`` names a complete checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from dinosae.io.atomic import fsync_dir, fsync_file, write_text

CHECKPOINTS = "checkpoints"
LATEST = "latest"


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


def save_checkpoint(run_dir: str | os.PathLike, checkpoint: Checkpoint, keep_last: int = 2) -> Path:
    """Write ``checkpoint`` as ``RUN/checkpoints/step_XXXXXXXX`` atomically; returns its path.

    Keeps the ``keep_last`` newest checkpoints (the new one included).
    """
    root = Path(run_dir) / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    name = f"step_{checkpoint.step:08d}"
    staging = Path(tempfile.mkdtemp(dir=root, prefix=f".{name}."))
    try:
        files = {"model.safetensors": checkpoint.model}
        if checkpoint.ema is not None:
            files["ema.safetensors"] = checkpoint.ema
        for filename, tensors in files.items():
            contiguous = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
            save_file(contiguous, staging / filename)
        torch.save(checkpoint.state, staging / "state.pt")
        meta = dict(checkpoint.meta, step=checkpoint.step)
        (staging / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
        for path in staging.iterdir():
            fsync_file(path)
        final = root / name
        if final.exists():
            # A step saved twice (a rerun of the same step): replace it only once the new copy is whole.
            stale = Path(tempfile.mkdtemp(dir=root, prefix=f".old.{name}."))
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
    steps = sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("step_"))
    for path in steps[:-keep_last] if keep_last > 0 else []:
        if path.name != keep:
            shutil.rmtree(path, ignore_errors=True)


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """The checkpoint directory (or file) that ``path`` designates.

    ``path`` may be a run directory (its latest checkpoint), a ``checkpoints``
    directory, a checkpoint directory, or a weights file (``.safetensors``,
    ``.pt``, ``.pth``, ``.ckpt``).
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    if path.is_file():
        return path
    if (path / "model.safetensors").is_file():
        return path
    for root in (path / CHECKPOINTS, path):
        latest = root / LATEST
        if latest.is_file():
            target = root / latest.read_text().strip()
            if (target / "model.safetensors").is_file():
                return target
            raise CheckpointError(f"{str(latest)!r} names {target.name!r}, which is incomplete or missing")
    raise CheckpointError(f"{str(path)!r} is neither a run directory with checkpoints nor a checkpoint")


def load_checkpoint(path: str | os.PathLike, with_state: bool = True) -> Checkpoint:
    """Load a checkpoint written by ``save_checkpoint`` (see ``resolve_checkpoint`` for ``path``)."""
    directory = resolve_checkpoint(path)
    if directory.is_file():
        raise CheckpointError(f"{str(directory)!r} is a weights file, not a checkpoint directory "
                              "(pass it to a loader that accepts external weights)")
    try:
        model = load_file(directory / "model.safetensors")
        ema_path = directory / "ema.safetensors"
        ema = load_file(ema_path) if ema_path.is_file() else None
        meta = json.loads((directory / "meta.json").read_text())
        state = torch.load(directory / "state.pt", map_location="cpu", weights_only=False) if with_state else {}
    except (OSError, ValueError, RuntimeError, KeyError, SafetensorError) as error:
        raise CheckpointError(f"checkpoint {str(directory)!r} is unreadable: {error}") from error
    return Checkpoint(step=int(meta["step"]), model=model, ema=ema, state=state, meta=meta, path=directory)
