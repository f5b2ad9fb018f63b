"""``dinosae sample``: images from a trained DiT and the autoencoder's decoder.

Writes ``OUT/images/*.png``, ``OUT/grid.png`` and ``OUT/samples.npz`` with
``arr_0`` a uint8 (N, H, W, 3) array (the layout of the ADM / guided-diffusion
FID evaluator, which ``dinosae eval fid`` also reads) and ``labels`` (N,).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torchvision.utils import make_grid, save_image
from tqdm.auto import tqdm

from dinosae.models.autoencoder import SphericalAutoencoder
from dinosae.models.dit import DiT
from dinosae.generation.sampling import sample_euclidean, sample_sphere


def class_labels(num: int, num_classes: int, classes: Sequence[int] | None = None) -> torch.Tensor:
    """``num`` labels cycling through ``classes`` (all classes when None), so each gets its share.

    Example:
        >>> class_labels(5, 3).tolist(), class_labels(3, 10, [7]).tolist()
        ([0, 1, 2, 0, 1], [7, 7, 7])
    """
    chosen = list(range(num_classes)) if not classes else list(classes)
    bad = [c for c in chosen if not 0 <= c < num_classes]
    if bad:
        raise ValueError(f"classes {bad} are outside [0, {num_classes})")
    return torch.tensor([chosen[i % len(chosen)] for i in range(num)], dtype=torch.long)


@torch.no_grad()
def generate_latents(dit: DiT, labels: torch.Tensor, *, steps: int = 50, cfg: float = 1.0, method: str = "euler",
                     guidance_interval: tuple[float, float] | None = None, shift: float = 1.0,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """Latents (B, N, D) for ``labels`` with the sampler that matches the DiT's training path."""
    config = dit.config
    shape = (labels.shape[0], config.num_tokens, config.in_dim)
    sampler = sample_sphere if config.manifold == "sphere" else sample_euclidean
    return sampler(dit, shape, labels, steps=steps, method=method, cfg_scale=cfg,
                   guidance_interval=guidance_interval, shift=shift, generator=generator)


@torch.no_grad()
def generate_images(ae: SphericalAutoencoder, dit: DiT, labels: torch.Tensor, *, batch_size: int = 32, seed: int = 0,
                    progress: bool = True, **sampler: object) -> np.ndarray:
    """uint8 images (N, H, W, 3) for ``labels``; the same seed and batch size give the same images."""
    device = next(dit.parameters()).device
    if ae.latent_dim != dit.config.in_dim or ae.encoder.grid_size() ** 2 != dit.config.num_tokens:
        raise ValueError(f"the DiT generates ({dit.config.num_tokens}, {dit.config.in_dim}) latents, the "
                         f"autoencoder decodes ({ae.encoder.grid_size() ** 2}, {ae.latent_dim})")
    generator = torch.Generator(device=device).manual_seed(seed)
    images = []
    for start in tqdm(range(0, labels.shape[0], batch_size), unit="batch", disable=not progress):
        batch = labels[start:start + batch_size].to(device)
        latents = generate_latents(dit, batch, generator=generator, **sampler)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            decoded = ae.decode(latents)
        pixels = (decoded.float().clamp(0, 1) * 255).round().to(torch.uint8)
        images.append(pixels.permute(0, 2, 3, 1).cpu().numpy())
    return np.concatenate(images)


def write_samples(out: str | os.PathLike, images: np.ndarray, labels: torch.Tensor,
                  class_names: Sequence[str] = ()) -> dict[str, Path]:
    """PNGs, a grid, and ``samples.npz``; returns their paths."""
    out = Path(out)
    folder = out / "images"
    folder.mkdir(parents=True, exist_ok=True)
    for i, (image, label) in enumerate(zip(images, labels.tolist())):
        name = class_names[label] if label < len(class_names) else str(label)
        Image.fromarray(image).save(folder / f"{i:06d}_{name}.png")
    tensor = torch.from_numpy(images[:64]).permute(0, 3, 1, 2).float() / 255
    save_image(make_grid(tensor, nrow=8, padding=2, pad_value=1.0), out / "grid.png")
    npz = out / "samples.npz"
    tmp = out / "samples.tmp.npz"
    np.savez(tmp, arr_0=images, labels=labels.numpy())
    tmp.replace(npz)
    return {"images": folder, "grid": out / "grid.png", "npz": npz}
