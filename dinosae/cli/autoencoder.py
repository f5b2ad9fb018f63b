"""``dinosae train ae``, ``dinosae reconstruct`` and ``dinosae encode``."""

from __future__ import annotations

from pathlib import Path

import click

from dinosae.cli.options import (FINITE_FLOAT, ckpt_option, config_option, device_option, emit, folder_options,
                                 grad_accum_option, json_option, one_line_errors, override_option, preset_option,
                                 print_config_option, recipe_option, resume_option, teacher_weights_option,
                                 tf32_option)
from dinosae.config.recipes import stages


@click.command("ae")
@click.option("--data", required=True, type=click.Path(path_type=Path), help="ImageFolder tree or flat image folder.")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Run directory.")
@preset_option("ae", "B", resolved=True)
@click.option("--stage", type=click.IntRange(min(stages()), max(stages())), default=None,
              help="The stage; its rules are the recipe's ae-stageN.yaml (dinosae/config/recipes). [default: 1]")
@click.option("--steps", type=click.IntRange(1), default=None,
              help="Default: the training config's (resumed: the run's).")
@click.option("--batch-size", type=click.IntRange(1), default=None, help="Global batch size.")
@click.option("--image-size", type=click.IntRange(16), default=None, help="Multiple of 16.")
@click.option("--lr", type=FINITE_FLOAT, default=None, help="Default: the official rate of the stage.")
@click.option("--init", type=click.Path(path_type=Path), default=None,
              help="Previous stage's run or checkpoint, an exported model folder or an official release file.")
@resume_option
@override_option
@teacher_weights_option
@click.option("--align", type=click.Choice(["cosine", "mse"]), default=None, help="Alignment loss.")
@click.option("--stem", type=click.Choice(["hierarchical", "patch"]), default=None)
@click.option("--compile", "compile_", is_flag=True, default=None, help="torch.compile the training step.")
@click.option("--grad-checkpoint", is_flag=True, default=None,
              help="Recompute the decoder's stages and LPIPS in the backward pass: less memory, more time.")
@grad_accum_option
@tf32_option
@click.option("--num-workers", type=click.IntRange(0), default=None)
@click.option("--seed", type=int, default=None)
@recipe_option
@config_option
@print_config_option
@device_option
@one_line_errors
def train_ae(data, out, preset, stage, steps, batch_size, image_size, lr, init, resume, override, teacher_weights,
             align, stem, compile_, grad_checkpoint, grad_accum, tf32, num_workers, seed, recipe, config_file,
             print_config, device) -> None:
    """Train one stage of the autoencoder (1: stem + decoder; 2: + GAN; 3: decoder; 4: + latent noise)."""
    from dinosae.config import RunRequest
    from dinosae.train.autoencoder import plan_stage, train_autoencoder

    if image_size is not None and image_size % 16:
        raise click.BadParameter(f"{image_size} is not a multiple of 16", param_hint="--image-size")
    if (stage or 1) > 1 and init is None and resume != "latest" and not print_config:
        raise click.UsageError(f"stage {stage} starts from the previous stage: pass --init RUN (--resume auto may "
                               "start it too)")
    request = RunRequest(preset, recipe=recipe, stage=stage, file=config_file,
                         model={"image_size": image_size, "stem": stem},
                         train={"steps": steps, "batch_size": batch_size, "lr": lr, "align": align, "seed": seed,
                                "num_workers": num_workers, "compile": compile_, "grad_checkpoint": grad_checkpoint,
                                "grad_accum": grad_accum, "tf32": tf32})
    if print_config:
        click.echo(plan_stage(out, request, init, resume)[2].describe())
        return
    final = train_autoencoder(out, data, request=request, init=init, resume=resume, override=override,
                              teacher_weights=teacher_weights, device=device)
    click.echo(f"stage {stage or 1} done: {final}")


@click.command("reconstruct")
@ckpt_option()
@folder_options
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path))
@teacher_weights_option
@device_option
@json_option
@one_line_errors
def reconstruct(ckpt, data, out, batch_size, limit, teacher_weights, device, as_json) -> None:
    """Encode and decode a folder; write the images, a grid, and PSNR / SSIM / LPIPS."""
    from dinosae.evaluation.reconstruction import reconstruct_folder

    metrics = reconstruct_folder(ckpt, data, out, teacher_weights=teacher_weights, device=device,
                                 batch_size=batch_size, limit=limit)
    emit(metrics, as_json)


@click.command("encode")
@ckpt_option()
@click.option("--data", required=True, type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Latent cache directory.")
@click.option("--flip", is_flag=True, help="Also store the latents of horizontally flipped images.")
@click.option("--shard-size", type=click.IntRange(1), default=1024, show_default=True)
@click.option("--batch-size", type=click.IntRange(1), default=64, show_default=True)
@click.option("--num-workers", type=click.IntRange(0), default=4, show_default=True)
@teacher_weights_option
@device_option
@one_line_errors
def encode(ckpt, data, out, flip, shard_size, batch_size, num_workers, teacher_weights, device) -> None:
    """Encode an image folder into a resumable latent cache for `dinosae train dit`."""
    from dinosae.pipelines.encode import encode_folder

    cache = encode_folder(ckpt, data, out, flip=flip, shard_size=shard_size, batch_size=batch_size,
                          teacher_weights=teacher_weights, device=device, num_workers=num_workers)
    click.echo(f"{len(cache)} latents ({cache.tokens} x {cache.dim}) in {out}")
