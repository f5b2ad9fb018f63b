"""``dinosae eval fid`` and ``dinosae eval gen``: distribution metrics between real and generated images.

One pass of the FID Inception network per set gives the features for FID,
sFID (``eval gen``), improved precision/recall and (when a classifier head is
available) Inception Score. ``eval fid`` compares two image sets (or one with
stored ``mu``/``sigma``); ``eval gen`` runs the ImageNet protocol: samples of
``dinosae sample`` against an ADM reference batch, with the sampling protocol
beside the numbers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from dinosae.metrics import FeatureStats, ImageSource, frechet_distance, inception_score, precision_recall
from dinosae.metrics.fid import compute_stats
from dinosae.metrics.folder import open_npz, read_samples_record


def _is_stats(path: Path) -> bool:
    if path.suffix != ".npz" or not path.is_file():
        return False
    with open_npz(path) as stored:
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
    result["fid"] = frechet_distance(mu_real, sigma_real, mu_fake, sigma_fake, names=STATS_NAMES)
    if getattr(extractor, "has_logits", False):
        splits = min(10, fake_features.shape[0])
        result["inception_score"], result["inception_score_std"] = inception_score(
            extractor.logits(fake_features.float()), splits=splits)
    return result


# An ADM reference batch (VIRTUAL_imagenet256_labeled.npz) holds these; any subset that covers FID works.
POOL_STATS = ("mu", "sigma")
# How errors name the statistics compared: the reference's first, the samples' second.
STATS_NAMES = ("the reference's mu", "the reference's sigma", "the samples' mu", "the samples' sigma")
SPATIAL_STATS = ("mu_s", "sigma_s")


def evaluate_samples(samples: str | os.PathLike, reference: str | os.PathLike, *, num_samples: int | None = None,
                     extractor: torch.nn.Module | None = None, batch_size: int = 50,
                     device: str | torch.device = "cpu", progress: bool = False) -> dict:
    """FID, sFID, Inception Score, precision and recall of a ``samples.npz`` against an ADM-layout reference.

    ``reference`` is an ``.npz`` with pool3 statistics (``mu``, ``sigma``), spatial
    statistics (``mu_s``, ``sigma_s``) and/or reference images (``arr_0``), as the
    ADM evaluator's reference batches hold. Stored statistics are used as they
    are; missing ones are computed from the images. A metric that cannot be
    computed (sFID without spatial statistics or images, precision/recall
    without reference images, IS without the Inception classifier head) is
    ``None``, and ``unavailable`` says why. The protocol recorded beside the
    samples (``dinosae sample``'s ``samples.json``) is returned with the numbers.

    Example:
        >>> import tempfile
        >>> root = Path(tempfile.mkdtemp())
        >>> images = np.random.default_rng(0).integers(0, 256, (12, 8, 8, 3), dtype=np.uint8)
        >>> np.savez(root / "samples.npz", arr_0=images)
        >>> np.savez(root / "ref.npz", arr_0=images)
        >>> class Pooled(torch.nn.Module):
        ...     has_logits = False
        ...     def features(self, x):
        ...         return x.mean(dim=(2, 3)), x[:, :, ::4, ::4].flatten(1)
        >>> result = evaluate_samples(root / "samples.npz", root / "ref.npz", extractor=Pooled())
        >>> round(result["fid"], 6), round(result["sfid"], 6), result["inception_score"], result["unavailable"]
        (0.0, 0.0, None, {'inception_score': 'no Inception classifier head (logits_head=PATH)'})
    """
    samples, reference = Path(samples), Path(reference)
    if samples.suffix != ".npz" or not samples.is_file():
        raise ValueError(f"samples {str(samples)!r} must be an existing .npz with arr_0 (what `dinosae sample` "
                         "writes)")
    fake_source = ImageSource(samples)
    if num_samples is not None and len(fake_source) < num_samples:
        raise ValueError(f"{str(samples)!r} holds {len(fake_source)} samples, fewer than the {num_samples} asked for")
    stored = _reference_keys(reference)
    real_source = ImageSource(reference) if "arr_0" in stored else None
    if not (set(POOL_STATS) <= stored or real_source is not None):
        raise ValueError(f"reference {str(reference)!r} holds neither mu/sigma nor images (arr_0); an ADM "
                         "reference batch holds both")
    if real_source is not None and real_source.image_shape != fake_source.image_shape:
        (h, w), (rh, rw) = fake_source.image_shape, real_source.image_shape
        raise ValueError(f"samples are {h}x{w} px, the reference images {rh}x{rw}: sample at the reference's size")
    device = torch.device(device)
    if extractor is None:
        from dinosae.metrics import InceptionFeatures

        extractor = InceptionFeatures(validate=False).to(device)
    fake = _features(fake_source, extractor, device, batch_size, progress, "samples")
    real = _features(real_source, extractor, device, batch_size, progress, "reference") if real_source else None
    result: dict = {"samples": str(samples), "reference": str(reference), "num_samples": fake.count,
                    "num_reference_images": real.count if real is not None else None,
                    "protocol": read_samples_record(samples), "unavailable": {}}
    with open_npz(reference) as ref:
        pool = (ref["mu"], ref["sigma"]) if set(POOL_STATS) <= stored else real.pool.compute()
        spatial = (ref["mu_s"], ref["sigma_s"]) if set(SPATIAL_STATS) <= stored else (
            real.spatial.compute() if real is not None else None)
    result["fid"] = frechet_distance(*pool, *fake.pool.compute(), names=STATS_NAMES)
    result["sfid"] = (frechet_distance(*spatial, *fake.spatial.compute(), names=STATS_NAMES)
                      if spatial is not None else None)
    if spatial is None:
        result["unavailable"]["sfid"] = "the reference has neither mu_s/sigma_s nor images"
    if real is not None:
        pr = precision_recall(real.features, fake.features)
        result.update(precision=pr.precision, recall=pr.recall)
    else:
        result.update(precision=None, recall=None)
        result["unavailable"]["precision_recall"] = "the reference has no images (arr_0)"
    if getattr(extractor, "has_logits", False):
        result["inception_score"], result["inception_score_std"] = inception_score(
            extractor.logits(fake.features.float()), splits=min(10, fake.count))
    else:
        result["inception_score"] = None
        result["unavailable"]["inception_score"] = "no Inception classifier head (logits_head=PATH)"
    return result


@dataclass
class _Features:
    pool: FeatureStats
    spatial: FeatureStats
    features: torch.Tensor
    count: int


@torch.inference_mode()
def _features(source: ImageSource, extractor: torch.nn.Module, device: torch.device, batch_size: int,
              progress: bool, desc: str) -> _Features:
    """Pool3 and spatial statistics of an image set, and its pool3 features, in one pass."""
    from tqdm.auto import tqdm

    pool, spatial, chunks = FeatureStats(), FeatureStats(), []
    for batch in tqdm(source.batches(batch_size), desc=desc, unit="batch", disable=not progress):
        pooled, maps = extractor.features(batch.to(device))
        pool.update(pooled)
        spatial.update(maps)
        chunks.append(pooled.float().cpu())
    return _Features(pool, spatial, torch.cat(chunks), pool.count)


def _reference_keys(path: Path) -> set[str]:
    if path.suffix != ".npz" or not path.is_file():
        raise ValueError(f"reference {str(path)!r} must be an existing .npz (an ADM reference batch)")
    with open_npz(path) as stored:
        return set(stored.files)
