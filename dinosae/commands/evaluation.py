"""``dinosae eval recon`` and ``dinosae eval fid``."""

from __future__ import annotations

from pathlib import Path

import click

from dinosae.commands.common import device_option, emit, json_option, one_line_errors


@click.command("recon")
@click.option("--ckpt", required=True, type=click.Path(path_type=Path), help="Autoencoder run or checkpoint.")
@click.option("--data", required=True, type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Also write metrics.json here.")
@click.option("--batch-size", type=click.IntRange(1), default=32, show_default=True)
@click.option("--limit", type=click.IntRange(1), default=None, help="Only the first N images.")
@click.option("--teacher-weights", type=click.Path(path_type=Path), default=None)
@device_option
@json_option
@one_line_errors
def eval_recon(ckpt, data, out, batch_size, limit, teacher_weights, device, as_json) -> None:
    """Reconstruction PSNR, SSIM and LPIPS of an autoencoder on a folder."""
    from dinosae.reconstruct import reconstruct_folder

    metrics = reconstruct_folder(ckpt, data, None, teacher_weights=teacher_weights, device=device,
                                 batch_size=batch_size, limit=limit)
    emit(metrics, as_json, out)


@click.command("fid")
@click.option("--real", required=True, type=click.Path(exists=True, path_type=Path),
              help="Folder, .npz of uint8 images (arr_0), or .npz of statistics (mu, sigma).")
@click.option("--fake", required=True, type=click.Path(exists=True, path_type=Path), help="Folder or .npz of images.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Also write metrics.json here.")
@click.option("--batch-size", type=click.IntRange(1), default=50, show_default=True)
@device_option
@json_option
@one_line_errors
def eval_fid(real, fake, out, batch_size, device, as_json) -> None:
    """FID, precision/recall and Inception Score (when its head is available) of generated images."""
    from dinosae.evaluate import generation_metrics
    from dinosae.train.distributed import pick_device

    emit(generation_metrics(real, fake, device=pick_device(device), batch_size=batch_size), as_json, out)
