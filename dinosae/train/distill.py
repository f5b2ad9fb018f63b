"""``dinosae distill``: a student DiT that samples in 1, 2 or 4 steps, taught by a trained one's ODE.

Reflow on the teacher's couplings, with geodesic jumps:

1. The teacher integrates trajectories from seeded noise (coupling ``i``'s
   noise and label from ``(seed, i)`` alone, on streams that ``dinosae sample``
   does not draw from) with
   many steps of a second-order solver, and keeps the states at the student's
   time grid ``t_0 = 0 < t_1 < ... < t_K = 1`` (the teacher's sampling shift).
   They are written as shards, ``RUN/couplings/shard_XXXXX.safetensors``,
   each by the rank that owns it, so a requeued job keeps the finished ones.
2. The student starts from the teacher's weights and regresses, at each state
   ``x_k`` and time ``t_k``, the velocity ``log_{x_k}(x_{k+1}) / h_k``: one
   Euler step of the manifold (``step``, the exp map on the sphere) from
   ``x_k`` then lands on the teacher's ``x_{k+1}``, and every point it visits
   is on the spheres.

The student is a DiT run like any other (``kind`` "dit": checkpoints, resume,
``dinosae export``, ``dinosae sample``); its ``meta["distilled"]`` holds the
NFE, the shift and the solver it samples with, which ``dinosae sample`` takes
unless told otherwise.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, Iterator

import torch
from safetensors.torch import save_file

from dinosae.config import DistillConfig, from_dict
from dinosae.data.batches import ResumableBatches
from dinosae.flow import VelocityField, solve, time_grid
from dinosae.io.atomic import write_atomic
from dinosae.io.checkpoint import CheckpointError, remove_checkpoint_leftovers
from dinosae.io.lock import exclusive
from dinosae.io.tensor_files import read_safetensors
from dinosae.models.dit import DiT
from dinosae.models.loading import build_model, read_model
from dinosae.models.record import DIT
from dinosae.pipelines.jobs import shards_to_do
from dinosae.pipelines.sample import sample_generator, sampling_shift
from dinosae.runtime import DistEnv, autocast, barrier, init_distributed, shutdown, use_tf32
from dinosae.train.ema import EMA
from dinosae.train.loop import TrainState, adamw, checkpoint_to_resume, fit, optimizer_step, wrap_ddp
from dinosae.train.phema import power_ema

__all__ = ["distill", "student_grid", "teacher_couplings"]

COUPLINGS = "couplings"
SHARD_SIZE = 1024
# Streams of sample_generator that `dinosae sample` does not use (it draws noise on 0 and labels on 1), so a
# student never trains on the noise of the samples it is judged by.
_NOISE, _LABEL = 2, 3


def student_grid(nfe: int, shift: float) -> list[float]:
    """The student's time grid: ``nfe`` steps of the teacher's shifted grid.

    Example:
        >>> student_grid(2, 1.0)
        [0.0, 0.5, 1.0]
    """
    return time_grid(nfe, shift)


def teacher_grid(grid: list[float], teacher_steps: int) -> list[float]:
    """A fine grid through every point of ``grid``: ``ceil(teacher_steps / K)`` uniform steps per interval.

    Example:
        >>> teacher_grid([0.0, 0.5, 1.0], 4)
        [0.0, 0.25, 0.5, 0.75, 1.0]
    """
    per = -(-teacher_steps // (len(grid) - 1))
    fine = [grid[0]]
    for t0, t1 in zip(grid[:-1], grid[1:]):
        fine += [t0 + (t1 - t0) * (j + 1) / per for j in range(per - 1)] + [t1]
    return fine


@torch.no_grad()
def teacher_couplings(teacher: DiT, indices: range, config: DistillConfig, grid: list[float],
                      device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The teacher's states (n, K + 1, N, D) at ``grid`` and the labels (n,) of samples ``indices``, in float32.

    Example:
        >>> from dinosae import create_model
        >>> teacher = create_model("dit-tiny", in_dim=8, grid_size=2, num_classes=3).eval()
        >>> states, labels = teacher_couplings(teacher, range(2), DistillConfig(nfe=2, teacher_steps=4),
        ...                                    [0.0, 0.5, 1.0], torch.device("cpu"))
        >>> states.shape, labels.shape
        (torch.Size([2, 3, 4, 8]), torch.Size([2]))
    """
    shape = (teacher.config.num_tokens, teacher.config.in_dim)
    x = torch.stack([teacher.manifold.prior(shape, generator=sample_generator(config.seed, i, _NOISE))
                     for i in indices]).to(device)
    labels = torch.stack([torch.randint(teacher.config.num_classes, (), generator=sample_generator(
        config.seed, i, _LABEL)) for i in indices])
    field = VelocityField(teacher, teacher.manifold, labels.to(device), prediction=teacher.config.prediction,
                          cfg_scale=config.cfg)
    fine = teacher_grid(grid, config.teacher_steps)
    states = [x]
    for t0, t1 in zip(grid[:-1], grid[1:]):
        within = [t for t in fine if t0 <= t <= t1]
        x = solve(field, x, within, config.teacher_method)
        states.append(x)
    return torch.stack(states, dim=1).float().cpu(), labels


def _shard_name(index: int) -> str:
    return f"shard_{index:05d}.safetensors"


def _shard_problem(path: Path, expected: range, shape: tuple[int, ...]) -> str | None:
    try:
        tensors = read_safetensors(path)
        fine = tuple(tensors["states"].shape) == (len(expected), *shape) and \
            tensors["labels"].shape == (len(expected),)
    except (OSError, ValueError, KeyError) as error:
        return f"it is unreadable ({error})"
    return None if fine else "it holds other couplings"


def make_couplings(run_dir: Path, teacher: DiT, config: DistillConfig, grid: list[float],
                   env: DistEnv) -> tuple[torch.Tensor, torch.Tensor]:
    """Every rank draws its missing shards of couplings, then all of them are read (mapped, not copied)."""
    folder = run_dir / COUPLINGS
    ranges = [range(s, min(s + SHARD_SIZE, config.couplings)) for s in range(0, config.couplings, SHARD_SIZE)]
    shape = (len(grid), teacher.config.num_tokens, teacher.config.in_dim)
    mine = shards_to_do(env, len(ranges), lambda i: folder / _shard_name(i),
                        lambda path, i: _shard_problem(path, ranges[i], shape))
    for index in mine:
        states, labels = teacher_couplings(teacher, ranges[index], config, grid, env.device)
        write_atomic(folder / _shard_name(index), lambda tmp: save_file(
            {"states": states.contiguous(), "labels": labels.contiguous()}, str(tmp)))
    barrier(env)
    shards = [read_safetensors(folder / _shard_name(i)) for i in range(len(ranges))]
    return torch.cat([s["states"] for s in shards]), torch.cat([s["labels"] for s in shards])


def _batches(states: torch.Tensor, labels: torch.Tensor, config: DistillConfig, start: int,
             env: DistEnv) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    sampler = ResumableBatches(states.shape[0], config.batch_size, config.seed, start, env.rank, env.world_size,
                               flip=False)
    for keys in sampler:
        index = torch.tensor([key[0] for key in keys])
        yield states[index], labels[index]


class DistillStep:
    """One student step: at every grid state of the batch, the velocity of the exp-map jump to the next one."""

    def __init__(self, state: TrainState, config: DistillConfig, grid: list[float], env: DistEnv) -> None:
        self.config, self.env = config, env
        self.model: DiT = state.model
        self.forward = wrap_ddp(self.model, env)
        self.grid = torch.tensor(grid, dtype=torch.float64)

    def __call__(self, state: TrainState, batch: Any, generator: torch.Generator) -> dict[str, torch.Tensor]:
        states, labels = (item.to(self.env.device) for item in batch)
        manifold = self.model.manifold
        steps = states.shape[1] - 1
        x, after = states[:, :-1].flatten(0, 1), states[:, 1:].flatten(0, 1)
        h = (self.grid[1:] - self.grid[:-1]).to(x.device, x.dtype).repeat(states.shape[0])
        t = self.grid[:-1].to(x.device, torch.float32).repeat(states.shape[0])
        target = manifold.logmap(x, after) / h.view(-1, 1, 1)
        self.model.train()
        with autocast(self.env.device, self.config.precision):
            out = self.forward(x, t, labels.repeat_interleave(steps))
        velocity = manifold.project(x, out.float())
        loss = (velocity - target).pow(2).sum(-1).mean()
        loss.backward()
        grad_norm = optimizer_step(state.optimizers["optimizer"], self.model.parameters(), self.config.grad_clip)
        state.ema.update(self.model)
        return {"loss": loss.detach(), "grad_norm": grad_norm}


def distill(run_dir: str | os.PathLike, teacher: str | os.PathLike | None, config: DistillConfig, *,
            resume: str | None = None, device: str | None = None) -> Path:
    """Distill the DiT ``teacher`` (a run, ``RUN@STEP``, a checkpoint or a folder) into a student that samples
    in ``config.nfe`` steps, trained in ``run_dir``; returns the last checkpoint's path.

    On a resume the run's own teacher and settings are used (``teacher`` may be None); settings that decide
    the student (all but ``DistillConfig.RUNTIME``) must match the run's.
    """
    run_dir = Path(run_dir)
    env = init_distributed(device)
    try:
        with exclusive(run_dir, "run", env, remove_checkpoint_leftovers):
            previous = checkpoint_to_resume(run_dir, resume, DIT)
            if previous is not None:
                config, teacher = _continue(previous.meta, config, teacher)
            if teacher is None:
                raise ValueError("distill needs --dit, the teacher to distill")
            return _distill(run_dir, teacher, config, env, previous)
    finally:
        shutdown(env)


def _continue(meta: dict, config: DistillConfig, teacher: str | os.PathLike | None
              ) -> tuple[DistillConfig, str]:
    """The run's distillation settings with this call's runtime ones; other settings or teacher refused."""
    if "distilled" not in meta:
        raise CheckpointError("--resume: the run is a DiT run, not a distillation (dinosae distill)")
    saved = from_dict(DistillConfig, meta["distill_config"])
    differ = [f.name for f in fields(DistillConfig)
              if f.name not in DistillConfig.RUNTIME and getattr(saved, f.name) != getattr(config, f.name)]
    if differ:
        raise CheckpointError(f"--resume: the run was distilled with other settings: {differ}")
    recorded = meta["distilled"]["teacher"]
    if teacher is not None and str(teacher) != recorded and Path(teacher).resolve() != Path(recorded).resolve():
        raise CheckpointError(f"--resume: the run distills {recorded!r}, not {str(teacher)!r}")
    runtime = {name: getattr(config, name) for name in DistillConfig.RUNTIME}
    return from_dict(DistillConfig, {**asdict(saved), **runtime}), recorded


def _distill(run_dir: Path, teacher_path: str | os.PathLike, config: DistillConfig, env: DistEnv,
             previous) -> Path:
    record = read_model(teacher_path, kind="dit")
    teacher = build_model(record).to(env.device).eval()
    if "distilled" in record.meta:
        warnings.warn(f"{str(teacher_path)!r} is itself a distilled student; distilling it again", stacklevel=2)
    train_config = record.meta.get("train_config", {})
    shift = sampling_shift(teacher, train_config, config.shift)
    grid = student_grid(config.nfe, shift)
    use_tf32(env.device, config.tf32)
    states, labels = make_couplings(run_dir, teacher, config, grid, env)
    torch.manual_seed(config.seed)
    student = build_model(record).to(env.device)
    optimizer = adamw(student.parameters(), config.lr, config.betas, config.weight_decay, env.device)
    state = TrainState({"model": student}, {"optimizer": optimizer},
                       EMA(student, config.ema_decay, config.ema_warmup), phema=power_ema(student, config))
    if previous is not None:
        state.restore(previous)
    distilled = {"nfe": config.nfe, "method": "euler", "shift": shift, "grid": grid,
                 "teacher": str(teacher_path), "teacher_path": str(record.path.resolve()),
                 "teacher_step": record.meta.get("step")}
    meta = {"kind": DIT, "dit_config": asdict(teacher.config), "train_config": train_config,
            "distill_config": asdict(config), "distilled": distilled, "classes": record.meta.get("classes", [])}
    del teacher
    step = DistillStep(state, config, grid, env)
    return fit(run_dir, state, step, _batches(states, labels, config, state.step, env), config=config, env=env,
               meta=meta)
