"""Where ``dinosae train dit`` gets its latents: a latent cache, or an image folder encoded batch by batch.

Both give the trainer the same things: a dataset indexed by ``(index, flip)``
for the resumable batch order, its collate function, the latent grid, width and
classes, an identity to recognise the data again, and a function that turns a
loaded batch into unit latents and labels on the device. Encoding online (as
RAE trains its DiT) needs no terabyte cache; it rounds each latent to bfloat16
as a cache stores it, so that a run reads the same numbers either way.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any, Callable

import torch

import sphere_ops
from dinosae.data.images import ImageBatch, ImageDataset, collate_images
from dinosae.data.index import folder_listing
from dinosae.io.checkpoint import resolve_checkpoint
from dinosae.data.latents import LatentCache, StoredLatents, collate_latents
from dinosae.models.loading import load_model
from dinosae.runtime import DistEnv


def latents_to_device(batch: tuple[torch.Tensor, torch.Tensor], device: torch.device
                      ) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """A batch of stored latents (any float dtype) and labels as unit float32 latents and labels on ``device``,
    and the paths of images skipped (none: a cache holds only readable ones).

    Example:
        >>> z = torch.randn(2, 4, 8).bfloat16()
        >>> unit, labels, skipped = latents_to_device((z, torch.tensor([0, 1])), torch.device("cpu"))
        >>> unit.dtype, bool(torch.allclose(unit.norm(dim=-1), torch.ones(2, 4))), skipped
        (torch.float32, True, [])
    """
    latents, labels = (t.to(device, non_blocking=True) for t in batch)
    return sphere_ops.normalize(latents.float()), labels, []


class CachedLatents:
    """The latents of a cache (``dinosae encode``): read as bfloat16, renormalized on the device."""

    def __init__(self, cache: LatentCache) -> None:
        self.cache = cache
        self.dataset = StoredLatents(cache)
        self.collate: Callable = collate_latents
        self.tokens, self.dim, self.classes = cache.tokens, cache.dim, cache.classes
        self.has_flip = cache.has_flip

    @property
    def num_classes(self) -> int:
        return self.cache.num_classes

    def identity(self) -> dict[str, Any]:
        return self.cache.identity()

    def describe(self) -> dict[str, Any]:
        """What the run records of its latents."""
        return {"latents": str(self.cache.directory), "latent_meta": self.cache.meta}

    to_device = staticmethod(latents_to_device)

    @staticmethod
    def count_items(batch: tuple[torch.Tensor, torch.Tensor]) -> int:
        """How many latents a loaded batch holds."""
        return batch[0].shape[0]


class OnlineLatents:
    """The latents of an image folder, encoded batch by batch on the device by a frozen autoencoder.

    Flips mirror the image before encoding, as ``dinosae encode --flip`` does.
    """

    def __init__(self, ae: str | os.PathLike, data_dir: str | os.PathLike, env: DistEnv,
                 teacher_weights: str | os.PathLike | None = None) -> None:
        self.ae_checkpoint = str(resolve_checkpoint(ae).resolve())
        self.model = load_model(ae, kind="autoencoder", teacher_weights=teacher_weights, device=env.device).eval()
        self.model.requires_grad_(False)
        self.dataset = ImageDataset(data_dir, self.model.config.image_size, dtype=torch.uint8,
                                    listing=folder_listing(data_dir, env.on_main))
        self.collate: Callable = collate_images
        self.tokens, self.dim = self.model.encoder.grid_size() ** 2, self.model.latent_dim
        self.classes = self.dataset.classes
        self.has_flip = True

    @property
    def num_classes(self) -> int:
        return max(1, len(self.classes))

    def identity(self) -> dict[str, Any]:
        """The folder's identity, with the autoencoder in its listing hash: either changing is another data set."""
        identity = self.dataset.identity()
        digest = hashlib.sha256(f"{identity['listing']}\t{self.ae_checkpoint}".encode()).hexdigest()[:16]
        return {**identity, "listing": digest}

    @staticmethod
    def count_items(batch: ImageBatch) -> int:
        """How many readable images a loaded batch holds."""
        return batch.images.shape[0]

    def describe(self) -> dict[str, Any]:
        return {"latents": None, "images": str(self.dataset.root), "ae_checkpoint": self.ae_checkpoint,
                "latent_meta": {"tokens": self.tokens, "dim": self.dim, "classes": self.classes,
                                "image_size": self.dataset.image_size, "online": True}}

    @torch.no_grad()
    def to_device(self, batch: ImageBatch, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        """Unit latents (float32) of the batch's readable images, their labels, and the paths skipped."""
        if batch.images.shape[0] == 0:
            empty = torch.empty(0, self.tokens, self.dim, device=device)
            return empty, batch.labels.to(device), batch.skipped
        images = batch.pixels(device)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            latents = self.model.encode(images)
        return (sphere_ops.normalize(latents.to(torch.bfloat16).float()), batch.labels.to(device, non_blocking=True),
                batch.skipped)
