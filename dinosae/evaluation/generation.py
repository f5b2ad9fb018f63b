"""``dinosae eval fid``: distribution metrics between a real and a generated image set.

One pass of the FID Inception network per set gives the features for FID,
improved precision/recall and (when a classifier head is available) Inception
Score. A real set given as statistics only (``.npz`` with ``mu``/``sigma``)
yields FID alone.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from dinosae.metrics import FeatureStats, ImageSource, frechet_distance, inception_score, precision_recall
from dinosae.metrics.fid import compute_stats


def _is_stats(path: Path) -> bool:
    if path.suffix != ".npz" or not path.is_file():
        return False
    with np.load(path) as stored:
        return "mu" in stored.files and "sigma" in stored.files


@torch.inference_mode()
def image_features(source: str | os.PathLike, extractor: Callable[[torch.Tensor], torch.Tensor],
                   device: torch.device, batch_size: int = 50) -> torch.Tensor:
    """Features (N, F) of every image of a folder or ``.npz`` (float64, on the CPU)."""
    chunks = [extractor(batch.to(device)).double().cpu() for batch in ImageSource(source).batches(batch_size)]
    return torch.cat(chunks)


def generation_metrics(real: str | os.PathLike, fake: str | os.PathLike, *, device: str | torch.device = "cpu",
                       batch_size: int = 50, extractor: torch.nn.Module | None = None) -> dict[str, float]:
    """FID, precision, recall (k = 3) and, where the Inception head exists, IS of ``fake`` against ``real``.

    Example:
        >>> import tempfile
        >>> root = Path(tempfile.mkdtemp())
        >>> rng = np.random.default_rng(0)
        >>> np.savez(root / "a.npz", rng.integers(0, 256, (16, 8, 8, 3), dtype=np.uint8))
        >>> pooled = lambda x: torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3))], dim=1)
        >>> metrics = generation_metrics(root / "a.npz", root / "a.npz", extractor=pooled)
        >>> round(metrics["fid"], 6), metrics["precision"], metrics["recall"]
        (0.0, 1.0, 1.0)
    """
    device = torch.device(device)
    if extractor is None:
        from dinosae.metrics import InceptionFeatures

        extractor = InceptionFeatures(validate=False).to(device)
    real, fake = Path(real), Path(fake)
    fake_features = image_features(fake, extractor, device, batch_size)
    fake_stats = FeatureStats()
    fake_stats.update(fake_features)
    mu_fake, sigma_fake = fake_stats.compute()
    result: dict[str, float] = {"num_fake": float(fake_features.shape[0])}
    if _is_stats(real):
        mu_real, sigma_real = compute_stats(real)
    else:
        real_features = image_features(real, extractor, device, batch_size)
        real_stats = FeatureStats()
        real_stats.update(real_features)
        mu_real, sigma_real = real_stats.compute()
        pr = precision_recall(real_features, fake_features)
        result.update(precision=pr.precision, recall=pr.recall, num_real=float(real_features.shape[0]))
    result["fid"] = frechet_distance(mu_real, sigma_real, mu_fake, sigma_fake)
    if getattr(extractor, "has_logits", False):
        splits = min(10, fake_features.shape[0])
        result["inception_score"], result["inception_score_std"] = inception_score(
            extractor.logits(fake_features.float()), splits=splits)
    return result
