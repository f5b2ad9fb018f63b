"""``dinosae train ae``: one stage of the autoencoder's training.

A stage starts from the previous stage's checkpoint (``init``) or resumes its
own run directory (``resume``). Data order, augmentation and every random draw
are functions of ``(seed, step)``, so an interrupted and resumed run takes the
same steps as an uninterrupted one.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

import sphere_ops
from dinosae.config import AEConfig, from_dict, to_dict
from dinosae.data import ImageDataset, ResumableBatches, collate_images
from dinosae.losses import (adaptive_gan_weight, alignment_loss, hinge_discriminator_loss,
                            hinge_generator_loss, l1_loss)
from dinosae.models.autoencoder import SphericalAutoencoder
from dinosae.models.discriminator import DinoDiscriminator
from dinosae.models.loading import DISCRIMINATOR, autoencoder_weights
from dinosae.train.ae_config import AETrainConfig
from dinosae.train.checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from dinosae.train.common import (autocast, check_finite, checkpoint_to_resume, optimizer_step,
                                  save_pairs, write_json)
from dinosae.train.distributed import DistEnv, barrier, init_distributed, mean_across_ranks, shutdown
from dinosae.train.ema import EMA
from dinosae.train.runlog import RunLogger
from dinosae.train.rng import capture_rng, restore_rng, step_generator

KIND = "autoencoder"


class TrainForward(nn.Module):
    """The differentiable part of a step, as one module so that DDP can wrap it."""

    def __init__(self, model: SphericalAutoencoder, config: AETrainConfig) -> None:
        super().__init__()
        self.model = model
        self.config = config

    def forward(self, images: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        encoder = self.model.encoder
        if self.config.trains_stem:
            tokens = encoder.student_tokens(images)
            latents = sphere_ops.normalize(tokens)
        else:
            with torch.no_grad():
                tokens = encoder.student_tokens(images)
                latents = sphere_ops.normalize(tokens)
        if self.config.stage == 4:
            latents = noise_latents(latents, self.config.noise_max, generator)
        return self.model.decode(latents), tokens


def noise_latents(latents: torch.Tensor, noise_max: float, generator: torch.Generator) -> torch.Tensor:
    """Stage 4's augmentation: a random tangent step of angle ~ U(0, noise_max) per image, back by ``expmap``.

    The noise is isotropic in each token's tangent space, and its size is an
    angle, so it means the same at every latent width D.

    Example:
        >>> z = sphere_ops.random_uniform((2, 4), 8)
        >>> noisy = noise_latents(z, 0.3, torch.Generator().manual_seed(0))
        >>> bool((sphere_ops.dist(z, noisy) <= 0.3 * 1.5).all())
        True
    """
    batch, _, dim = latents.shape
    direction = sphere_ops.proju(latents, torch.randn(latents.shape, generator=generator,
                                                       device=latents.device, dtype=latents.dtype))
    direction = direction / math.sqrt(dim - 1)
    angle = torch.rand(batch, 1, 1, generator=generator, device=latents.device, dtype=latents.dtype) * noise_max
    return sphere_ops.expmap(latents, direction * angle)


def set_trainable(model: SphericalAutoencoder, config: AETrainConfig) -> list[nn.Parameter]:
    model.requires_grad_(False)
    model.decoder.requires_grad_(True)
    if config.trains_stem:
        model.encoder.stem.requires_grad_(True)
    return [p for p in model.parameters() if p.requires_grad]


def _load_init(init: str | os.PathLike, model: SphericalAutoencoder,
               discriminator: DinoDiscriminator | None) -> None:
    """Start a stage from the previous stage's checkpoint: its EMA weights, and its discriminator heads."""
    checkpoint = load_checkpoint(init, with_state=False)
    if checkpoint.meta.get("kind") != KIND:
        raise CheckpointError(f"--init {str(init)!r} is not an autoencoder checkpoint")
    weights = autoencoder_weights(checkpoint.model, checkpoint.ema, use_ema=True)
    missing, unexpected = model.load_state_dict(weights, strict=False)
    missing = [k for k in missing if not (model.teacher_weights and k.startswith("encoder.vit."))]
    if missing or unexpected:
        raise CheckpointError(f"--init {str(init)!r} does not fit this model: missing {missing[:5]}, "
                              f"unexpected {unexpected[:5]}")
    heads = {k[len(DISCRIMINATOR):]: v for k, v in checkpoint.model.items() if k.startswith(DISCRIMINATOR)}
    if discriminator is not None and heads:
        discriminator.load_state_dict(heads)


def train_autoencoder(run_dir: str | os.PathLike, data_dir: str | os.PathLike, ae_config: AEConfig,
                      config: AETrainConfig, *, init: str | os.PathLike | None = None, resume: bool = False,
                      teacher_weights: str | os.PathLike | None = None, device: str | None = None) -> Path:
    """Train one stage; returns the path of the final checkpoint.

    With ``resume``, the configuration stored in the run's checkpoint wins over
    ``ae_config`` and ``config``, except for ``config.steps`` (to extend a run).
    """
    run_dir = Path(run_dir)
    env = init_distributed(device)
    try:
        return _train(run_dir, data_dir, ae_config, config, init, resume, teacher_weights, env)
    finally:
        shutdown(env)


def _train(run_dir: Path, data_dir: str | os.PathLike, ae_config: AEConfig, config: AETrainConfig,
           init: str | os.PathLike | None, resume: bool, teacher_weights: str | os.PathLike | None,
           env: DistEnv) -> Path:
    previous = checkpoint_to_resume(run_dir, resume, KIND)
    if previous is not None:
        ae_config = from_dict(AEConfig, previous.meta["ae_config"])
        config = from_dict(AETrainConfig, dict(previous.meta["train_config"], steps=config.steps))
        teacher_weights = teacher_weights or previous.meta.get("teacher_weights")
    dataset = ImageDataset(data_dir, ae_config.image_size)
    device = env.device
    torch.manual_seed(config.seed)
    model = SphericalAutoencoder(ae_config, teacher_weights)
    use_gan = config.gan_weight > 0
    discriminator = DinoDiscriminator(model.latent_dim, ae_config.disc_depths) if use_gan else None
    if init is not None and previous is None:
        _load_init(init, model, discriminator)
    params = set_trainable(model, config)
    model.to(device)
    if discriminator is not None:
        discriminator.to(device)
    ema = EMA(model, config.ema_decay)
    optimizer = torch.optim.AdamW(params, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay)
    disc_optimizer = None
    if discriminator is not None:
        disc_optimizer = torch.optim.AdamW(discriminator.parameters(), lr=config.disc_lr, betas=config.betas,
                                           weight_decay=config.weight_decay)
    start = 0
    if previous is not None:
        start = _restore(previous, model, discriminator, ema, optimizer, disc_optimizer)
    lpips = _lpips(config, device)

    forward = TrainForward(model, config)
    if config.compile:
        forward = torch.compile(forward)
    step_forward: nn.Module = forward
    disc_forward: nn.Module | None = discriminator
    if env.distributed:
        step_forward = DistributedDataParallel(forward, device_ids=[device.index] if device.type == "cuda" else None)
        if discriminator is not None:
            disc_forward = DistributedDataParallel(discriminator,
                                                   device_ids=[device.index] if device.type == "cuda" else None)

    meta = {"kind": KIND, "stage": config.stage, "ae_config": to_dict(ae_config),
            "train_config": asdict(config), "teacher_weights": None if teacher_weights is None else str(teacher_weights),
            "classes": dataset.classes, "init": None if init is None else str(init)}
    if env.is_main:
        write_json(run_dir / "config.json", meta)

    sampler = ResumableBatches(len(dataset), config.batch_size, config.seed, start, env.rank, env.world_size)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_images,
                                         num_workers=config.num_workers, pin_memory=device.type == "cuda",
                                         persistent_workers=config.num_workers > 0,
                                         generator=torch.Generator().manual_seed(config.seed))
    batches = iter(loader)
    skipped: set[str] = set(previous.state.get("skipped", [])) if previous is not None else set()
    vit = model.encoder.vit
    last_path = None
    with RunLogger(run_dir, config.steps, start, enabled=env.is_main) as log:
        for step in range(start, config.steps):
            batch = next(batches)
            for path in batch.skipped:
                if path not in skipped:
                    warnings.warn(f"skipping unreadable image {path}", stacklevel=2)
                    skipped.add(path)
            if batch.images.shape[0] == 0:
                continue
            images = batch.images.to(device, non_blocking=True)
            generator = step_generator(config.seed, step, env.rank, device)
            model.train()
            gan_now = discriminator is not None and step >= config.gan_start
            with autocast(device):
                losses, reconstruction = generator_losses(step_forward, model, images, generator, config, lpips,
                                                          discriminator if gan_now else None)
            total = losses["loss"]
            # Before any update: a NaN (from the batch or a diverging run) must not reach the weights.
            check_finite(losses, step)
            total.backward()
            losses["grad_norm"] = optimizer_step(optimizer, params, config.grad_clip)
            ema.update(model)
            if gan_now:
                with autocast(device):
                    # One forward for both halves: DDP expects one forward per backward.
                    logits = disc_forward(torch.cat([images, reconstruction.detach().to(images.dtype)]), vit)
                    real, fake = logits.chunk(2)
                    losses["gan_d"] = hinge_discriminator_loss(real, fake)
                check_finite({"gan_d": losses["gan_d"]}, step)
                losses["gan_d"].backward()
                optimizer_step(disc_optimizer, discriminator.parameters(), config.grad_clip)
            done = step + 1
            if done % config.log_every == 0 or done == config.steps:
                scalars = mean_across_ranks({k: float(v.detach()) for k, v in losses.items()}, env)
                log.step(done, scalars, images_seen=config.batch_size * config.log_every)
            if env.is_main and (done % config.image_every == 0 or done == config.steps):
                grid = save_pairs(run_dir / "images" / f"recon_{done:08d}.png", images, reconstruction)
                log.images("reconstruction", grid, done)
            if done % config.ckpt_every == 0 or done == config.steps:
                last_path = _save(run_dir, done, model, discriminator, ema, optimizer, disc_optimizer,
                                  meta, skipped, config, env)
    if skipped and env.is_main:
        warnings.warn(f"{len(skipped)} unreadable image(s) were skipped", stacklevel=2)
    return last_path if last_path is not None else run_dir


def generator_losses(step_forward: nn.Module, model: SphericalAutoencoder, images: torch.Tensor,
                     generator: torch.Generator, config: AETrainConfig, lpips: nn.Module | None,
                     discriminator: DinoDiscriminator | None) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The losses that train the stem and decoder on one batch: ``({name: value, "loss": total}, reconstruction)``.

    ``step_forward`` is ``TrainForward`` (possibly DDP-wrapped or compiled). The
    discriminator, when given, is called unwrapped with its weights frozen: the
    generator's loss must not train it, and DDP must not see this call.
    """
    reconstruction, tokens = step_forward(images, generator)
    losses = {"l1": l1_loss(reconstruction, images)}
    if lpips is not None:
        losses["lpips"] = lpips(reconstruction, images).mean()
    rec = config.l1_weight * losses["l1"] + config.lpips_weight * losses.get("lpips", 0.0)
    total = rec
    if config.trains_stem and config.align_weight > 0:
        losses["align"] = alignment_loss(tokens, model.encoder.teacher_tokens(images), config.align)
        total = total + config.align_weight * losses["align"]
    if discriminator is not None:
        discriminator.requires_grad_(False)
        losses["gan_g"] = hinge_generator_loss(discriminator(reconstruction, model.encoder.vit))
        discriminator.requires_grad_(True)
        weight = adaptive_gan_weight(rec, losses["gan_g"], model.decoder.last_layer)
        losses["gan_weight"] = weight
        total = total + config.gan_weight * weight * losses["gan_g"]
    losses["loss"] = total
    return losses, reconstruction


def _lpips(config: AETrainConfig, device: torch.device) -> nn.Module | None:
    if config.lpips_weight <= 0:
        return None
    from dinosae.metrics.lpips import LPIPS

    return LPIPS(validate=False).to(device)


def _save(run_dir: Path, step: int, model: SphericalAutoencoder, discriminator: DinoDiscriminator | None,
          ema: EMA, optimizer: torch.optim.Optimizer, disc_optimizer: torch.optim.Optimizer | None,
          meta: dict, skipped: set[str], config: AETrainConfig, env: DistEnv) -> Path | None:
    path = None
    if env.is_main:
        weights = model.weights_to_save()
        if discriminator is not None:
            weights.update({DISCRIMINATOR + k: v for k, v in discriminator.state_dict().items()})
        state = {"optimizer": optimizer.state_dict(), "rng": capture_rng(), "skipped": sorted(skipped),
                 "ema_updates": ema.updates}
        if disc_optimizer is not None:
            state["disc_optimizer"] = disc_optimizer.state_dict()
        checkpoint = Checkpoint(step=step, model=weights, ema=ema.state_dict(), state=state, meta=meta)
        path = save_checkpoint(run_dir, checkpoint, keep_last=config.keep_last)
    barrier(env)
    return path


def _restore(previous: Checkpoint, model: SphericalAutoencoder, discriminator: DinoDiscriminator | None,
             ema: EMA, optimizer: torch.optim.Optimizer, disc_optimizer: torch.optim.Optimizer | None) -> int:
    weights = {k: v for k, v in previous.model.items() if not k.startswith(DISCRIMINATOR)}
    model.load_state_dict(weights, strict=model.teacher_weights is None)
    if discriminator is not None:
        discriminator.load_state_dict({k[len(DISCRIMINATOR):]: v for k, v in previous.model.items()
                                       if k.startswith(DISCRIMINATOR)})
        disc_optimizer.load_state_dict(previous.state["disc_optimizer"])
    ema.load_state_dict(previous.ema, previous.state["ema_updates"])
    optimizer.load_state_dict(previous.state["optimizer"])
    restore_rng(previous.state["rng"])
    return previous.step
