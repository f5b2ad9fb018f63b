"""``dinosae reconstruct`` and ``dinosae eval recon``: encode and decode a folder, measure the result."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torchvision.utils import save_image

from dinosae.data.images import FolderBatches, ImageDataset
from dinosae.metrics import LPIPS, psnr, ssim
from dinosae.models.autoencoder import SphericalAutoencoder
from dinosae.io.loading import load_autoencoder
from dinosae.io.atomic import write_json
from dinosae.io.images import save_pairs


@torch.no_grad()
def reconstruction_metrics(model: SphericalAutoencoder, data_dir: str | os.PathLike, *, out: Path | None = None,
                           batch_size: int = 32, lpips: LPIPS | None = None, limit: int | None = None,
                           progress: bool = True, num_workers: int = 2) -> dict[str, float]:
    """Mean PSNR (dB), SSIM and LPIPS of ``model`` over a folder (and write images under ``out``).

    Images are resized and center-cropped to the model's image size; metrics
    compare the reconstruction with that crop, clamped to [0, 1] as saved.
    """
    device = next(model.parameters()).device
    dataset = ImageDataset(data_dir, model.config.image_size)
    indices = range(min(limit, len(dataset))) if limit is not None else None
    batches = FolderBatches(dataset, indices, batch_size, num_workers, progress, desc="reconstruct")
    lpips = lpips if lpips is not None else LPIPS().to(device)
    totals = {"psnr": 0.0, "ssim": 0.0, "lpips": 0.0}
    if out is not None:
        (out / "reconstructions").mkdir(parents=True, exist_ok=True)
    count = 0
    for batch in batches:
        images = batch.images.to(device)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            reconstruction = model(images)
        reconstruction = reconstruction.float().clamp(0, 1)
        totals["psnr"] += float(psnr(reconstruction, images).sum())
        totals["ssim"] += float(ssim(reconstruction, images).sum())
        totals["lpips"] += float(lpips(reconstruction, images).sum())
        if out is not None:
            if count == 0:
                save_pairs(out / "grid.png", images, reconstruction)
            for offset, image in enumerate(reconstruction):
                save_image(image, out / "reconstructions" / f"{count + offset:06d}.png")
        count += images.shape[0]
    if count == 0:
        raise ValueError(f"no readable images in {str(data_dir)!r}")
    metrics = {name: value / count for name, value in totals.items()}
    metrics.update(images=count, skipped=len(batches.skipped))
    return metrics


def reconstruct_folder(ckpt: str | os.PathLike, data_dir: str | os.PathLike, out: str | os.PathLike | None, *,
                       teacher_weights: str | os.PathLike | None = None, device: str | None = None,
                       batch_size: int = 32, limit: int | None = None) -> dict[str, float]:
    """Load ``ckpt``, reconstruct ``data_dir``; with ``out``, write images, a grid and ``metrics.json``."""
    from dinosae.runtime import pick_device

    model = load_autoencoder(ckpt, teacher_weights=teacher_weights, device=pick_device(device))
    out_dir = None if out is None else Path(out)
    metrics = reconstruction_metrics(model, data_dir, out=out_dir, batch_size=batch_size, limit=limit)
    if out_dir is not None:
        write_json(out_dir / "metrics.json", metrics)
    return metrics
