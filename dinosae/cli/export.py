"""``dinosae export``: a run's model as a Hub-style folder that ``from_pretrained`` and every command load."""

from __future__ import annotations

from pathlib import Path

import click

from dinosae.cli.options import FiniteFloat, one_line_errors, teacher_weights_option


@click.command("export")
@click.argument("run", type=click.Path(path_type=Path))
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--ema/--no-ema", default=True, show_default=True, help="Export the EMA weights (else the raw ones).")
@click.option("--vit/--no-vit", "include_vit", default=True, show_default=True,
              help="Include the autoencoder's frozen ViT, so the folder loads alone. --no-vit: it needs the run's "
                   "teacher file to load (refused for a random ViT, which no file rebuilds).")
@teacher_weights_option
@click.option("--force", is_flag=True, help="Replace OUT if it is not empty.")
@one_line_errors
def export(run, out, ema, include_vit, teacher_weights, force) -> None:
    """Write the model of RUN (a run directory or checkpoint) to OUT: config.json, model.safetensors and a
    model card, README.md. Load it with from_pretrained, or pass it as --ckpt / --ae / --dit."""
    from dinosae.train.export import export_run

    folder = export_run(run, out, use_ema=ema, include_vit=include_vit, teacher_weights=teacher_weights, force=force)
    click.echo(f"exported {run} to {folder}")


@click.command("ema")
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--sigma-rel", type=FiniteFloat(min=0), required=True,
              help="The EMA's relative width (EDM2's sigma_rel; the run tracks 0.05 and 0.10 by default).")
@click.option("--step", type=click.IntRange(min=1), default=None,
              help="The training step to average up to: one with a snapshot (default: the last).")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="The model folder to write.")
@teacher_weights_option
@click.option("--force", is_flag=True, help="Replace OUT if it is not empty.")
@one_line_errors
def ema(run, sigma_rel, step, out, teacher_weights, force) -> None:
    """Write RUN's model with the post-hoc EMA of relative width SIGMA_REL, solved from the snapshots in
    RUN/phema/, to OUT (a folder as `dinosae export` writes it)."""
    from dinosae.train.export import export_run

    folder = export_run(run, out, sigma_rel=sigma_rel, phema_step=step, teacher_weights=teacher_weights,
                        force=force)
    click.echo(f"exported {run} with the post-hoc EMA of sigma_rel {sigma_rel:g} to {folder}")
