"""``dinosae train dit``: the DiT trained with (Riemannian) flow matching on a latent cache.

The autoencoder is never loaded: batches come from ``dinosae.latents.LatentCache``.
As for the autoencoder, batches and noise are functions of ``(seed, step)`` and
the global RNG (label dropout) is checkpointed, so a resumed run is exact.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, replace
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel

from dinosae.config import from_dict
from dinosae.data import ResumableBatches
from dinosae.latents import LatentCache, check_cache_fits, collate_latents, warn_if_unflipped
from dinosae.models.dit import DIT_PRESETS, DiT, DiTConfig
from dinosae.rfm import euclidean_fm_loss, rfm_loss
from dinosae.train.checkpoint import Checkpoint, save_checkpoint
from dinosae.train.common import autocast, check_finite, checkpoint_to_resume, optimizer_step, write_json
from dinosae.train.dit_config import DiTTrainConfig
from dinosae.train.distributed import DistEnv, barrier, init_distributed, mean_across_ranks, shutdown
from dinosae.train.ema import EMA
from dinosae.train.rng import capture_rng, restore_rng, step_generator
from dinosae.train.runlog import RunLogger

KIND = "dit"


def dit_config_for(cache: LatentCache, preset: str, **overrides: object) -> DiTConfig:
    """The DiT of a named size for a cache's latent grid, width and classes."""
    if preset not in DIT_PRESETS:
        raise ValueError(f"unknown DiT preset {preset!r}; choose one of {sorted(DIT_PRESETS)}")
    grid = math.isqrt(cache.tokens)
    if grid * grid != cache.tokens:
        raise ValueError(f"latent cache tokens {cache.tokens} do not form a square grid")
    return replace(DIT_PRESETS[preset], in_dim=cache.dim, grid_size=grid, num_classes=cache.num_classes,
                   **overrides)


def train_dit(run_dir: str | os.PathLike, latents: str | os.PathLike, model_config: DiTConfig | None,
              config: DiTTrainConfig, *, resume: bool = False, device: str | None = None) -> Path:
    """Train the DiT; returns the final checkpoint's path.

    ``model_config`` is ignored when resuming (the run's own wins); otherwise
    its ``manifold`` is set from ``config.path``.
    """
    env = init_distributed(device)
    try:
        return _train(Path(run_dir), latents, model_config, config, resume, env)
    finally:
        shutdown(env)


def _train(run_dir: Path, latents: str | os.PathLike, model_config: DiTConfig | None, config: DiTTrainConfig,
           resume: bool, env: DistEnv) -> Path:
    previous = checkpoint_to_resume(run_dir, resume, KIND)
    if previous is not None:
        model_config = from_dict(DiTConfig, previous.meta["dit_config"])
        config = from_dict(DiTTrainConfig, dict(previous.meta["train_config"], steps=config.steps))
    if model_config is None:
        raise ValueError("a new DiT run needs a model config")
    cache = LatentCache(latents)
    model_config = replace(model_config, manifold="sphere" if config.path == "rfm" else "euclidean")
    check_cache_fits(cache, model_config.num_tokens, model_config.in_dim)
    if cache.num_classes > model_config.num_classes:
        raise ValueError(f"the latent cache has {cache.num_classes} classes, the model {model_config.num_classes}")
    warn_if_unflipped(cache, config.flip)
    device = env.device
    torch.manual_seed(config.seed)
    model = DiT(model_config).to(device)
    ema = EMA(model, config.ema_decay)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, betas=config.betas,
                                  weight_decay=config.weight_decay)
    start = 0
    if previous is not None:
        model.load_state_dict(previous.model)
        ema.load_state_dict(previous.ema, previous.state["ema_updates"])
        optimizer.load_state_dict(previous.state["optimizer"])
        start = previous.step
    # Label dropout draws from the global RNG: distinct per rank, restored on resume.
    torch.manual_seed(config.seed * 1_000_003 + env.rank)
    if previous is not None:
        restore_rng(previous.state["rng"][env.rank] if isinstance(previous.state["rng"], list) else previous.state["rng"])
    forward = torch.compile(model) if config.compile else model
    if env.distributed:
        forward = DistributedDataParallel(forward, device_ids=[device.index] if device.type == "cuda" else None)

    meta = {"kind": KIND, "dit_config": asdict(model_config), "train_config": asdict(config),
            "latents": str(latents), "classes": cache.classes, "latent_meta": cache.meta}
    if env.is_main:
        write_json(run_dir / "config.json", meta)
    sampler = ResumableBatches(len(cache), config.batch_size, config.seed, start, env.rank, env.world_size,
                               flip=config.flip and cache.has_flip)
    loader = torch.utils.data.DataLoader(cache, batch_sampler=sampler, collate_fn=collate_latents,
                                         num_workers=config.num_workers, pin_memory=device.type == "cuda",
                                         persistent_workers=config.num_workers > 0,
                                         generator=torch.Generator().manual_seed(config.seed))
    batches = iter(loader)
    time_sampler = config.sampler(cache.tokens, cache.dim)
    objective = rfm_loss if config.path == "rfm" else euclidean_fm_loss
    last_path = None
    with RunLogger(run_dir, config.steps, start, enabled=env.is_main) as log:
        for step in range(start, config.steps):
            x1, y = next(batches)
            x1, y = x1.to(device, non_blocking=True), y.to(device, non_blocking=True)
            model.train()
            with autocast(device):
                loss, aux = objective(forward, x1, y, time_sampler=time_sampler,
                                      generator=step_generator(config.seed, step, env.rank, device))
            check_finite({"loss": loss}, step)
            loss.backward()
            grad_norm = optimizer_step(optimizer, model.parameters(), config.grad_clip)
            ema.update(model)
            done = step + 1
            if done % config.log_every == 0 or done == config.steps:
                scalars = {"loss": float(loss.detach()), "grad_norm": float(grad_norm), **_loss_by_time(aux)}
                log.step(done, mean_across_ranks(scalars, env), images_seen=config.batch_size * config.log_every)
            if done % config.ckpt_every == 0 or done == config.steps:
                last_path = _save(run_dir, done, model, ema, optimizer, meta, config, env)
    return last_path if last_path is not None else run_dir


def _loss_by_time(aux: dict[str, torch.Tensor]) -> dict[str, float]:
    """Mean loss over the early (t < 0.5, near noise) and late halves: where a model struggles."""
    t, losses = aux["t"].float(), aux["loss"].float()
    early = t < 0.5
    out = {}
    if early.any():
        out["loss_t<0.5"] = float(losses[early].mean())
    if (~early).any():
        out["loss_t>=0.5"] = float(losses[~early].mean())
    return out


def _save(run_dir: Path, step: int, model: DiT, ema: EMA, optimizer: torch.optim.Optimizer, meta: dict,
          config: DiTTrainConfig, env: DistEnv) -> Path | None:
    rng = capture_rng()
    if env.distributed:
        gathered: list = [None] * env.world_size
        torch.distributed.all_gather_object(gathered, rng)
        rng = gathered
    path = None
    if env.is_main:
        state = {"optimizer": optimizer.state_dict(), "rng": rng, "ema_updates": ema.updates}
        checkpoint = Checkpoint(step=step, model=model.state_dict(), ema=ema.state_dict(), state=state, meta=meta)
        path = save_checkpoint(run_dir, checkpoint, keep_last=config.keep_last)
    barrier(env)
    return path


def dit_from_checkpoint(checkpoint: Checkpoint, *, use_ema: bool = True) -> DiT:
    """The DiT of a loaded checkpoint, in eval mode, with its EMA weights by default."""
    from dinosae.train.checkpoint import CheckpointError

    if checkpoint.meta.get("kind") != KIND:
        raise CheckpointError(f"{str(checkpoint.path)!r} is a {checkpoint.meta.get('kind')!r} checkpoint, not a DiT")
    model = DiT(from_dict(DiTConfig, checkpoint.meta["dit_config"]))
    weights = dict(checkpoint.model)
    if use_ema and checkpoint.ema:
        weights.update(checkpoint.ema)
    model.load_state_dict(weights)
    return model.eval()


def load_dit(path: str | os.PathLike, *, use_ema: bool = True, device: str | torch.device = "cpu") -> DiT:
    """A trained DiT in eval mode from a run or checkpoint directory."""
    from dinosae.train.checkpoint import load_checkpoint

    return dit_from_checkpoint(load_checkpoint(path, with_state=False), use_ema=use_ema).to(device)
