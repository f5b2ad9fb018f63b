"""``dinosae demo`` and ``dinosae ablate align|path|sampling|precision``: experiments that train and evaluate
end to end."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import click

from dinosae.cli.options import (FiniteFloat, comma_separated, device_option, json_option, one_line_errors,
                                 preset_option, report, resume_option, teacher_weights_option)
from dinosae.config import preset_names


@click.command("demo")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("dinosae-demo"),
              show_default=True)
@click.option("--quick", is_flag=True, help="A few steps of everything (a smoke test, about a minute).")
@click.option("--data", type=click.Path(path_type=Path), default=None,
              help="ImageFolder tree to train on (default: photos bundled with scikit-image).")
@click.option("--heldout", type=click.Path(path_type=Path), default=None, help="Held-out folder for evaluation.")
@preset_option("ae", "tiny")
@click.option("--dit-preset", type=click.Choice(preset_names("dit")), default="tiny", show_default=True)
@click.option("--image-size", type=click.IntRange(16), default=64, show_default=True)
@click.option("--scale", type=FiniteFloat(min=0, min_open=True), default=1.0, show_default=True,
              help="Multiply every step count (and the sample count) by this.")
@teacher_weights_option
@click.option("--no-fid", is_flag=True, help="Skip the Inception metrics (the slowest part on a CPU).")
@click.option("--seed", type=int, default=0, show_default=True)
@device_option
@one_line_errors
def demo(out, quick, data, heldout, preset, dit_preset, image_size, scale, teacher_weights, no_fid, seed,
         device) -> None:
    """Train the autoencoder and a flow-matching DiT on real photos, sample, evaluate, and write a report."""
    # The demo's models are small: spinning OpenMP workers cost more than they save on a shared CPU.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from dinosae.experiments.demo import DemoConfig, run_demo

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
        config = dataclasses.replace(config, fid=False)
    metrics = run_demo(config, say=lambda line: click.echo(line, err=True))
    recon = metrics["recon"]
    where = "photos never trained on" if metrics["recon_split"] == "unseen" else "held-out images"
    click.echo(f"report: {out / 'report.html'}")
    click.echo(f"reconstruction of {where}: PSNR {recon['psnr']:.2f} dB, SSIM {recon['ssim']:.3f}, "
               f"LPIPS {recon['lpips']:.3f}, stripe score {recon['stripe_score']:.2f}")
    click.echo(f"latent sliced W2 to the data: samples {metrics['latent_sw_generated']:.4f}, "
               f"uniform noise {metrics['latent_sw_noise']:.4f}")
    if "generation" in metrics:
        click.echo(f"FID vs held-out images ({int(metrics['generation']['num_fake'])} samples, not comparable "
                   f"to papers): {metrics['generation']['fid']:.1f}")
    if metrics["random_teacher"]:
        click.echo("the DINOv3 teacher was random (no --teacher-weights): these numbers are a smoke test, "
                   "not DINO-SAE's quality")


@click.command("align")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/ablate-align"),
              show_default=True, help="Holds the two runs, metrics.json and loss.png.")
@click.option("--data", type=click.Path(path_type=Path), default=None,
              help="Root with train/ and heldout/ trees, or a training tree with --heldout "
                   "(default: the photo dataset, built in OUT/data).")
@click.option("--heldout", type=click.Path(path_type=Path), default=None, help="Held-out images.")
@preset_option("ae", "tiny")
@click.option("--steps", type=click.IntRange(1), default=200, show_default=True, help="Steps of each run.")
@click.option("--batch-size", type=click.IntRange(1), default=8, show_default=True)
@click.option("--lr", type=FiniteFloat(min=0, min_open=True), default=3e-4, show_default=True)
@click.option("--lpips-weight", type=FiniteFloat(min=0), default=1.0, show_default=True)
@click.option("--probe-per-class", type=click.IntRange(1), default=None,
              help="Train the probes on the first N images of each class only.")
@click.option("--seed", type=int, default=0, show_default=True)
@resume_option
@click.option("--num-workers", type=click.IntRange(0), default=0, show_default=True)
@teacher_weights_option
@device_option
@json_option
@one_line_errors
def ablate_align(out, data, heldout, preset, steps, batch_size, lr, lpips_weight, probe_per_class, seed, resume,
                 num_workers, teacher_weights, device, as_json) -> None:
    """Cosine against MSE alignment at the same budget: reconstruction, teacher agreement, probes."""
    from dinosae.experiments.ablate_align import ablate_align as run
    from dinosae.experiments.ablate_align import format_table

    result = run(out, data, heldout_dir=heldout, steps=steps, batch_size=batch_size, lr=lr,
                 lpips_weight=lpips_weight, probe_per_class=probe_per_class, preset_name=preset, seed=seed,
                 teacher_weights=teacher_weights, device=device, num_workers=num_workers, resume=resume)
    report(result, as_json, f"{format_table(result)}\nwrote {out / 'metrics.json'} and {out / 'loss.png'}")


@click.command("path")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/ablate-path"),
              show_default=True,
              help="Receives metrics.json and the plots path_*.png (training curves) and nfe_*.png (solvers).")
@click.option("--latents", type=click.Path(path_type=Path), default=None,
              help="Latent cache of `dinosae encode`: also run the grid on real latents.")
@preset_option("dit", "tiny", help="Size of the DiT of every run.")
@click.option("--steps", type=click.IntRange(1), default=400, show_default=True, help="Training steps of each path.")
@click.option("--eval-every", type=click.IntRange(1), default=25, show_default=True,
              help="Measure the distance every N steps.")
@click.option("--batch-size", type=click.IntRange(1), default=128, show_default=True)
@click.option("--lr", type=FiniteFloat(min=0, min_open=True), default=1e-3, show_default=True)
@click.option("--sample-steps", type=click.IntRange(1), default=20, show_default=True,
              help="Euler steps of the sampler at each evaluation during training.")
@click.option("--nfe", "nfes", callback=comma_separated(int, "evaluation counts", minimum=1),
              default="4,8,16,32,64,250", show_default=True,
              help="Budgets of function evaluations at which each trained model is sampled with each solver.")
@click.option("--eval-samples", type=click.IntRange(2), default=2048, show_default=True,
              help="Size of the vMF held-out set (and of each model's sample).")
@click.option("--heldout-fraction", type=FiniteFloat(0, 0.5, min_open=True), default=0.25, show_default=True,
              help="Share of the latents held out for the distance.")
@click.option("--max-latents", type=click.IntRange(4), default=4096, show_default=True,
              help="Use at most N latents of the cache (a random subset).")
@click.option("--seed", type=int, default=0, show_default=True)
@device_option
@json_option
@one_line_errors
def ablate_path(out, latents, preset, steps, eval_every, batch_size, lr, sample_steps, nfes, eval_samples,
                heldout_fraction, max_latents, seed, device, as_json) -> None:
    """Sphere against R^D, velocity against endpoint prediction, Euler against Heun at each NFE: sliced W2 on
    a vMF mixture (and real latents), training steps to a fixed distance, and the fewest steps on the sphere."""
    from dinosae.experiments.ablate_path import ablate_path as run
    from dinosae.experiments.path_report import format_summary

    result = run(out, latents=latents, steps=steps, eval_every=eval_every, batch_size=batch_size, lr=lr,
                 preset=preset, sample_steps=sample_steps, nfes=nfes, eval_samples=eval_samples,
                 heldout_fraction=heldout_fraction, max_latents=max_latents, seed=seed, device=device,
                 progress=True)
    report(result, as_json, f"{format_summary(result)}\nwrote {out / 'metrics.json'} and the plots in {out}")


@click.command("sampling")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/ablate-sampling"),
              show_default=True, help="Receives the teacher run, metrics.json and plot_*.png (distance against NFE).")
@click.option("--latents", type=click.Path(path_type=Path), default=None,
              help="Latent cache of `dinosae encode`: also compare the samplers on real latents.")
@preset_option("dit", "tiny", help="Size of the teacher DiT.")
@click.option("--steps", type=click.IntRange(4), default=600, show_default=True, help="Training steps of the teacher.")
@click.option("--nfe", "nfes", callback=comma_separated(int, "evaluation counts", minimum=1), default="1,2,4,8,16,32",
              show_default=True, help="Budgets of function evaluations of each solver.")
@click.option("--eval-samples", type=click.IntRange(2), default=2048, show_default=True,
              help="Size of the vMF held-out set (and of each sampler's sample).")
@click.option("--components", type=click.IntRange(1), default=8, show_default=True,
              help="Components of the vMF mixture.")
@click.option("--classes", type=click.IntRange(1), default=None,
              help="Classes of the vMF mixture, component k in class k % classes  [default: one per component].")
@click.option("--kappa", type=FiniteFloat(min=0, min_open=True), default=400.0, show_default=True,
              help="Concentration of each vMF component.")
@click.option("--students", callback=comma_separated(int, "student NFEs", minimum=1), default="1,2,4",
              show_default=True, help="Distill a student for each of these NFEs (1, 2 or 4).")
@click.option("--student-steps", type=click.IntRange(1), default=2000, show_default=True,
              help="Training steps of each student.")
@click.option("--couplings", type=click.IntRange(1), default=16_384, show_default=True,
              help="Teacher trajectories each student learns from.")
@click.option("--no-students", is_flag=True, help="Distill no student.")
@click.option("--seed", type=int, default=0, show_default=True)
@device_option
@json_option
@one_line_errors
def ablate_sampling(out, latents, preset, steps, nfes, eval_samples, components, classes, kappa, students,
                    student_steps, couplings, no_students, seed, device, as_json) -> None:
    """Solvers at each NFE, CFG, AutoGuidance by an earlier checkpoint, the post-hoc EMA sweep and distilled
    students, on one teacher: sliced W2 to held-out data of the class-labelled vMF mixture (and real latents)."""
    from dinosae.experiments.ablate_sampling import StudentSettings, TeacherSettings, format_table
    from dinosae.experiments.ablate_sampling import ablate_sampling as run

    settings = TeacherSettings(preset=preset, steps=steps, phema_every=max(1, steps // 12))
    distilled = None if no_students else StudentSettings(nfes=tuple(students), steps=student_steps,
                                                         couplings=couplings)
    result = run(out, latents=latents, seed=seed, settings=settings, students=distilled, nfes=nfes,
                 eval_samples=eval_samples, components=components, classes=classes, kappa=kappa, device=device)
    report(result, as_json, f"{format_table(result)}\nwrote {out / 'metrics.json'} and the plots in {out}")


@click.command("precision")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/ablate-precision"),
              show_default=True, help="Receives metrics.json.")
@click.option("--latents", type=click.Path(path_type=Path), default=None,
              help="Latent cache of `dinosae encode`: also compare on real latents.")
@preset_option("dit", "tiny", help="Size of the DiT.")
@click.option("--steps", type=click.IntRange(1), default=300, show_default=True)
@click.option("--seeds", default="0,1,2", show_default=True, callback=comma_separated(int, "integers"),
              help="Comma-separated seeds: runs per precision.")
@click.option("--batch-size", type=click.IntRange(1), default=128, show_default=True)
@click.option("--lr", type=FiniteFloat(min=0, min_open=True), default=1e-3, show_default=True)
@click.option("--eval-samples", type=click.IntRange(2), default=1024, show_default=True,
              help="Size of the vMF held-out set (and of each model's sample).")
@click.option("--sample-steps", type=click.IntRange(1), default=20, show_default=True,
              help="Euler steps of the sampler at each evaluation.")
@device_option
@json_option
@one_line_errors
def ablate_precision(out, latents, preset, steps, seeds, batch_size, lr, eval_samples, sample_steps, device,
                     as_json) -> None:
    """RFM training under bf16 autocast against float32: final losses, distances, non-finite steps."""
    from dinosae.experiments.ablate_precision import ablate_precision as run
    from dinosae.experiments.ablate_precision import format_table

    result = run(out, latents=latents, steps=steps, eval_every=max(1, steps // 3), batch_size=batch_size, lr=lr,
                 preset=preset, seeds=seeds, eval_samples=eval_samples, sample_steps=sample_steps,
                 device=device)
    report(result, as_json, f"{format_table(result)}\nwrote {out / 'metrics.json'}")
