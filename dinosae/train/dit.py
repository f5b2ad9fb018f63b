"""``dinosae train dit``: the DiT trained with (Riemannian) flow matching on a latent cache.

The autoencoder is never loaded: batches come from ``dinosae.io.latents.LatentCache``.
As for the autoencoder, batches, noise, times and label dropout are functions
of ``(seed, step)``, so a resumed run is exact.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, replace
from pathlib import Path

import torch

from dinosae.config import DIT_PRESETS, DiTConfig, DiTTrainConfig, from_dict
from dinosae.data.batches import ResumableBatches
from dinosae.generation.rfm import Objective, TimeSampler, euclidean_fm_loss, make_time_sampler, rfm_loss
from dinosae.io.latents import LatentCache, check_cache_fits, collate_latents, warn_if_unflipped
from dinosae.io.loading import DIT
from dinosae.models.dit import DiT
from dinosae.runtime import DistEnv, autocast, init_distributed, shutdown
from dinosae.train.ema import EMA
from dinosae.train.loop import TrainState, batch_loader, checkpoint_to_resume, fit, optimizer_step, wrap_ddp


def dit_config_for(cache: LatentCache, preset: str, **overrides: object) -> DiTConfig:
    """The DiT of a named size for a cache's latent grid, width and classes."""
    if preset not in DIT_PRESETS:
        raise ValueError(f"unknown DiT preset {preset!r}; choose one of {list(DIT_PRESETS)}")
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
        run_dir = Path(run_dir)
        previous = checkpoint_to_resume(run_dir, resume, DIT)
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
        torch.manual_seed(config.seed)
        model = DiT(model_config).to(env.device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, betas=config.betas,
                                      weight_decay=config.weight_decay)
        state = TrainState({"model": model}, {"optimizer": optimizer}, EMA(model, config.ema_decay))
        if previous is not None:
            state.restore(previous)
        objective = rfm_loss if config.path == "rfm" else euclidean_fm_loss
        time_sampler = make_time_sampler(config.time_sampler, config.resolved_shift(cache.tokens, cache.dim))
        step = DiTStep(state, config, env, objective, time_sampler)
        meta = {"kind": DIT, "dit_config": asdict(model_config), "train_config": asdict(config),
                "latents": str(latents), "classes": cache.classes, "latent_meta": cache.meta}
        sampler = ResumableBatches(len(cache), config.batch_size, config.seed, state.step, env.rank, env.world_size,
                                   flip=config.flip and cache.has_flip)
        batches = batch_loader(cache, sampler, collate_latents, config.num_workers, config.seed, env.device)
        return fit(run_dir, state, step, batches, config=config, env=env, meta=meta, log_extra=step.loss_by_time)
    finally:
        shutdown(env)


class DiTStep:
    """One flow-matching step: labels dropped for guidance, loss, update, EMA.

    The cache serves every latent renormalized onto the spheres, so the
    objective's unit-norm check of the data (a host read) is skipped here.
    """

    def __init__(self, state: TrainState, config: DiTTrainConfig, env: DistEnv, objective: Objective,
                 time_sampler: TimeSampler) -> None:
        self.config, self.env, self.objective, self.time_sampler = config, env, objective, time_sampler
        self.model: DiT = state.model
        self.forward = wrap_ddp(torch.compile(self.model) if config.compile else self.model, env)
        self.loss_options = ({"radius": config.radius, "radial_weight": config.radial_weight}
                             if config.path == "rfm" else {})
        self._aux: dict[str, torch.Tensor] = {}

    def __call__(self, state: TrainState, batch: tuple[torch.Tensor, torch.Tensor],
                 generator: torch.Generator) -> dict[str, torch.Tensor]:
        device = self.env.device
        x1, y = (t.to(device, non_blocking=True) for t in batch)
        self.model.train()
        y = self.model.drop_labels(y, generator)
        with autocast(device, self.config.precision):
            loss, self._aux = self.objective(self.forward, x1, y, time_sampler=self.time_sampler,
                                             generator=generator, check_data=False, **self.loss_options)
        loss.backward()
        grad_norm = optimizer_step(state.optimizers["optimizer"], self.model.parameters(), self.config.grad_clip)
        state.ema.update(self.model)
        return {"loss": loss.detach(), "grad_norm": grad_norm}

    def loss_by_time(self) -> dict[str, float]:
        """Mean loss of the last step over the early (t < 0.5, near noise) and late halves: where a model
        struggles; NaN for a half without samples."""
        t, losses = self._aux["t"].float(), self._aux["loss"].float()
        early = t < 0.5
        return {"loss_t<0.5": float(losses[early].mean()), "loss_t>=0.5": float(losses[~early].mean())}
