"""``dinosae demo``: the whole pipeline, end to end, in one command."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import click

from dinosae.commands.common import device_option, one_line_errors


@click.command("demo")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("dinosae-demo"),
              show_default=True)
@click.option("--quick", is_flag=True, help="A few steps of everything (a smoke test, about a minute).")
@click.option("--data", type=click.Path(path_type=Path), default=None,
              help="ImageFolder tree to train on (default: photos bundled with scikit-image).")
@click.option("--heldout", type=click.Path(path_type=Path), default=None, help="Held-out folder for evaluation.")
@click.option("--preset", type=click.Choice(["tiny", "S", "B", "L"]), default="tiny", show_default=True)
@click.option("--dit-preset", type=click.Choice(["tiny", "S", "B", "L", "XL"]), default="tiny", show_default=True)
@click.option("--image-size", type=click.IntRange(16), default=64, show_default=True)
@click.option("--scale", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
              help="Multiply every step count (and the sample count) by this.")
@click.option("--teacher-weights", type=click.Path(path_type=Path), default=None,
              help="DINOv3 weights; without them the teacher is random and the numbers are not meaningful.")
@click.option("--no-fid", is_flag=True, help="Skip the Inception metrics (the slowest part on a CPU).")
@click.option("--seed", type=int, default=0, show_default=True)
@device_option
@one_line_errors
def demo(out, quick, data, heldout, preset, dit_preset, image_size, scale, teacher_weights, no_fid, seed,
         device) -> None:
    """Train the autoencoder and a flow-matching DiT on real photos, sample, evaluate, and write a report."""
    # The demo's models are small: spinning OpenMP workers cost more than they save on a shared CPU.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from dinosae.demo import DemoConfig, run_demo

    if image_size % 16:
        raise click.BadParameter(f"{image_size} is not a multiple of 16", param_hint="--image-size")
    settings = dict(out=out, data=data, heldout=heldout, preset=preset, dit_preset=dit_preset, image_size=image_size,
                    teacher_weights=teacher_weights, device=device, seed=seed)
    config = DemoConfig.quick(**settings) if quick else DemoConfig(**settings)
    if scale != 1.0:
        config = dataclasses.replace(
            config, ae_steps=tuple(max(1, round(s * scale)) for s in config.ae_steps),
            dit_steps=max(1, round(config.dit_steps * scale)), samples=max(1, round(config.samples * scale)))
    if no_fid:
        config.fid = False
    metrics = run_demo(config, say=lambda line: click.echo(line, err=True))
    recon = metrics["recon"]
    click.echo(f"report: {out / 'report.html'}")
    click.echo(f"held-out reconstruction: PSNR {recon['psnr']:.2f} dB, SSIM {recon['ssim']:.3f}, "
               f"LPIPS {recon['lpips']:.3f}")
    click.echo(f"latent sliced W2 to the data: samples {metrics['latent_sw_generated']:.4f}, "
               f"uniform noise {metrics['latent_sw_noise']:.4f}")
    if "generation" in metrics:
        click.echo(f"FID vs training images ({int(metrics['generation']['num_fake'])} samples, not comparable "
                   f"to papers): {metrics['generation']['fid']:.1f}")
    if metrics["random_teacher"]:
        click.echo("the DINOv3 teacher was random (no --teacher-weights): these numbers are a smoke test, "
                   "not DINO-SAE's quality")
