"""``create_model``: every network of the toolkit by name, timm-style."""

from __future__ import annotations

import os
from typing import Any

from torch import nn

from dinosae.config import model_config
from dinosae.models.autoencoder import SphericalAutoencoder
from dinosae.models.dit import DiT


def create_model(name: str, *, teacher_weights: str | os.PathLike | None = None, **overrides: Any) -> nn.Module:
    """A new model of a named size (``dinosae.list_models()``) with config fields overridden.

    Autoencoders (``ae-*``) take ``teacher_weights``, the DINOv3 weights file of
    their frozen ViT; without it the ViT is random (with a warning). Nested
    config fields take dicts (``decoder={"depths": (1, 1, 1, 1, 1)}``).

    Example:
        >>> import sphere_ops, torch
        >>> dit = create_model("dit-tiny", in_dim=16, grid_size=4, num_classes=10)
        >>> dit(sphere_ops.random_uniform((2, 16), 16), torch.rand(2), torch.tensor([0, 3])).shape
        torch.Size([2, 16, 16])
    """
    kind, config = model_config(name, **overrides)
    if kind == "ae":
        return SphericalAutoencoder(config, teacher_weights)
    if teacher_weights is not None:
        raise ValueError(f"{name} has no teacher; teacher_weights is for autoencoders")
    return DiT(config)
