"""The one training loop: a ``TrainState``, a step function per model, and what every run shares.

A trainer (``dinosae.train.autoencoder``, ``dinosae.train.dit``) builds the
state and a step function and hands them to :func:`fit`, which owns the
cadence (logging, image grids, checkpoints), resume, the finite-loss guard and
the run directory. Every rank runs every step: a rank with nothing to train on
must still take part in DDP's gradient all-reduce, so trainers feed it a
zero-weight batch instead of skipping.

The finite-loss guard keeps a device-side record of the first non-finite
step and reads it only when the run logs or saves, so a step never waits for
the GPU. A NaN can therefore reach the weights in memory, but never a
checkpoint: the guard is read before every save, and the run stops there.
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Protocol

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from dinosae.config.training import RESUME_MODES
from dinosae.data.images import DataError
from dinosae.io.atomic import write_json
from dinosae.io.checkpoint import Checkpoint, CheckpointError, has_checkpoint, load_checkpoint, save_checkpoint
from dinosae.io.images import save_pairs
from dinosae.models.loading import split_weights
from dinosae.models.record import load_weights, saved_weights
from dinosae.runtime import DistEnv, barrier, mean_across_ranks
from dinosae.train.ema import EMA
from dinosae.train.phema import PowerEMA
from dinosae.train.preemption import PreemptionWatch, RunPreempted, ignore_stop_signals
from dinosae.train.rng import step_generator
from dinosae.train.runlog import RunLogger

MAIN = "model"
PHEMA = "phema"


class NonFiniteLossError(FloatingPointError):
    """A step produced a NaN or infinite loss; nothing from that step on was saved."""


class Schedule(Protocol):
    """The fields of a training config that the loop reads."""

    steps: int
    batch_size: int
    seed: int
    log_every: int
    ckpt_every: int
    keep_last: int
    phema_every: int


@dataclass
class TrainState:
    """Everything a checkpoint holds to continue a run exactly.

    ``modules[MAIN]`` is the model (its weights are saved as they are, and
    ``ema`` averages its trainable ones); other modules (the discriminator) are
    saved beside it under ``"<name>."``. ``optimizers`` are saved in the
    checkpoint's training state (``state.safetensors`` + ``state.json``,
    ``dinosae.io.state``) under their names, with ``extra``: small run state
    such as the images a run has skipped, and ``phema``: the post-hoc EMA's
    averages (``dinosae.train.phema``), which :func:`fit` updates after every
    step. Training randomness needs no saved state (see ``dinosae.train.rng``).
    """

    modules: dict[str, nn.Module]
    optimizers: dict[str, torch.optim.Optimizer]
    ema: EMA
    step: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    phema: PowerEMA | None = None

    @property
    def model(self) -> nn.Module:
        return self.modules[MAIN]

    def weights(self) -> dict[str, Tensor]:
        """The weights to save: each module's ``weights_to_save()`` (or state dict), prefixed by name."""
        weights: dict[str, Tensor] = {}
        for name, module in self.modules.items():
            prefix = "" if name == MAIN else f"{name}."
            weights.update({prefix + key: value for key, value in saved_weights(module).items()})
        return weights

    def checkpoint(self, meta: dict[str, Any]) -> Checkpoint:
        state = {name: optimizer.state_dict() for name, optimizer in self.optimizers.items()}
        state.update(self.extra, ema_updates=self.ema.updates)
        if self.phema is not None:
            state[PHEMA] = self.phema.state_dict()
        return Checkpoint(step=self.step, model=self.weights(), ema=self.ema.state_dict(), state=state, meta=meta)

    def restore(self, checkpoint: Checkpoint) -> None:
        """Load a checkpoint written by :meth:`checkpoint` (weights, optimizers, EMA, step, extra)."""
        own, parts = split_weights(checkpoint.model, [name for name in self.modules if name != MAIN])
        parts[MAIN] = own
        for name, module in self.modules.items():
            load_weights(module, parts[name], str(checkpoint.path))
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(checkpoint.state[name])
        self.ema.load_state_dict(checkpoint.ema, checkpoint.state["ema_updates"])
        if self.phema is not None:
            if PHEMA in checkpoint.state:
                self.phema.load_state_dict(checkpoint.state[PHEMA])
            else:
                warnings.warn(f"{str(checkpoint.path)!r} holds no post-hoc EMA; its averages start at step "
                              f"{checkpoint.step}, so they cover only the steps after it", stacklevel=2)
        self.extra.update({k: checkpoint.state[k] for k in self.extra if k in checkpoint.state})
        self.step = checkpoint.step


def checkpoint_to_resume(run_dir: Path, resume: str | None, kind: str) -> Checkpoint | None:
    """The run's latest checkpoint when resuming, None for a fresh start.

    ``resume`` is one of ``dinosae.config.training.RESUME_MODES``: ``"latest"`` needs a checkpoint;
    ``"auto"`` resumes when there is one and starts fresh otherwise (one command for a job's first start
    and every requeue); None refuses to overwrite a run.
    """
    if resume not in RESUME_MODES:
        raise ValueError(f"resume must be one of {RESUME_MODES}, got {resume!r}")
    found = has_checkpoint(run_dir)
    if not resume:
        if found:
            raise CheckpointError(f"{str(run_dir)!r} already holds checkpoints; pass --resume to continue "
                                  "it (--resume auto in a requeued job), or choose another --out")
        return None
    if not found:
        if resume == "auto":
            return None
        raise CheckpointError(f"--resume: {str(run_dir)!r} has no checkpoint to resume from "
                              "(--resume auto starts a new run there)")
    checkpoint = load_checkpoint(run_dir)
    if checkpoint.meta.get("kind") != kind:
        raise CheckpointError(f"--resume: {str(run_dir)!r} is a {checkpoint.meta.get('kind')!r} run, not {kind!r}")
    return checkpoint


def adamw(params: Iterable[nn.Parameter], lr: float, betas: tuple[float, float], weight_decay: float,
          device: torch.device) -> torch.optim.AdamW:
    """AdamW, fused into one kernel per step on CUDA (the same update, fewer launches)."""
    return torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=weight_decay, fused=device.type == "cuda")


def optimizer_step(optimizer: torch.optim.Optimizer, params: Iterable[nn.Parameter], clip: float) -> Tensor:
    """Clip the gradient norm, step, zero the gradients; returns the norm before clipping.

    The norm stays a device tensor: reading it every step would synchronize the GPU.
    """
    norm = torch.nn.utils.clip_grad_norm_(list(params), clip if clip > 0 else math.inf)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return norm.detach()


def wrap_ddp(module: nn.Module, env: DistEnv) -> nn.Module:
    """``module`` under DDP in a distributed run, as it is otherwise.

    Gradients live in DDP's buckets (no second copy), and buffers are synchronized before each forward
    only where a layer updates them in training (batch norm's running statistics; our models have none).
    """
    if not env.distributed:
        return module
    running_stats = any(isinstance(m, nn.modules.batchnorm._NormBase) for m in module.modules())
    return DistributedDataParallel(module, device_ids=[env.device.index] if env.device.type == "cuda" else None,
                                   forward_sync_buffers=running_stats, gradient_as_bucket_view=True)


def sync_gradients(module: nn.Module, now: bool) -> contextlib.AbstractContextManager:
    """DDP's gradient all-reduce in this backward only if ``now`` (the last micro-batch of a step)."""
    if now or not isinstance(module, DistributedDataParallel):
        return contextlib.nullcontext()
    return module.no_sync()


def micro_batches(count: int, parts: int) -> list[slice]:
    """``parts`` consecutive slices of ``count`` items, as even as they come (some may be empty).

    Example:
        >>> micro_batches(5, 2), micro_batches(1, 2)
        ([slice(0, 3, None), slice(3, 5, None)], [slice(0, 1, None), slice(1, 1, None)])
    """
    bounds = [(count * i + parts - 1) // parts for i in range(parts + 1)]
    return [slice(start, stop) for start, stop in zip(bounds, bounds[1:])]


def batch_loader(dataset: torch.utils.data.Dataset, sampler: torch.utils.data.Sampler, collate: Callable,
                 num_workers: int, seed: int, device: torch.device) -> Iterator:
    """An endless iterator over the batches of a (resumable) batch sampler."""
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=num_workers,
                                         pin_memory=device.type == "cuda", persistent_workers=num_workers > 0,
                                         worker_init_fn=ignore_stop_signals if num_workers > 0 else None,
                                         generator=torch.Generator().manual_seed(seed))
    return iter(loader)


class FiniteGuard:
    """The first step whose scalars were not all finite, recorded on the device without a sync.

    Example:
        >>> guard = FiniteGuard(torch.device("cpu"))
        >>> guard.record({"loss": torch.tensor(1.0)}, step=0)
        >>> guard.record({"loss": torch.tensor(float("nan"))}, step=1)
        >>> guard.first_bad_step()
        1
    """

    # "No bad step yet" is a step after every step, so that the earliest bad one is a minimum.
    NONE = torch.iinfo(torch.int64).max

    def __init__(self, device: torch.device) -> None:
        self._first = torch.full((), self.NONE, dtype=torch.int64, device=device)

    def record(self, scalars: dict[str, Tensor], step: int) -> None:
        values = torch.stack([v.detach().float().reshape(()) for v in scalars.values()])
        bad = ~torch.isfinite(values).all()
        self._first = torch.where(bad, self._first.clamp(max=step), self._first)

    def first_bad_step(self, env: DistEnv | None = None) -> int | None:
        """The first bad step over all ranks (a collective in a distributed run), or None."""
        first = self._first.clone()
        if env is not None and env.distributed:
            dist.all_reduce(first, op=dist.ReduceOp.MIN)
        value = int(first)
        return None if value == self.NONE else value


def all_finite(modules: Iterable[nn.Module]) -> Tensor:
    """Whether every trainable weight of ``modules`` is finite, as a device bool (no sync)."""
    params = [p.detach() for module in modules for p in module.parameters() if p.requires_grad]
    if not params:
        return torch.ones((), dtype=torch.bool)
    return torch.stack([torch.isfinite(p).all() for p in params]).all()


# The unreadable-data check judges a run once it has tried this many items (or the whole data set).
MIN_ATTEMPTS = 256

StepFn = Callable[[TrainState, Any, torch.Generator], dict[str, Tensor]]
Preview = Callable[[], tuple[Tensor, Tensor]]


def fit(run_dir: str | os.PathLike, state: TrainState, step_fn: StepFn, batches: Iterator, *, config: Schedule,
        env: DistEnv, meta: dict[str, Any], image_every: int | None = None, preview: Preview | None = None,
        log_extra: Callable[[], dict[str, float]] | None = None,
        count_items: Callable[[Any], int] | None = None, data_size: int = 0) -> Path:
    """Train from ``state.step`` to ``config.steps``; returns the last checkpoint's path (or ``run_dir``).

    ``step_fn(state, batch, generator)`` runs one step on this rank's
    ``batch`` (forward, backward, optimizer steps, EMA) and returns its
    scalars as device tensors; ``generator`` is the step's
    (``step_generator``). Every ``config.log_every`` steps the scalars are
    averaged over ranks and logged with ``log_extra()``'s; every
    ``image_every`` steps ``preview()``'s originals and reconstructions are
    saved as a grid; every ``config.ckpt_every`` steps and at the end a
    checkpoint with ``meta`` is written; after every step ``state.phema`` (if
    any) is updated, and every ``config.phema_every`` steps and at the end the
    main rank writes its snapshot.

    On SIGTERM or SIGUSR1 (``dinosae.train.preemption``) the run saves a
    checkpoint after the step and raises ``RunPreempted``.

    Before logging or saving, the run stops with ``NonFiniteLossError`` if a
    step's scalars or the weights are not finite, and with ``DataError`` if
    ``count_items(batch)`` has counted nothing usable on any rank since the run
    (re)started, once it has tried ``min(data_size, MIN_ATTEMPTS)`` items or
    reached its end (a folder whose images all fail to decode trains on nothing).
    """
    run_dir = Path(run_dir)
    if env.is_main:
        write_json(run_dir / "config.json", meta)
    guard = FiniteGuard(env.device)
    first_step, last_path, last_logged, items = state.step, None, state.step, 0
    with RunLogger(run_dir, config.steps, state.step, enabled=env.is_main) as log, PreemptionWatch(env) as watch:
        while state.step < config.steps:
            step = state.step
            batch = next(batches)
            items += count_items(batch) if count_items is not None else 1
            scalars = step_fn(state, batch, step_generator(config.seed, step, env.rank, env.device))
            guard.record(scalars, step)
            if state.phema is not None:
                state.phema.update(state.model)
            state.step = done = step + 1
            stop = watch.should_stop()
            last = done == config.steps or stop
            log_now = done % config.log_every == 0 or last
            save_now = done % config.ckpt_every == 0 or last
            snapshot_now = state.phema is not None and (done % config.phema_every == 0 or done == config.steps)
            if log_now or save_now or snapshot_now:
                enough = last or config.batch_size * (done - first_step) >= min(data_size, MIN_ATTEMPTS)
                _check_steps(guard, env, state, items if enough else None, (first_step, done))
            if log_now:
                values = {k: float(v.detach()) for k, v in scalars.items()}
                if log_extra is not None:
                    values.update(log_extra())
                log.step(done, mean_across_ranks(values, env), images_seen=config.batch_size * (done - last_logged))
                last_logged = done
            if preview is not None and env.is_main and (done % image_every == 0 or last):
                log.images("reconstruction", save_pairs(run_dir / "images" / f"recon_{done:08d}.png", *preview()), done)
            if snapshot_now and env.is_main:
                state.phema.snapshot(run_dir, done)
            if save_now:
                last_path = _save(run_dir, state, meta, config.keep_last, env)
            if stop:
                raise RunPreempted(done, last_path, watch.signal_name)
    return last_path if last_path is not None else run_dir


def _check_steps(guard: FiniteGuard, env: DistEnv, state: TrainState, items: int | None,
                 steps: tuple[int, int]) -> None:
    """Stop before logging or saving what steps ``steps[0] + 1 .. steps[1]`` produced, if it is unusable;
    ``items`` is this rank's count of usable items in those steps (None: too few tried to judge)."""
    first = guard.first_bad_step(env)
    if first is not None:
        raise NonFiniteLossError(f"non-finite loss at step {first + 1} (a NaN in the batch or a diverging run); "
                                 "stopped before saving it: the last checkpoint is intact")
    status = torch.stack([(~all_finite(state.modules.values())).to(env.device, torch.int64),
                          torch.tensor(1 if items is None else items, device=env.device)])
    if env.distributed:
        dist.all_reduce(status)
    weights_bad, items = status.tolist()
    if weights_bad:
        raise NonFiniteLossError(f"the weights became non-finite by step {steps[1]} (an infinite learning rate "
                                 "or an overflow); stopped before saving them: the last checkpoint is intact")
    if items == 0:
        raise DataError(f"steps {steps[0] + 1}..{steps[1]} had no readable image on any rank: the data's images "
                        "fail to decode (see the warnings naming them)")


def _save(run_dir: Path, state: TrainState, meta: dict[str, Any], keep_last: int, env: DistEnv) -> Path | None:
    path = None
    if env.is_main:
        path = save_checkpoint(run_dir, state.checkpoint(meta), keep_last=keep_last)
    barrier(env)
    return path


def warn_skipped(state: TrainState, skipped: Iterable[str]) -> None:
    """Warn once per unreadable image and remember it in the run state (``state.extra["skipped"]``)."""
    known = state.extra.setdefault("skipped", [])
    for path in skipped:
        if path not in known:
            warnings.warn(f"skipping unreadable image {path}", stacklevel=2)
            known.append(path)
