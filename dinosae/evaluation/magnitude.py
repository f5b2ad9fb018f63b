"""``dinosae check magnitude``: the paper's claim that the decoder needs only the direction of a latent.

DINO-SAE's latent is a product of unit spheres: whatever magnitude the encoder's
tokens have is discarded by the projection onto the sphere. The check scales the
unit latents ``z`` by random factors ``s`` in ``[0.1, 10]`` and decodes them two
ways:

- spherical path, ``decode(normalize(s * z))``: the scaled tokens go through the
  projection as the encoder's output does (``sphere_ops.normalize``). The claim
  is that the PSNR does not move: the reconstruction changes by float rounding only.
- Euclidean path, ``decode(s * z)``: the scaled tokens are fed as they are, as a
  decoder of an unnormalized (Euclidean) latent would receive them. This
  decoder multiplies its input by sqrt(D) and was trained on unit tokens only, so
  magnitude here is an input it never saw: the PSNR drop measures how much the
  projection protects.

Factors are per token by default (each of the N tokens of an image gets its own
``s``, log-uniform in the range): the strictest version, since it also breaks the
relative magnitudes between tokens, which a per-image factor (``per="image"``)
keeps. The sweep of ``magnitude_sweep`` uses one factor for every token of every
image, to draw PSNR against the factor.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Sequence

import torch

import sphere_ops
from dinosae.data.images import DataError, FolderBatches, ImageDataset
from dinosae.metrics import psnr
from dinosae.models.autoencoder import SphericalAutoencoder

PER = ("token", "image")
PATHS = {
    "spherical_path": "decode(normalize(s * z)): scaled tokens projected back onto the spheres, as encoded",
    "euclidean_path": "decode(s * z): scaled tokens fed to the decoder without renormalization",
}


def _check_factors(factors: Sequence[float]) -> tuple[float, float]:
    low, high = (float(f) for f in factors)
    if not (math.isfinite(low) and math.isfinite(high) and 0.0 < low <= high):
        raise ValueError(f"scale factors must be a range 0 < low <= high, got {tuple(factors)}")
    return low, high


def _check_per(per: str) -> None:
    if per not in PER:
        raise ValueError(f"per must be one of {PER}, got {per!r}")


def random_scales(shape: tuple[int, int], factors: Sequence[float], per: str,
                  generator: torch.Generator) -> torch.Tensor:
    """Scale factors (B, N, 1) log-uniform in ``factors``, one per token or one per image (``per``).

    Example:
        >>> s = random_scales((4, 16), (0.1, 10), "token", torch.Generator().manual_seed(0))
        >>> s.shape, bool(((s >= 0.1) & (s <= 10)).all())
        (torch.Size([4, 16, 1]), True)
    """
    low, high = _check_factors(factors)
    _check_per(per)
    batch, tokens = shape
    draws = torch.rand(batch, tokens if per == "token" else 1, 1, generator=generator, dtype=torch.float64)
    scales = torch.exp(math.log(low) + draws * (math.log(high) - math.log(low)))
    return scales.expand(batch, tokens, 1).float()


def _psnr_of(model: SphericalAutoencoder, latents: torch.Tensor,
             images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The clamped reconstruction of ``latents`` and its per-image PSNR against ``images``."""
    reconstruction = model.decode(latents).float().clamp(0, 1)
    return reconstruction, psnr(reconstruction, images)


def _measure_batch(model: SphericalAutoencoder, z: torch.Tensor, images: torch.Tensor, scales: torch.Tensor,
                   sweep: Sequence[float]) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """Per-image PSNRs of one batch under every decoding (sweep entries by index), and the largest pixel changes."""
    plain, psnrs = _psnr_of(model, z, images)
    spherical, spherical_psnr = _psnr_of(model, sphere_ops.normalize(z * scales), images)
    euclidean, euclidean_psnr = _psnr_of(model, z * scales, images)
    per_image = {"psnr": psnrs, "psnr_scaled": spherical_psnr, "psnr_scaled_euclidean": euclidean_psnr}
    for i, factor in enumerate(sweep):
        per_image[f"spherical_{i}"] = _psnr_of(model, sphere_ops.normalize(z * factor), images)[1]
        per_image[f"euclidean_{i}"] = _psnr_of(model, z * factor, images)[1]
    changes = {"max_pixel_change": float((spherical - plain).abs().max()),
               "max_pixel_change_euclidean": float((euclidean - plain).abs().max())}
    return per_image, changes


@torch.no_grad()
def magnitude_check(model: SphericalAutoencoder, data_dir: str | os.PathLike, factors: Sequence[float] = (0.1, 10.0),
                    seed: int = 0, *, per: str = "token", sweep: Sequence[float] | None = None, batch_size: int = 32,
                    limit: int | None = None, num_workers: int = 0, progress: bool = False) -> dict:
    """Mean PSNR (dB) of the plain, the spherical and the Euclidean reconstruction of a folder.

    Keys: ``psnr`` (``decode(z)``, the model's reconstruction), ``psnr_scaled``
    and ``psnr_change`` (spherical path, see the module docstring),
    ``psnr_scaled_euclidean`` and ``psnr_change_euclidean`` (Euclidean path),
    ``max_pixel_change`` and ``max_pixel_change_euclidean`` (largest absolute
    pixel difference from ``decode(z)``), and, for each factor ``c`` of
    ``sweep``, the PSNR of both paths with every token scaled by ``c``
    (``sweep``: ``{"factor", "psnr_spherical", "psnr_euclidean"}``). Factors are
    drawn with ``seed`` on the CPU, so the result does not depend on the device.
    Computes in float32 (no autocast): bf16 rounding would hide the invariance
    under noise of its own.

    Example:
        >>> from dinosae.models.loading import load_model
        >>> model = load_model("runs/ae", kind="autoencoder")  # doctest: +SKIP
        >>> result = magnitude_check(model, "data/photos/heldout")  # doctest: +SKIP
        >>> abs(result["psnr_change"]) < 1e-3, result["psnr_change_euclidean"] < 0  # doctest: +SKIP
        (True, True)
    """
    factors = _check_factors(factors)
    _check_per(per)
    sweep = list(sweep) if sweep is not None else []
    for factor in sweep:
        _check_factors((factor, factor))
    dataset = ImageDataset(data_dir, model.config.image_size, dtype=torch.uint8)
    count = len(dataset) if limit is None else min(limit, len(dataset))
    batches = FolderBatches(dataset, range(count), batch_size, num_workers, progress, desc="magnitude")
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    sums: dict[str, float] = {}
    changes = {"max_pixel_change": 0.0, "max_pixel_change_euclidean": 0.0}
    images_seen = 0
    for batch in batches:
        images = batch.pixels(device)
        z = model.encode(images).float()
        scales = random_scales(z.shape[:2], factors, per, generator).to(device)
        per_image, batch_changes = _measure_batch(model, z, images, scales, sweep)
        for name, values in per_image.items():
            sums[name] = sums.get(name, 0.0) + float(values.sum())
        changes = {name: max(value, batch_changes[name]) for name, value in changes.items()}
        images_seen += images.shape[0]
    if images_seen == 0:
        raise DataError(f"no readable images in {str(data_dir)!r}")
    means = {name: total / images_seen for name, total in sums.items()}
    result: dict = {name: means[name] for name in ("psnr", "psnr_scaled", "psnr_scaled_euclidean")}
    result["psnr_change"] = result["psnr_scaled"] - result["psnr"]
    result["psnr_change_euclidean"] = result["psnr_scaled_euclidean"] - result["psnr"]
    result.update(changes, factors=list(factors), per=per, seed=seed, images=images_seen, skipped=len(batches.skipped), **PATHS)
    result["sweep"] = {"factor": sweep,
                       "psnr_spherical": [means[f"spherical_{i}"] for i in range(len(sweep))],
                       "psnr_euclidean": [means[f"euclidean_{i}"] for i in range(len(sweep))]}
    return result


def sweep_factors(factors: Sequence[float] = (0.1, 10.0), points: int = 9) -> list[float]:
    """``points`` factors evenly spaced in log scale over the range (1 included for a symmetric range).

    Example:
        >>> [round(f, 3) for f in sweep_factors((0.1, 10), 5)]
        [0.1, 0.316, 1.0, 3.162, 10.0]
    """
    low, high = _check_factors(factors)
    if points < 2:
        raise ValueError(f"a sweep needs at least 2 points, got {points}")
    return [float(f) for f in torch.logspace(math.log10(low), math.log10(high), points, dtype=torch.float64)]


def check_magnitude(ckpt: str | os.PathLike, data_dir: str | os.PathLike, out: str | os.PathLike | None, *,
                    factors: Sequence[float] = (0.1, 10.0), seed: int = 0, per: str = "token", points: int = 9,
                    teacher_weights: str | os.PathLike | None = None, device: str | None = None,
                    **options) -> dict:
    """Load ``ckpt`` and run ``magnitude_check`` with a sweep; with ``out``, write ``metrics.json`` and
    ``magnitude.png`` (PSNR of both paths against the scale factor).

    Example:
        >>> check_magnitude("runs/ae", "data/photos/heldout", "runs/ae/analysis/magnitude")  # doctest: +SKIP
    """
    from dinosae.evaluation.plots import line_plot
    from dinosae.io.atomic import write_json
    from dinosae.models.loading import load_model
    from dinosae.runtime import pick_device

    sweep = sweep_factors(factors, points)
    model = load_model(ckpt, kind="autoencoder", teacher_weights=teacher_weights, device=pick_device(device))
    result = magnitude_check(model, data_dir, factors, seed, per=per, sweep=sweep, **options)
    if out is not None:
        out = Path(out)
        log_factor = [math.log10(f) for f in sweep]
        line_plot(out / "magnitude.png",
                  # The spherical curve last, so that it is drawn over the unscaled line it coincides with.
                  {"unscaled: decode(z)": (log_factor, [result["psnr"]] * len(sweep)),
                   "euclidean: decode(c z)": (log_factor, result["sweep"]["psnr_euclidean"]),
                   "spherical: decode(normalize(c z))": (log_factor, result["sweep"]["psnr_spherical"])},
                  title="magnitude invariance", xlabel="log10 scale factor c", ylabel="PSNR (dB)")
        write_json(out / "metrics.json", result)
    return result
