"""Images from a trained DiT and the autoencoder's decoder, each a function of (seed, sample index).

Sample ``i``'s starting noise, and its label when labels are drawn at random,
come from a generator seeded by ``(seed, i)`` alone, so a sample does not
depend on the batch it was drawn in or on the process that drew it: a run
split over ranks gives the images of one process, in the same order.

Written: ``OUT/images/*.png``, ``OUT/grid.png`` and ``OUT/samples.npz`` with
``arr_0`` a uint8 (N, H, W, 3) array (the layout of the ADM / guided-diffusion
evaluator, which ``dinosae eval gen`` and ``eval fid`` also read) and ``labels`` (N,).
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

import sphere_ops
from dinosae.config import DiTTrainConfig, from_dict, read_saved_dit, to_dict
from dinosae.flow import function_evaluations, sample
from dinosae.io.atomic import write_atomic
from dinosae.io.names import safe_name
from dinosae.models.autoencoder import SphericalAutoencoder
from dinosae.models.dit import DiT
from dinosae.runtime import sampling_precision

LABEL_MODES = ("equal", "random")
# Streams of one sample's randomness.
_NOISE, _LABEL = 0, 1


def sample_generator(seed: int, index: int, stream: int = _NOISE) -> torch.Generator:
    """A CPU generator that depends only on ``(seed, index, stream)``.

    Example:
        >>> a = torch.rand(2, generator=sample_generator(0, 5))
        >>> bool(torch.equal(a, torch.rand(2, generator=sample_generator(0, 5))))
        True
    """
    return torch.Generator().manual_seed(((seed * 1_000_003 + index) * 4 + stream) % (1 << 63))


def class_labels(num: int, num_classes: int, classes: Sequence[int] | None = None, mode: str = "equal",
                 seed: int = 0) -> torch.Tensor:
    """``num`` labels from ``classes`` (all classes when None).

    ``"equal"`` cycles through them, so each gets an equal share (the usual
    ImageNet protocol, 50 per class of 50,000); ``"random"`` draws sample ``i``'s
    label from ``(seed, i)``.

    Example:
        >>> class_labels(5, 3).tolist(), class_labels(3, 10, [7]).tolist()
        ([0, 1, 2, 0, 1], [7, 7, 7])
        >>> bool(torch.equal(class_labels(6, 4, mode="random")[:3], class_labels(3, 4, mode="random")))
        True
    """
    chosen = list(range(num_classes)) if not classes else list(classes)
    bad = [c for c in chosen if not 0 <= c < num_classes]
    if bad:
        raise ValueError(f"classes {bad} are outside [0, {num_classes})")
    if mode == "equal":
        picks = [i % len(chosen) for i in range(num)]
    elif mode == "random":
        picks = [int(torch.randint(len(chosen), (), generator=sample_generator(seed, i, _LABEL))) for i in range(num)]
    else:
        raise ValueError(f"label mode must be one of {LABEL_MODES}, got {mode!r}")
    return torch.tensor([chosen[p] for p in picks], dtype=torch.long)


def starting_noise(dit: DiT, indices: Sequence[int], seed: int) -> torch.Tensor:
    """The starting points (B, N, D) of samples ``indices``, from the DiT's manifold's prior; drawn on the CPU
    in float32, so they are the same on every device."""
    shape = (dit.config.num_tokens, dit.config.in_dim)
    return torch.stack([dit.manifold.prior(shape, generator=sample_generator(seed, int(index))) for index in indices])


@torch.no_grad()
def generate_latents(dit: DiT, labels: torch.Tensor, *, steps: int = 50, cfg: float = 1.0, method: str = "euler",
                     guidance_interval: tuple[float, float] | None = None, shift: float = 1.0,
                     generator: torch.Generator | None = None, noise: torch.Tensor | None = None) -> torch.Tensor:
    """Latents (B, N, D) with unit tokens for ``labels``, integrated on the DiT's manifold (a Euclidean DiT's
    samples normalized onto the spheres, which the decoder takes), from ``noise`` when given (else drawn
    from ``generator``)."""
    config = dit.config
    shape = (labels.shape[0], config.num_tokens, config.in_dim)
    x = sample(dit, dit.manifold, shape, labels, prediction=config.prediction, steps=steps, method=method,
               cfg_scale=cfg, guidance_interval=guidance_interval, shift=shift, generator=generator, noise=noise)
    return sphere_ops.normalize(x)


def sampling_shift(dit: DiT, train_config: dict, shift: float | None = None) -> float:
    """The time shift to sample with: ``shift``, else the one the DiT was trained with (its saved
    ``train_config``).

    Example:
        >>> from dinosae import create_model
        >>> dit = create_model("dit-tiny", in_dim=16, grid_size=4, num_classes=2)
        >>> sampling_shift(dit, {"shift": 3.0}), sampling_shift(dit, {}, 1.5)
        (3.0, 1.5)
    """
    if shift is not None:
        return shift
    saved = read_saved_dit(to_dict(dit.config), train_config)
    return from_dict(DiTTrainConfig, saved.train).resolved_shift(dit.config.num_tokens, dit.config.in_dim)


def sampling_record(dit: DiT, steps: int, method: str, shift: float) -> dict:
    """What ``samples.json`` records of the solver beside the protocol: the number of function evaluations
    (the model is called once per evaluation, on a doubled batch where guidance applies) and the shift used.

    Example:
        >>> from dinosae import create_model
        >>> sampling_record(create_model("dit-tiny", in_dim=16, grid_size=4, num_classes=2), 25, "heun", 1.0)
        {'nfe': 50, 'shift_used': 1.0}
    """
    return {"nfe": function_evaluations(method, steps, dit.config.prediction), "shift_used": shift}


def check_pair(ae: SphericalAutoencoder, dit: DiT) -> None:
    """A clear error when the DiT's latents are not the shape the autoencoder decodes."""
    if ae.latent_dim != dit.config.in_dim or ae.encoder.grid_size() ** 2 != dit.config.num_tokens:
        raise ValueError(f"the DiT generates ({dit.config.num_tokens}, {dit.config.in_dim}) latents, the "
                         f"autoencoder decodes ({ae.encoder.grid_size() ** 2}, {ae.latent_dim})")


@torch.no_grad()
def generate_images(ae: SphericalAutoencoder, dit: DiT, labels: torch.Tensor, *, indices: Sequence[int] | None = None,
                    batch_size: int = 32, seed: int = 0, progress: bool = True, precision: str = "auto",
                    **sampler: object) -> np.ndarray:
    """uint8 images (N, H, W, 3) for ``labels``: sample ``indices[j]`` (default ``j``) for ``labels[j]``, the DiT
    and the decoder run at ``precision`` (``dinosae.runtime.sampling_precision``; the ODE's state stays float32)."""
    check_pair(ae, dit)
    device = next(dit.parameters()).device
    indices = list(range(labels.shape[0])) if indices is None else list(indices)
    images = []
    for start in tqdm(range(0, labels.shape[0], batch_size), unit="batch", disable=not progress):
        batch = labels[start:start + batch_size].to(device)
        noise = starting_noise(dit, indices[start:start + batch_size], seed)
        with sampling_precision(device, precision):
            latents = generate_latents(dit, batch, noise=noise, **sampler)
            decoded = ae.decode(latents)
        if not bool(torch.isfinite(latents).all()) or not bool(torch.isfinite(decoded).all()):
            raise FloatingPointError(f"samples {indices[start]}..{indices[start + batch.shape[0] - 1]} are not "
                                     "finite (a DiT or autoencoder with NaN weights?); no image of them was written")
        pixels = (decoded.float().clamp(0, 1) * 255).round().to(torch.uint8)
        images.append(pixels.permute(0, 2, 3, 1).cpu().numpy())
    return np.concatenate(images)


def write_pngs(folder: str | os.PathLike, images: np.ndarray, labels: Sequence[int], indices: Sequence[int],
               class_names: Sequence[str] = ()) -> Path:
    """One PNG per image, named by its sample index and class (made safe: class names come from files)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for image, label, index in zip(images, labels, indices):
        name = safe_name(class_names[label]) if label < len(class_names) else str(label)
        Image.fromarray(image).save(folder / f"{index:06d}_{name}.png")
    return folder


def save_grid(path: str | os.PathLike, images: np.ndarray) -> Path:
    """The first 64 images as an 8-wide grid."""
    tensor = torch.from_numpy(np.ascontiguousarray(images[:64])).permute(0, 3, 1, 2).float() / 255
    return write_atomic(path, lambda tmp: save_image(make_grid(tensor, nrow=8, padding=2, pad_value=1.0), tmp,
                                                     format="png"))


def write_samples(out: str | os.PathLike, images: np.ndarray, labels: torch.Tensor,
                  class_names: Sequence[str] = ()) -> dict[str, Path]:
    """PNGs, a grid, and ``samples.npz``; returns their paths."""
    out = Path(out)
    folder = write_pngs(out / "images", images, labels.tolist(), range(len(images)), class_names)
    grid = save_grid(out / "grid.png", images)
    npz = write_atomic(out / "samples.npz", lambda tmp: np.savez(tmp, arr_0=images, labels=labels.numpy()))
    return {"images": folder, "grid": grid, "npz": npz}
