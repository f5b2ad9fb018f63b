"""Pieces both trainers share: run directories, precision, optimizer steps, image grids."""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path
from typing import Iterable

import torch
from torch import nn
from torchvision.utils import make_grid, save_image

from dinosae.train.checkpoint import CHECKPOINTS, Checkpoint, CheckpointError, load_checkpoint


class NonFiniteLossError(RuntimeError):
    """A step produced a NaN or infinite loss; nothing from that step was saved."""


def checkpoint_to_resume(run_dir: Path, resume: bool, kind: str) -> Checkpoint | None:
    """The run's latest checkpoint when resuming; refuses to overwrite an existing run otherwise."""
    has_checkpoints = (run_dir / CHECKPOINTS / "latest").is_file()
    if not resume:
        if has_checkpoints:
            raise CheckpointError(f"{str(run_dir)!r} already holds checkpoints; pass --resume to continue "
                                  "it, or choose another --out")
        return None
    if not has_checkpoints:
        raise CheckpointError(f"--resume: {str(run_dir)!r} has no checkpoint to resume from")
    checkpoint = load_checkpoint(run_dir)
    if checkpoint.meta.get("kind") != kind:
        raise CheckpointError(f"--resume: {str(run_dir)!r} is a {checkpoint.meta.get('kind')!r} run, not {kind!r}")
    return checkpoint


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    tmp.replace(path)


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA; full precision on the CPU (bf16 matmuls are slow there, and exact resume wants float32)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def optimizer_step(optimizer: torch.optim.Optimizer, params: Iterable[nn.Parameter], clip: float) -> torch.Tensor:
    """Clip the gradient norm, step, zero the gradients; returns the norm before clipping.

    The norm stays a device tensor: reading it every step would synchronize the GPU.
    """
    norm = torch.nn.utils.clip_grad_norm_(list(params), clip if clip > 0 else math.inf)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return norm.detach()


def check_finite(losses: dict[str, torch.Tensor], step: int) -> None:
    bad = [name for name, value in losses.items() if not torch.isfinite(value).all()]
    if bad:
        raise NonFiniteLossError(f"non-finite {', '.join(bad)} at step {step} (a NaN in the batch or a "
                                 "diverging run); the last checkpoint is intact")


def save_pairs(path: Path, originals: torch.Tensor, reconstructions: torch.Tensor, count: int = 8) -> torch.Tensor:
    """A two-row grid, originals over reconstructions, saved as PNG; returns the grid."""
    count = min(count, originals.shape[0])
    images = torch.cat([originals[:count], reconstructions[:count]]).detach().float().cpu().clamp(0, 1)
    grid = make_grid(images, nrow=count, padding=2, pad_value=1.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(grid, path)
    return grid
