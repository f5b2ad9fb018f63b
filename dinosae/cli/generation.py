"""``dinosae train dit`` and ``dinosae sample``."""

from __future__ import annotations

from pathlib import Path

import click

from dinosae.cli.options import (FINITE_FLOAT, FiniteFloat, comma_separated, config_option, device_option,
                                 grad_accum_option, one_line_errors, override_option, preset_option,
                                 print_config_option, recipe_option, resume_option, teacher_weights_option,
                                 tf32_option)
from dinosae.config.training import PRECISIONS, SAMPLING_PRECISIONS
from dinosae.flow.names import MANIFOLDS, PREDICTIONS, SOLVERS, TIME_SAMPLERS

# --path, the older name of --manifold: Riemannian flow matching, or the Euclidean baseline.
PATHS = {"rfm": "sphere", "euclidean": "euclidean"}


def _floats(ctx: click.Context, param: click.Parameter, value: str | None):
    if value is None:
        return None
    try:
        parts = tuple(float(v) for v in value.split(","))
    except ValueError as error:
        raise click.BadParameter(f"expected LO,HI: {error}") from error
    if len(parts) != 2 or not 0 <= parts[0] < parts[1] <= 1:
        raise click.BadParameter("expected LO,HI with 0 <= LO < HI <= 1")
    return parts


@click.command("dit")
@click.option("--latents", type=click.Path(path_type=Path), help="Cache from `dinosae encode`.")
@click.option("--ae", type=click.Path(path_type=Path),
              help="Instead of --latents: an autoencoder run or checkpoint that encodes --data as the DiT trains.")
@click.option("--data", type=click.Path(path_type=Path), help="With --ae: the image folder to encode.")
@teacher_weights_option
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Run directory.")
@preset_option("dit", "XL", resolved=True)
@click.option("--manifold", type=click.Choice(MANIFOLDS), default=None,
              help="Flow on the product of spheres (Riemannian flow matching, the default) or in R^D (the baseline).")
@click.option("--path", "path_", type=click.Choice(list(PATHS)), default=None,
              help="The older name of --manifold: rfm is sphere, euclidean is euclidean.")
@click.option("--prediction", type=click.Choice(PREDICTIONS), default=None,
              help="What the network predicts: the velocity (default) or the endpoint x1.")
@click.option("--radius", type=FiniteFloat(min=0, min_open=True), default=None,
              help="The scale at which the network sees points and predicts velocities (default sqrt(D)).")
@click.option("--lightning", is_flag=True, help="LightningDiT blocks: RMSNorm, SwiGLU, 2-D RoPE, QK-norm.")
@click.option("--steps", type=click.IntRange(1), default=None,
              help="Default: the training config's (resumed: the run's).")
@click.option("--batch-size", type=click.IntRange(1), default=None, help="Global batch size.")
@click.option("--lr", type=FINITE_FLOAT, default=None)
@click.option("--time-sampler", type=click.Choice(TIME_SAMPLERS), default=None)
@click.option("--shift", type=FiniteFloat(min=0, min_open=True), default=None,
              help="Time shift (default: sqrt(N*D/4096)).")
@resume_option
@override_option
@click.option("--compile", "compile_", is_flag=True, default=None)
@click.option("--grad-checkpoint", is_flag=True, default=None,
              help="Recompute each DiT block in the backward pass: less memory, about a third more compute.")
@grad_accum_option
@tf32_option
@click.option("--num-workers", type=click.IntRange(0), default=None)
@click.option("--seed", type=int, default=None)
@click.option("--precision", type=click.Choice(PRECISIONS), default=None,
              help="Autocast of the forward pass (default auto: bf16 on CUDA, float32 on the CPU).")
@recipe_option
@config_option
@print_config_option
@device_option
@one_line_errors
def train_dit(latents, ae, data, teacher_weights, out, preset, manifold, path_, prediction, radius, lightning, steps,
              batch_size, lr, time_sampler, shift, resume, override, compile_, grad_checkpoint, grad_accum, tf32,
              num_workers, seed, precision, recipe, config_file, print_config, device) -> None:
    """Train a class-conditional DiT on a latent cache, or on images that an autoencoder encodes as it trains."""
    from dinosae.config import RunRequest
    from dinosae.train.dit import resolve_dit, train_dit as run

    if manifold is not None and path_ is not None and PATHS[path_] != manifold:
        raise click.UsageError(f"--path {path_} contradicts --manifold {manifold}")
    if (latents is None) == (ae is None) or (ae is None) != (data is None):
        raise click.UsageError("give --latents, or --ae with --data (encoded as the DiT trains)")
    request = RunRequest(preset, recipe=recipe, lightning=lightning, file=config_file,
                         model={"manifold": manifold or PATHS.get(path_), "prediction": prediction, "radius": radius},
                         train={"steps": steps, "batch_size": batch_size, "lr": lr, "time_sampler": time_sampler,
                                "shift": shift, "num_workers": num_workers, "seed": seed, "compile": compile_,
                                "precision": precision, "grad_checkpoint": grad_checkpoint, "grad_accum": grad_accum,
                                "tf32": tf32})
    sources = dict(latents=latents, ae=ae, data=data, teacher_weights=teacher_weights, device=device)
    if print_config:
        click.echo(resolve_dit(out, request, resume, **sources).describe())
        return
    final = run(out, request=request, resume=resume, override=override, **sources)
    click.echo(f"DiT training done: {final}")


@click.command("distill")
@click.option("--dit", "teacher", type=click.Path(path_type=Path), default=None,
              help="The teacher: a DiT run (RUN@STEP for a kept checkpoint), checkpoint or folder. A resume may "
                   "leave it out.")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="The student's run.")
@click.option("--nfe", type=click.Choice(["1", "2", "4"]), default="2", show_default=True,
              help="The student's Euler steps.")
@click.option("--steps", type=click.IntRange(1), default=20_000, show_default=True, help="Student training steps.")
@click.option("--batch-size", type=click.IntRange(1), default=256, show_default=True, help="Global batch (couplings).")
@click.option("--lr", type=FiniteFloat(min=0, min_open=True), default=1e-4, show_default=True)
@click.option("--couplings", type=click.IntRange(1), default=65_536, show_default=True,
              help="Teacher trajectories to learn from (drawn once, kept in OUT/couplings).")
@click.option("--teacher-steps", type=click.IntRange(1), default=64, show_default=True,
              help="Steps of the teacher's solver over the whole trajectory.")
@click.option("--teacher-method", type=click.Choice(SOLVERS), default="midpoint", show_default=True)
@click.option("--cfg", type=FiniteFloat(min=0), default=1.0, show_default=True,
              help="Guidance scale of the teacher's trajectories (the student then samples guided in one pass).")
@click.option("--ckpt-every", type=click.IntRange(1), default=1000, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@resume_option
@device_option
@one_line_errors
def distill(teacher, out, nfe, steps, batch_size, lr, couplings, teacher_steps, teacher_method, cfg, ckpt_every, seed,
            resume, device) -> None:
    """Distill a DiT into a student that samples in NFE steps (reflow on the teacher's ODE, exp-map jumps).
    The student is a DiT run: export it, or pass it to `dinosae sample --dit`, which takes its NFE."""
    from dinosae.config import DistillConfig
    from dinosae.train.distill import distill as run

    config = DistillConfig(nfe=int(nfe), steps=steps, batch_size=batch_size, lr=lr, couplings=couplings,
                           teacher_steps=teacher_steps, teacher_method=teacher_method, cfg=cfg,
                           ckpt_every=ckpt_every, seed=seed)
    path = run(out, teacher, config, resume=resume, device=device)
    click.echo(f"student of {nfe} step(s) in {path}")


@click.command("sample")
@click.option("--ae", "ae_ckpt", required=True, type=click.Path(path_type=Path), help="Autoencoder run or checkpoint.")
@click.option("--dit", "dit_ckpt", required=True, type=click.Path(path_type=Path), help="DiT run or checkpoint.")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--num", "--num-samples", "num", type=click.IntRange(1), default=64, show_default=True,
              help="How many samples. Under torchrun write --num-samples: its own parser takes --num for "
                   "--numa-binding.")
@click.option("--labels", "label_mode", type=click.Choice(["equal", "random"]), default="equal", show_default=True,
              help="An equal share per class (the ImageNet protocol), or labels drawn from (seed, sample).")
@click.option("--classes", callback=comma_separated(int, "class indices"), default=None,
              help="Comma-separated class indices (default: all).")
@click.option("--steps", type=click.IntRange(1), default=None,
              help="Solver steps (default: 50, or a distilled student's own NFE).")
@click.option("--method", type=click.Choice(SOLVERS), default=None,
              help="ODE solver: Euler (1 evaluation per step), Heun or midpoint (2). Default: euler.")
@click.option("--cfg", type=FiniteFloat(min=0), default=1.0, show_default=True, help="Guidance scale.")
@click.option("--guidance-interval", callback=_floats, default=None, help="LO,HI: guide only for t in [LO, HI].")
@click.option("--guide-dit", type=click.Path(path_type=Path), default=None,
              help="AutoGuidance: a weaker DiT of the same task (RUN@STEP for a kept checkpoint of a run, a run, "
                   "a checkpoint or a folder) whose velocity the main one's is extrapolated from.")
@click.option("--guidance", type=float, default=1.0, show_default=True,
              help="AutoGuidance weight W: v_guide + W (v_main - v_guide); needs --guide-dit.")
@click.option("--shift", type=FiniteFloat(min=0, min_open=True), default=None,
              help="Sampling time shift (default: the training shift).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--batch-size", type=click.IntRange(1), default=32, show_default=True)
@click.option("--shard-size", type=click.IntRange(1), default=None,
              help="Samples per shard, the unit of work and of resuming (default: 32 batches).")
@click.option("--decode-scale", type=FiniteFloat(min=0, min_open=True), default=None,
              help="Token norm at which to decode the samples (the HAE paper's s_vae, 14); default: the "
                   "autoencoder's own.")
@click.option("--precision", "sample_precision", type=click.Choice(SAMPLING_PRECISIONS), default="auto",
              show_default=True, help="The DiT's and decoder's arithmetic: auto is bf16 autocast on CUDA, float32 on "
                                      "the CPU; tf32 is float32 with TF32 matmuls.")
@click.option("--png/--no-png", default=True, show_default=True, help="Also write one PNG per sample.")
@teacher_weights_option
@device_option
@one_line_errors
def sample(ae_ckpt, dit_ckpt, out, num, label_mode, classes, steps, method, cfg, guidance_interval, guide_dit,
           guidance, shift, seed, batch_size, shard_size, decode_scale, sample_precision, png, teacher_weights,
           device) -> None:
    """Generate images: samples.npz for FID evaluators, a grid, PNGs. Under torchrun the ranks share the work
    and the result is the same as one process's; a rerun resumes."""
    from dinosae.pipelines.sample import sample_command

    paths = sample_command(ae_ckpt, dit_ckpt, out, num=num, labels=label_mode, classes=classes, seed=seed,
                           steps=steps, method=method, cfg=cfg, guidance_interval=guidance_interval, shift=shift,
                           decode_scale=decode_scale, shard_size=shard_size, batch_size=batch_size,
                           precision=sample_precision, guide_dit=guide_dit, guidance=guidance,
                           teacher_weights=teacher_weights, device=device, png=png)
    if paths:
        click.echo(f"{num} samples in {paths['npz']} (protocol {paths['protocol']}); grid {paths['grid']}")
