"""``dinosae reconstruct`` and ``dinosae eval recon``: encode and decode a folder, measure the result.

Under ``torchrun`` the ranks share the folder: it is cut into batches of
consecutive images, rank ``r`` takes the batches ``r, r + K, ...``, and the
per-image numbers are gathered and averaged in image order, so the metrics
are those of one process, whatever the number of ranks.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
import torch.distributed as dist
from torchvision.utils import save_image

from dinosae.data.images import DataError, FolderBatches, ImageDataset
from dinosae.data.index import folder_listing
from dinosae.io.atomic import write_json
from dinosae.io.images import save_pairs
from dinosae.models.loading import load_model
from dinosae.metrics import LPIPS, directional_variation, psnr, ssim
from dinosae.models.autoencoder import SphericalAutoencoder
from dinosae.runtime import DistEnv, init_distributed, shutdown

# Per image: PSNR, SSIM, LPIPS, and the row and column variation of the reconstruction and of the original.
_COLUMNS = ("psnr", "ssim", "lpips", "rows", "cols", "rows_original", "cols_original")


@torch.no_grad()
def reconstruction_metrics(model: SphericalAutoencoder, data_dir: str | os.PathLike, *, out: Path | None = None,
                           batch_size: int = 32, lpips: LPIPS | None = None, limit: int | None = None,
                           progress: bool = True, num_workers: int = 2, env: DistEnv | None = None) -> dict:
    """Mean PSNR (dB), SSIM, LPIPS and the stripe score of ``model`` over a folder (and write images under ``out``).

    Images are resized and center-cropped to the model's image size; metrics
    compare the reconstruction with that crop, clamped to [0, 1] as saved.
    ``stripe_score`` is (row variation / column variation) of the
    reconstructions over the same ratio of the originals
    (``dinosae.metrics.directional_variation``, summed over the folder):
    1 means no directional artifact; ``stripe_rows`` and ``stripe_cols`` are
    each direction's variation over the originals'.
    """
    device = next(model.parameters()).device
    listing = folder_listing(data_dir, None if env is None else env.on_main)
    dataset = ImageDataset(data_dir, model.config.image_size, listing=listing, dtype=torch.uint8)
    count = len(dataset) if limit is None else min(limit, len(dataset))
    rank, world = (0, 1) if env is None else (env.rank, env.world_size)
    blocks = [range(start, min(start + batch_size, count)) for start in range(0, count, batch_size)]
    mine = [i for block in blocks[rank::world] for i in block]
    batches = FolderBatches(dataset, mine, batch_size, num_workers, progress and rank == 0, desc="reconstruct",
                            pin_memory=device.type == "cuda")
    lpips = lpips if lpips is not None else LPIPS().to(device)
    if out is not None:
        (out / "reconstructions").mkdir(parents=True, exist_ok=True)
    rows: list[tuple[int, list[float]]] = []
    for batch in batches:
        images = batch.pixels(device)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            reconstruction = model(images)
        reconstruction = reconstruction.float().clamp(0, 1)
        values = torch.cat([psnr(reconstruction, images)[:, None], ssim(reconstruction, images)[:, None],
                            lpips(reconstruction, images).double()[:, None], directional_variation(reconstruction),
                            directional_variation(images)], dim=1).cpu()
        indices = batch.indices
        rows += zip(indices, values.tolist())
        if out is not None:
            if indices[0] == 0:
                save_pairs(out / "grid.png", images, reconstruction)
            for index, image in zip(indices, reconstruction):
                save_image(image, out / "reconstructions" / f"{index:06d}.png")
    rows, skipped = _gather(rows, batches.skipped, env)
    if not rows:
        raise DataError(f"no readable images in {str(data_dir)!r}")
    totals = dict(zip(_COLUMNS, (sum(column) for column in zip(*(values for _, values in rows)))))
    stripe_rows, stripe_cols = _ratio(totals["rows"], totals["rows_original"]), _ratio(totals["cols"],
                                                                                      totals["cols_original"])
    metrics = {name: totals[name] / len(rows) for name in ("psnr", "ssim", "lpips")}
    metrics.update(stripe_score=_ratio(stripe_rows, stripe_cols), stripe_rows=stripe_rows, stripe_cols=stripe_cols,
                   images=len(rows), skipped=len(skipped))
    return metrics


def _ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator``, NaN when the denominator is 0 (originals without variation in a
    direction, such as solid images, say nothing of stripes)."""
    return numerator / denominator if denominator != 0 else math.nan


def _gather(rows: list[tuple[int, list[float]]], skipped: list[str], env: DistEnv | None
            ) -> tuple[list[tuple[int, list[float]]], list[str]]:
    """Every rank's rows in image order, and every skipped path."""
    if env is not None and env.distributed:
        gathered: list = [None] * env.world_size
        dist.all_gather_object(gathered, (rows, skipped))
        rows = [row for part, _ in gathered for row in part]
        skipped = [path for _, part in gathered for path in part]
    return sorted(rows), skipped


def reconstruct_folder(ckpt: str | os.PathLike, data_dir: str | os.PathLike, out: str | os.PathLike | None, *,
                       teacher_weights: str | os.PathLike | None = None, device: str | None = None,
                       batch_size: int = 32, limit: int | None = None) -> dict:
    """Load ``ckpt``, reconstruct ``data_dir``; with ``out``, write images, a grid and ``metrics.json``."""
    env = init_distributed(device)
    try:
        model = load_model(ckpt, kind="autoencoder", teacher_weights=teacher_weights, device=env.device)
        out_dir = None if out is None else Path(out)
        metrics = reconstruction_metrics(model, data_dir, out=out_dir, batch_size=batch_size, limit=limit, env=env)
        if out_dir is not None and env.is_main:
            write_json(out_dir / "metrics.json", metrics)
        return metrics
    finally:
        shutdown(env)
