"""``dinosae train ae``: one stage of the autoencoder's training, as a step function for ``fit``.

A stage starts from the previous stage's checkpoint (``init``) or resumes its
own run directory (``resume``). Data order, augmentation and every random draw
are functions of ``(seed, step)``, so an interrupted and resumed run takes the
same steps as an uninterrupted one.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, replace
from pathlib import Path
from typing import Collection

import torch
from torch import nn

import sphere_ops
from dinosae.config import AEConfig, AETrainConfig, ResolvedRun, RunRequest, resolve_ae_run, to_dict
from dinosae.data.batches import ResumableBatches
from dinosae.data.decode import Crop
from dinosae.data.images import ImageBatch, ImageDataset, collate_images
from dinosae.data.index import folder_listing
from dinosae.io.lock import exclusive
from dinosae.io.checkpoint import Checkpoint, remove_checkpoint_leftovers
from dinosae.models.loading import DISCRIMINATOR, read_model
from dinosae.models.record import AUTOENCODER, ModelRecord
from dinosae.models.autoencoder import SphericalAutoencoder
from dinosae.models.discriminator import DinoDiscriminator
from dinosae.runtime import DistEnv, autocast, init_distributed, shutdown, use_tf32
from dinosae.train.ema import EMA
from dinosae.train.phema import power_ema
from dinosae.train.loop import (TrainState, adamw, batch_loader, checkpoint_to_resume, fit, micro_batches,
                                optimizer_step, sync_gradients, warn_skipped, wrap_ddp)
from dinosae.train.resume import continue_run, settle
from dinosae.train.losses import (adaptive_gan_weight, alignment_loss, hinge_discriminator_loss, hinge_generator_loss,
                                  l1_loss)


class TrainForward(nn.Module):
    """The differentiable part of a step, as one module so that DDP can wrap it.

    Returns the reconstruction in [0, 1] and the encoder's tokens (for the
    alignment loss). ``noise`` (from :func:`draw_latent_noise`) perturbs the
    decoder's input (see :func:`noise_decoder_input`); the encoder runs
    without gradients when the stem is frozen.
    """

    def __init__(self, model: SphericalAutoencoder, config: AETrainConfig) -> None:
        super().__init__()
        self.model = model
        self.config = config

    def forward(self, images: torch.Tensor,
                noise: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.set_grad_enabled(self.config.train_stem and torch.is_grad_enabled()):
            tokens = self.model.encoder.student_tokens(images)
        inputs = self.model.decoder_input(tokens)
        if noise is not None:
            inputs = noise_decoder_input(inputs, self.config.noise, *noise)
        return self.model.to_pixels(self.model.decoder(inputs)), tokens


def draw_latent_noise(count: int, tokens: int, dim: int, level: float, per: str, generator: torch.Generator,
                      device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The latent noise of ``count`` images, float32: sizes ~ U(0, ``level``), (count, 1, 1) per ``"sample"``
    or (1, 1, 1) per ``"batch"``, and standard normal directions (count, tokens, dim).

    A step draws them for all its images at once, so that splitting the step into micro-batches
    (``grad_accum``) changes nothing.
    """
    size = level * torch.rand(count if per == "sample" else 1, 1, 1, generator=generator, device=device)
    return size, torch.randn(count, tokens, dim, generator=generator, device=device)


def noise_decoder_input(inputs: torch.Tensor, kind: str, size: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """The latent noise of training (B, N, D): a decoder that has seen it decodes imperfect latents well.

    ``"tangent"`` (stage 4 here) turns every token's direction by a random
    tangent step of angle ``size`` (~ U(0, level)) and keeps its norm:
    isotropic in each token's tangent space, and an angle, so it means the
    same at every width D. ``"gaussian"`` (the HAE paper's latent smoothing,
    after RAE) adds ``size * noise``, in the decoder input's own units.

    Example:
        >>> z = sphere_ops.random_uniform((2, 4), 8) * 3.0
        >>> size, noise = draw_latent_noise(2, 4, 8, 0.3, "sample", torch.Generator().manual_seed(0), z.device)
        >>> noisy = noise_decoder_input(z, "tangent", size, noise)
        >>> bool((sphere_ops.dist(z, noisy) <= 0.3 * 1.5).all()), bool(torch.allclose(noisy.norm(dim=-1), z.norm(dim=-1)))
        (True, True)
    """
    size, noise = size.to(inputs.dtype), noise.to(inputs.dtype)
    if kind == "gaussian":
        return inputs + size * noise
    norms = inputs.norm(dim=-1, keepdim=True)
    directions = sphere_ops.normalize(inputs)
    step = sphere_ops.proju(directions, noise) / math.sqrt(inputs.shape[-1] - 1)
    return norms * sphere_ops.expmap(directions, step * size)


def set_trainable(model: SphericalAutoencoder, config: AETrainConfig) -> list[nn.Parameter]:
    model.requires_grad_(False)
    model.decoder.requires_grad_(True)
    if config.train_stem:
        model.encoder.stem.requires_grad_(True)
    return [p for p in model.parameters() if p.requires_grad]


def plan_stage(run_dir: str | os.PathLike, request: RunRequest, init: str | os.PathLike | None = None,
               resume: str | None = None) -> tuple[Checkpoint | None, ModelRecord | None, ResolvedRun]:
    """What a stage will do before it does it: the checkpoint it resumes (if any), the model it starts from
    (``init``, for a new run), and its configs, resolved (``dinosae.config.resolve``) with ``init``'s config in
    place of the preset and, on a resume, the run's own as the last layer."""
    previous = checkpoint_to_resume(Path(run_dir), resume, AUTOENCODER)
    start = _starting_point(init) if previous is None else None
    run = resolve_ae_run(request, init=None if start is None else start.config)
    return previous, start, continue_run(run, previous, ("ae_config", "train_config"))


def train_autoencoder(run_dir: str | os.PathLike, data_dir: str | os.PathLike, ae_config: AEConfig | None = None,
                      config: AETrainConfig | None = None, *, request: RunRequest | None = None,
                      init: str | os.PathLike | None = None, resume: str | None = None, override: bool = False,
                      explicit: dict[str, Collection[str]] | None = None,
                      teacher_weights: str | os.PathLike | None = None, device: str | None = None) -> Path:
    """Train one stage; returns the path of the final checkpoint.

    The configs are ``request``'s (the command line's, resolved here) or, from Python, ``ae_config`` and
    ``config`` (either None: the preset's and the stage's defaults, or a resumed run's own). ``init`` is
    the previous stage's run or checkpoint (its EMA weights and discriminator heads), or a released model:
    an exported folder (``dinosae export``, ``save_pretrained``) or an official release file; its
    configuration replaces the preset's (and ``ae_config``). ``resume`` is None (a new run), ``"latest"``
    or ``"auto"`` (resume if the run has a checkpoint, else start). A resumed run keeps its own configs and
    data (``dinosae.train.resume``): the fields set on purpose (``explicit``, ``{"model": ..., "train":
    ...}``; by default every field of a config passed) must equal the run's, unless ``override``.
    """
    run_dir = Path(run_dir)
    request = request or RunRequest.of_configs(ae_config, config, explicit)
    env = init_distributed(device)
    try:
        with exclusive(run_dir, "run", env, remove_checkpoint_leftovers):
            previous, start, run = plan_stage(run_dir, request, init, resume)
            listing = folder_listing(data_dir, env.on_main)
            dataset = ImageDataset(data_dir, run.model.image_size, listing=listing, crop=_crop(run.model, run.train),
                                   dtype=torch.uint8)
            provenance = settle(run, previous, dataset.identity(), override, str(run_dir))
            if previous is not None:
                teacher_weights = teacher_weights or previous.meta.get("teacher_weights")
            return _train(run_dir, dataset, run.model, run.train, env, previous, start, teacher_weights, provenance,
                          init)
    finally:
        shutdown(env)


def _starting_point(init: str | os.PathLike | None) -> ModelRecord | None:
    """What a new stage starts from: the autoencoder of ``--init`` (a run's EMA weights and discriminator
    heads, or a released model), or nothing."""
    return None if init is None else read_model(init, kind=AUTOENCODER)


def _train(run_dir: Path, dataset: ImageDataset, ae_config: AEConfig, config: AETrainConfig, env: DistEnv,
           previous: Checkpoint | None, start: ModelRecord | None, teacher_weights: str | os.PathLike | None,
           provenance: dict, init: str | os.PathLike | None) -> Path:
    torch.manual_seed(config.seed)
    use_tf32(env.device, config.tf32)
    if start is not None:
        model = SphericalAutoencoder.from_record(replace(start, config=ae_config), teacher_weights)
    else:
        model = SphericalAutoencoder(ae_config, teacher_weights)
    if previous is not None:
        model.encoder.teacher_missing = previous.meta.get("teacher_missing")
        model.teacher_origin = previous.meta.get("teacher_origin", model.teacher_origin)
    discriminator = DinoDiscriminator(model.latent_dim, ae_config.disc_depths) if config.gan_weight > 0 else None
    if discriminator is not None and start is not None and DISCRIMINATOR in start.parts:
        discriminator.load_state_dict(start.parts[DISCRIMINATOR])
    if config.train_stem and config.align_weight > 0:
        model.encoder.require_teacher("the alignment loss")
    if discriminator is not None:
        model.encoder.require_teacher("the DINO discriminator")
    state = _initial_state(model, discriminator, config, env.device)
    if previous is not None:
        state.restore(previous)
    step = AutoencoderStep(state, config, env, ae_config.image_size)
    meta = {"kind": AUTOENCODER, "stage": config.stage, "ae_config": to_dict(ae_config),
            "train_config": asdict(config),
            "teacher_weights": None if model.teacher_weights is None else str(model.teacher_weights),
            "teacher_origin": model.teacher_origin, "teacher_missing": model.encoder.teacher_missing,
            "classes": dataset.classes, **provenance, "init": None if init is None else str(init)}
    sampler = ResumableBatches(len(dataset), config.batch_size, config.seed, state.step, env.rank,
                               env.world_size, flip=config.flip, crop_draws=config.crop == "random")
    batches = batch_loader(dataset, sampler, collate_images, config.num_workers, config.seed, env.device)
    return fit(run_dir, state, step, batches, config=config, env=env, meta=meta,
               image_every=config.image_every, preview=step.preview,
               log_extra=lambda: {"lr": config.lr_at(state.step - 1)},
               count_items=lambda batch: batch.images.shape[0], data_size=len(dataset))


def _crop(ae_config: AEConfig, config: AETrainConfig) -> Crop:
    return Crop(ae_config.image_size, config.resize, random=config.crop == "random")


def _initial_state(model: SphericalAutoencoder, discriminator: DinoDiscriminator | None, config: AETrainConfig,
                   device: torch.device) -> TrainState:
    params = set_trainable(model, config)
    model.to(device)
    modules: dict[str, nn.Module] = {"model": model}
    optimizers = {"optimizer": adamw(params, config.lr, config.betas, config.weight_decay, device)}
    if discriminator is not None:
        modules[DISCRIMINATOR] = discriminator.to(device)
        optimizers["disc_optimizer"] = adamw(discriminator.parameters(), config.disc_lr, config.betas,
                                             config.weight_decay, device)
    return TrainState(modules, optimizers, EMA(model, config.ema_decay, config.ema_warmup), extra={"skipped": []},
                      phema=power_ema(model, config))


class AutoencoderStep:
    """One training step of a stage: the stem and decoder's update, then the discriminator's.

    Each rank's losses are weighted by its share of the global batch's readable
    images, so that unreadable images change neither the gradient's scale nor
    (under DDP) the balance between ranks. A rank left with no readable image
    still takes part in DDP's all-reduce, with a zero-weight stand-in batch.
    With ``grad_accum`` the rank's images go through in that many micro-batches,
    each weighted by its share, and DDP all-reduces only on the last: the
    gradient of the whole batch, at the memory of one micro-batch. (The
    adaptive GAN weight, a ratio of gradient norms, is taken per micro-batch.)
    """

    def __init__(self, state: TrainState, config: AETrainConfig, env: DistEnv, image_size: int) -> None:
        self.config, self.env, self.image_size = config, env, image_size
        self.model: SphericalAutoencoder = state.model
        self.discriminator: DinoDiscriminator | None = state.modules.get(DISCRIMINATOR)
        forward = TrainForward(self.model, config)
        self.forward = wrap_ddp(torch.compile(forward) if config.compile else forward, env)
        self.disc_forward = wrap_ddp(self.discriminator, env) if self.discriminator is not None else None
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.lpips = _lpips(config, env.device)
        self.model.decoder.checkpointing = config.grad_checkpoint
        if self.lpips is not None:
            self.lpips.checkpointing = config.grad_checkpoint
        self._last: tuple[torch.Tensor, torch.Tensor] | None = None

    def __call__(self, state: TrainState, batch: ImageBatch, generator: torch.Generator) -> dict[str, torch.Tensor]:
        config, device, step = self.config, self.env.device, state.step
        warn_skipped(state, batch.skipped)
        images = batch.pixels(device)
        self.model.train()
        discriminator = self.discriminator if self.discriminator is not None and step >= config.gan_start else None
        level = config.noise_bound(step)
        noise = None if level == 0 else draw_latent_noise(
            images.shape[0], self.model.encoder.grid_size() ** 2, self.model.latent_dim, level, config.noise_per,
            generator, device)
        parts = [self._micro_batch(images, noise, part) for part in micro_batches(images.shape[0], config.grad_accum)]
        logged = _WeightedMean()
        reconstructions = []
        for index, (micro, micro_noise, weight) in enumerate(parts):
            with sync_gradients(self.forward, index == len(parts) - 1):
                with autocast(device):
                    losses, reconstruction = generator_losses(self.forward, self.model, micro, config, self.lpips,
                                                              discriminator, step, micro_noise)
                _weighted(losses["loss"], weight).backward()
            logged.add(losses, weight)
            reconstructions.append(reconstruction.detach())
        losses = logged.mean()
        _set_lr(state.optimizers["optimizer"], config.lr_at(step))
        losses["grad_norm"] = optimizer_step(state.optimizers["optimizer"], self.params, config.grad_clip)
        state.ema.update(self.model)
        if self.discriminator is not None and step >= config.disc_start:
            losses.update(self._train_discriminator(state, parts, reconstructions))
        self._last = (parts[-1][0], reconstructions[-1])
        return losses

    def _micro_batch(self, images: torch.Tensor, noise: tuple[torch.Tensor, torch.Tensor] | None, part: slice
                     ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None, float]:
        """The images and noise of one micro-batch and its weight: its share of the global batch (times
        the ranks, whose gradients DDP averages); a zero-weight stand-in image if it has none."""
        micro = images[part]
        weight = micro.shape[0] * self.env.world_size / self.config.batch_size
        if noise is not None:
            size, directions = noise
            noise = (size[part] if size.shape[0] > 1 else size, directions[part])
        if micro.shape[0] == 0:
            micro = images.new_zeros(1, 3, self.image_size, self.image_size)
            if noise is not None:
                noise = (noise[0].new_zeros(1, 1, 1), noise[1].new_zeros(1, *noise[1].shape[1:]))
        return micro, noise, weight

    def _train_discriminator(self, state: TrainState, parts: list, reconstructions: list[torch.Tensor]
                             ) -> dict[str, torch.Tensor]:
        config, device = self.config, self.env.device
        logged = _WeightedMean()
        for index, ((micro, _, weight), reconstruction) in enumerate(zip(parts, reconstructions)):
            with sync_gradients(self.disc_forward, index == len(parts) - 1):
                with autocast(device):
                    # One forward for both halves: DDP expects one forward per backward.
                    logits = self.disc_forward(torch.cat([micro, reconstruction.to(micro.dtype)]),
                                               self.model.encoder.vit)
                    real, fake = logits.chunk(2)
                    loss = hinge_discriminator_loss(real, fake)
                _weighted(loss, weight).backward()
            # Whether the discriminator learns anything: the share of each half it classifies right.
            logged.add({"gan_d": loss, "disc_acc_real": (real.detach() > 0).float().mean(),
                        "disc_acc_fake": (fake.detach() < 0).float().mean()}, weight)
        _set_lr(state.optimizers["disc_optimizer"], config.lr_at(state.step, config.disc_lr))
        optimizer_step(state.optimizers["disc_optimizer"], self.discriminator.parameters(), config.grad_clip)
        return logged.mean()

    def preview(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The last step's (last micro-batch's) images and their reconstructions."""
        if self._last is None:
            raise RuntimeError("no step has run yet")
        return self._last


class _WeightedMean:
    """The mean of each logged scalar over micro-batches, weighted by their images (a stand-in counts
    only when no micro-batch has any, so that a rank without images still logs finite numbers)."""

    def __init__(self) -> None:
        self.parts: list[tuple[dict[str, torch.Tensor], float]] = []

    def add(self, scalars: dict[str, torch.Tensor], weight: float) -> None:
        self.parts.append(({name: torch.as_tensor(value).detach().float() for name, value in scalars.items()},
                           weight))

    def mean(self) -> dict[str, torch.Tensor]:
        if len(self.parts) == 1:
            return self.parts[0][0]
        parts = self.parts
        total = sum(weight for _, weight in parts)
        if total == 0:
            parts, total = [(scalars, 1.0) for scalars, _ in parts], len(parts)
        return {name: sum(scalars[name] * weight for scalars, weight in parts) / total for name in parts[0][0]}


def _set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def _weighted(loss: torch.Tensor, weight: float) -> torch.Tensor:
    return loss if weight == 1.0 else loss * weight


def generator_losses(step_forward: nn.Module, model: SphericalAutoencoder, images: torch.Tensor,
                     config: AETrainConfig, lpips: nn.Module | None, discriminator: DinoDiscriminator | None,
                     step: int = 0, noise: tuple[torch.Tensor, torch.Tensor] | None = None
                     ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The losses that train the stem and decoder on one batch: ``({name: value, "loss": total}, reconstruction)``.

    ``step_forward`` is ``TrainForward`` (possibly DDP-wrapped or compiled). The
    discriminator, when given, is called unwrapped with its weights frozen: the
    generator's loss must not train it, and DDP must not see this call.
    """
    reconstruction, tokens = step_forward(images, noise)
    losses = {"l1": l1_loss(reconstruction, images)}
    if lpips is not None:
        losses["lpips"] = lpips(reconstruction, images).mean()
    rec = config.l1_weight * losses["l1"] + config.lpips_weight * losses.get("lpips", 0.0)
    total = rec
    if config.train_stem and config.align_weight > 0:
        losses["align"] = alignment_loss(tokens, model.encoder.teacher_tokens(images), config.align)
        total = total + config.align_weight * losses["align"]
    if discriminator is not None:
        discriminator.requires_grad_(False)
        losses["gan_g"] = hinge_generator_loss(discriminator(reconstruction, model.encoder.vit))
        discriminator.requires_grad_(True)
        weight = (adaptive_gan_weight(rec, losses["gan_g"], model.decoder.last_layer, config.gan_max_weight)
                  if config.gan_adaptive else 1.0)
        losses["gan_weight"] = torch.as_tensor(weight, device=images.device)
        total = total + config.gan_weight * weight * losses["gan_g"]
    losses["loss"] = total
    return losses, reconstruction


def _lpips(config: AETrainConfig, device: torch.device) -> nn.Module | None:
    if config.lpips_weight <= 0:
        return None
    from dinosae.metrics.lpips import LPIPS

    return LPIPS(validate=False).to(device)
