"""Training throughput of the autoencoder (stages 1 and 2) and of the DiT, and the DiT's sphere-op share.

Runs the real training step functions (``dinosae.train.autoencoder.generator_losses``,
``dinosae.flow.flow_matching_loss``) on synthetic batches, so the numbers are the model's,
not the data loader's. Random ViT weights: the same compute as DINOv3's.

    python bench/train_throughput.py --device cuda --ae-preset B --dit-preset B --out results.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
import warnings

import torch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _autocast(device: torch.device):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def _timed(step, device: torch.device, warmup: int, steps: int) -> float:
    for _ in range(warmup):
        step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return (time.perf_counter() - start) / steps


def autoencoder(stage: int, preset: str, image_size: int, batch: int, device: torch.device, warmup: int,
                steps: int, vgg: str | None) -> dict:
    from dinosae.config import AE_PRESETS, preset as get_preset
    from dinosae.train.losses import hinge_discriminator_loss
    from dinosae.metrics import LPIPS
    from dinosae.models.autoencoder import SphericalAutoencoder
    from dinosae.models.discriminator import DinoDiscriminator
    from dinosae.train.autoencoder import TrainForward, generator_losses, set_trainable
    from dinosae.config import AETrainConfig

    config = dataclasses.replace(get_preset(AE_PRESETS, preset), image_size=image_size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = SphericalAutoencoder(config)
    train = AETrainConfig(stage=stage)
    params = set_trainable(model, train)
    model.to(device)
    discriminator = DinoDiscriminator(model.latent_dim, config.disc_depths).to(device) if stage == 2 else None
    lpips = LPIPS(vgg_weights=vgg, validate=False).to(device)
    optimizer = torch.optim.AdamW(params, lr=1e-4, betas=train.betas)
    disc_optimizer = torch.optim.AdamW(discriminator.parameters(), lr=1e-4) if discriminator else None
    forward = TrainForward(model, train)
    images = torch.rand(batch, 3, image_size, image_size, device=device)
    generator = torch.Generator(device=device).manual_seed(0)

    def step() -> None:
        with _autocast(device):
            losses, reconstruction = generator_losses(forward, model, images, generator, train, lpips, discriminator)
        losses["loss"].backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if discriminator is not None:
            with _autocast(device):
                logits = discriminator(torch.cat([images, reconstruction.detach().to(images.dtype)]), model.encoder.vit)
                real, fake = logits.chunk(2)
                loss = hinge_discriminator_loss(real, fake)
            loss.backward()
            disc_optimizer.step()
            disc_optimizer.zero_grad(set_to_none=True)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seconds = _timed(step, device, warmup, steps)
    return {"what": f"ae stage {stage}", "preset": preset, "image_size": image_size, "batch": batch,
            "step_ms": 1000 * seconds, "images_per_s": batch / seconds,
            "trainable_params_M": sum(p.numel() for p in params) / 1e6,
            "peak_GiB": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None}


def dit(preset: str, tokens_side: int, dim: int, batch: int, device: torch.device, warmup: int, steps: int) -> dict:
    import sphere_ops
    from dinosae import create_model
    from dinosae.flow import LogitNormalTime, ShiftedTime, dimension_shift, flow_matching_loss

    model = create_model(f"dit-{preset}", in_dim=dim, grid_size=tokens_side, num_classes=1000).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x1 = sphere_ops.random_uniform((batch, tokens_side**2), dim, device=device)
    y = torch.randint(0, 1000, (batch,), device=device)
    sampler = ShiftedTime(LogitNormalTime(), dimension_shift(tokens_side**2 * dim))
    generator = torch.Generator(device=device).manual_seed(0)

    def step() -> None:
        with _autocast(device):
            loss, _ = flow_matching_loss(model, model.manifold, x1, y, time_sampler=sampler, generator=generator)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    seconds = _timed(step, device, warmup, steps)
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as profile:
        step()
        _sync(device)
    events = profile.key_averages()
    attribute = "device_time_total" if device.type == "cuda" else "cpu_time_total"
    sphere_us = sum(getattr(e, attribute) for e in events if e.key.startswith("sphere_ops::"))
    total_us = sum(getattr(e, "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total")
                   for e in events)
    return {"what": "dit rfm", "preset": preset, "tokens": tokens_side**2, "dim": dim, "batch": batch,
            "step_ms": 1000 * seconds, "images_per_s": batch / seconds,
            "params_M": sum(p.numel() for p in model.parameters()) / 1e6,
            "sphere_ops_share": sphere_us / max(total_us, 1e-9)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--what", default="ae1,ae2,dit")
    parser.add_argument("--ae-preset", default="B")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--ae-batch", type=int, default=32)
    parser.add_argument("--dit-preset", default="B")
    parser.add_argument("--dit-grid", type=int, default=16)
    parser.add_argument("--dit-dim", type=int, default=768)
    parser.add_argument("--dit-batch", type=int, default=256)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--vgg", default=None, help="torchvision-layout VGG16 weights for LPIPS")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    device = torch.device(args.device)
    results = []
    for what in args.what.split(","):
        if what in ("ae1", "ae2"):
            result = autoencoder(int(what[-1]), args.ae_preset, args.image_size, args.ae_batch, device,
                                 args.warmup, args.steps, args.vgg)
        else:
            result = dit(args.dit_preset, args.dit_grid, args.dit_dim, args.dit_batch, device, args.warmup, args.steps)
        print(json.dumps(result), flush=True)
        results.append(result)
        if args.out:
            with open(args.out, "w") as handle:
                json.dump({"device": str(device), "results": results}, handle, indent=1)


if __name__ == "__main__":
    main()
