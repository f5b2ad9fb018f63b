"""``dinosae export``: a run's model as a Hub-style folder that ``from_pretrained`` and every command load."""

from __future__ import annotations

from pathlib import Path

import click

from dinosae.cli.options import one_line_errors, teacher_weights_option


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
