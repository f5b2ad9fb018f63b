"""``dinosae train dit``: the DiT trained with flow matching (``dinosae.flow``) on a latent cache or on
an image folder encoded batch by batch (``dinosae.train.latent_sources``).

As for the autoencoder, batches, noise, times and label dropout are functions
of ``(seed, step)``, so a resumed run is exact.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Collection

import torch

from dinosae.config import DiTConfig, DiTTrainConfig, ResolvedRun, RunRequest, resolve_dit_run
from dinosae.data.batches import ResumableBatches
from dinosae.flow import TimeSampler, draw_times_and_noise, flow_matching_loss, make_time_sampler, training_shift
from dinosae.data.latents import LatentCache, check_cache_fits, warn_if_unflipped
from dinosae.io.lock import exclusive
from dinosae.io.checkpoint import Checkpoint, remove_checkpoint_leftovers
from dinosae.models.record import DIT
from dinosae.models.dit import DiT
from dinosae.runtime import DistEnv, autocast, init_distributed, shutdown, use_tf32
from dinosae.train.ema import EMA
from dinosae.train.phema import power_ema
from dinosae.train.latent_sources import CachedLatents, OnlineLatents, latents_to_device
from dinosae.train.loop import (TrainState, adamw, batch_loader, checkpoint_to_resume, fit, micro_batches,
                                optimizer_step, sync_gradients, warn_skipped, wrap_ddp)
from dinosae.train.resume import continue_run, settle


def _grid(tokens: int) -> int:
    grid = math.isqrt(tokens)
    if grid * grid != tokens:
        raise ValueError(f"latent cache tokens {tokens} do not form a square grid")
    return grid


def resolve_for_cache(cache: LatentCache | CachedLatents | OnlineLatents, request: RunRequest = RunRequest()
                      ) -> ResolvedRun:
    """The DiT and training configs of ``request`` for a cache's latent grid, width and classes."""
    return resolve_dit_run(request, dim=cache.dim, grid_size=_grid(cache.tokens), num_classes=cache.num_classes)


def dit_config_for(cache: LatentCache, preset: str, **overrides: Any) -> DiTConfig:
    """The DiT of a named size for a cache's latent grid, width and classes, with fields overridden."""
    return resolve_for_cache(cache, RunRequest(preset, model=overrides)).model


def plan_dit(run_dir: str | os.PathLike, request: RunRequest, cache: CachedLatents | OnlineLatents,
             resume: str | None = None) -> tuple[Checkpoint | None, ResolvedRun]:
    """The checkpoint a DiT run resumes (if any) and its configs, resolved for the latents of ``cache`` and, on a
    resume, with the run's own as the last layer."""
    previous = checkpoint_to_resume(Path(run_dir), resume, DIT)
    return previous, continue_run(resolve_for_cache(cache, request), previous, ("dit_config", "train_config"))


def resolve_dit(run_dir: str | os.PathLike, request: RunRequest, resume: str | None = None, *,
                latents: str | os.PathLike | LatentCache | None = None, ae: str | os.PathLike | None = None,
                data: str | os.PathLike | None = None, teacher_weights: str | os.PathLike | None = None,
                device: str | None = None) -> ResolvedRun:
    """The configs :func:`train_dit` would run with, for its latents and its run (what ``--print-config``
    prints), without training."""
    env = init_distributed(device)
    try:
        return plan_dit(run_dir, request, _source(latents, ae, data, env, teacher_weights), resume)[1]
    finally:
        shutdown(env)


def train_dit(run_dir: str | os.PathLike, latents: str | os.PathLike | LatentCache | None = None,
              model_config: DiTConfig | None = None, config: DiTTrainConfig | None = None, *,
              request: RunRequest | None = None, resume: str | None = None, override: bool = False,
              explicit: dict[str, Collection[str]] | None = None, device: str | None = None,
              ae: str | os.PathLike | None = None, data: str | os.PathLike | None = None,
              teacher_weights: str | os.PathLike | None = None) -> Path:
    """Train the DiT; returns the final checkpoint's path.

    ``latents`` is a cache directory or an opened ``LatentCache`` (opening one checks every shard's
    header); or None, and then ``ae`` (an autoencoder run or checkpoint) encodes the images of
    ``data`` batch by batch, without gradients: the same training as on a cache of the same images
    encoded with ``--flip``, without the cache. The configs are ``request``'s (the command line's),
    resolved once the latents are open, or, from Python, ``model_config`` and ``config`` (either None:
    what ``dinosae train dit`` would take, the XL preset and the ``dino-sae`` recipe). ``resume``,
    ``override`` and ``explicit`` are as for ``dinosae.train.autoencoder.train_autoencoder``: a resumed
    run keeps its own configs and latent cache unless told otherwise.
    """
    run_dir = Path(run_dir)
    request = request or RunRequest.of_configs(model_config, config, explicit)
    env = init_distributed(device)
    try:
        with exclusive(run_dir, "run", env, remove_checkpoint_leftovers):
            cache = _source(latents, ae, data, env, teacher_weights)
            previous, run = plan_dit(run_dir, request, cache, resume)
            provenance = settle(run, previous, cache.identity(), override, str(run_dir), what="latents")
            return _train(run_dir, cache, run.model, run.train, env, previous, provenance)
    finally:
        shutdown(env)


def _source(latents: str | os.PathLike | LatentCache | None, ae: str | os.PathLike | None,
            data: str | os.PathLike | None, env: DistEnv, teacher_weights: str | os.PathLike | None
            ) -> CachedLatents | OnlineLatents:
    if latents is not None and (ae is not None or data is not None):
        raise ValueError("train the DiT on a latent cache or on images encoded as it trains, not both")
    if latents is None:
        if ae is None or data is None:
            raise ValueError("training the DiT needs a latent cache, or an autoencoder and the images it encodes")
        return OnlineLatents(ae, data, env, teacher_weights)
    return CachedLatents(latents if isinstance(latents, LatentCache) else LatentCache(latents))


def _train(run_dir: Path, cache: CachedLatents | OnlineLatents, model_config: DiTConfig, config: DiTTrainConfig, env: DistEnv,
           previous: Checkpoint | None, provenance: dict) -> Path:
    check_cache_fits(cache, model_config.num_tokens, model_config.in_dim)
    if cache.num_classes > model_config.num_classes:
        raise ValueError(f"the latent cache has {cache.num_classes} classes, the model {model_config.num_classes}")
    warn_if_unflipped(cache, config.flip)
    torch.manual_seed(config.seed)
    use_tf32(env.device, config.tf32)
    model = DiT(model_config).to(env.device)
    optimizer = adamw(model.parameters(), config.lr, config.betas, config.weight_decay, env.device)
    state = TrainState({"model": model}, {"optimizer": optimizer}, EMA(model, config.ema_decay, config.ema_warmup),
                       extra={"skipped": []}, phema=power_ema(model, config))
    if previous is not None:
        state.restore(previous)
    time_sampler = make_time_sampler(config.time_sampler, training_shift(config.shift, cache.tokens, cache.dim))
    step = DiTStep(state, config, env, time_sampler, cache.to_device)
    meta = {"kind": DIT, "dit_config": asdict(model_config), "train_config": asdict(config),
            **cache.describe(), "classes": cache.classes, **provenance}
    sampler = ResumableBatches(len(cache.dataset), config.batch_size, config.seed, state.step, env.rank,
                               env.world_size, flip=config.flip and cache.has_flip)
    batches = batch_loader(cache.dataset, sampler, cache.collate, config.num_workers, config.seed, env.device)
    return fit(run_dir, state, step, batches, config=config, env=env, meta=meta, log_extra=step.loss_by_time,
               count_items=cache.count_items, data_size=len(cache.dataset))


class DiTStep:
    """One flow-matching step: labels dropped for guidance, loss, update, EMA.

    Label dropout, times and starting noise are drawn for the rank's whole
    batch, then the batch goes through in ``grad_accum`` micro-batches whose
    gradients add up (DDP all-reduces on the last): the result of one big
    batch, at the memory of one micro-batch. Each micro-batch's loss is
    weighted by its share of the global batch (times the ranks, whose
    gradients DDP averages), so that images skipped as unreadable (training on
    an image folder) change neither the gradient's scale nor the balance
    between ranks; a micro-batch with none left still takes part in DDP's
    all-reduce with a zero-weight stand-in. The cache serves every latent
    renormalized onto the spheres, so the objective's unit-norm check of the
    data (a host read) is skipped here.
    """

    def __init__(self, state: TrainState, config: DiTTrainConfig, env: DistEnv, time_sampler: TimeSampler,
                 to_device: Callable = latents_to_device) -> None:
        self.config, self.env, self.time_sampler, self.to_device = config, env, time_sampler, to_device
        self.model: DiT = state.model
        self.model.checkpointing = config.grad_checkpoint
        self.forward = wrap_ddp(torch.compile(self.model) if config.compile else self.model, env)
        self.loss_options = {"prediction": self.model.config.prediction, "radial_weight": config.radial_weight}
        self._aux: dict[str, torch.Tensor] = {}

    def __call__(self, state: TrainState, batch: Any, generator: torch.Generator) -> dict[str, torch.Tensor]:
        device = self.env.device
        x1, y, skipped = self.to_device(batch, device)
        warn_skipped(state, skipped)
        self.model.train()
        y = self.model.drop_labels(y, generator)
        t, x0 = draw_times_and_noise(self.model.manifold, x1, self.time_sampler, generator)
        parts = micro_batches(x1.shape[0], self.config.grad_accum)
        auxes, losses = [], []
        for index, part in enumerate(parts):
            weight = (part.stop - part.start) * self.env.world_size / self.config.batch_size
            draws = (x1[part], y[part], t[part], x0[part]) if weight else self._stand_in(x1, t.dtype)
            with sync_gradients(self.forward, index == len(parts) - 1):
                with autocast(device, self.config.precision):
                    loss, aux = flow_matching_loss(self.forward, self.model.manifold, draws[0], draws[1],
                                                   draws=draws[2:], check_data=False, **self.loss_options)
                (loss if weight == 1.0 else loss * weight).backward()
            losses.append(loss.detach())
            if weight:
                auxes.append(aux)
        grad_norm = optimizer_step(state.optimizers["optimizer"], self.model.parameters(), self.config.grad_clip)
        state.ema.update(self.model)
        self._aux = ({key: torch.cat([aux[key] for aux in auxes]) for key in auxes[0]} if auxes else
                     {"t": t, "loss": t.new_empty(0)})
        # A rank without data logs its stand-in's (finite, unweighted) loss.
        logged = losses[0] if len(parts) == 1 or not auxes else self._aux["loss"].mean()
        return {"loss": logged, "grad_norm": grad_norm}

    def _stand_in(self, x1: torch.Tensor, time_dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
        """One latent, label, time and starting point for a micro-batch without data (its loss weighs 0);
        drawn from a fixed generator, so that the run's own draws stay as they were."""
        generator = torch.Generator(x1.device).manual_seed(0)
        points = self.model.manifold.prior((2, *x1.shape[1:]), generator=generator, dtype=x1.dtype, device=x1.device)
        return (points[:1], torch.zeros(1, dtype=torch.long, device=x1.device),
                torch.full((1,), 0.5, dtype=time_dtype, device=x1.device), points[1:])

    def loss_by_time(self) -> dict[str, float]:
        """Mean loss of the last step over the early (t < 0.5, near noise) and late halves: where a model
        struggles; NaN for a half without samples."""
        t, losses = self._aux["t"].float(), self._aux["loss"].float()
        early = t < 0.5
        return {"loss_t<0.5": float(losses[early].mean()), "loss_t>=0.5": float(losses[~early].mean())}
