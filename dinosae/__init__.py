"""DINO-SAE: a spherical autoencoder on a frozen DINOv3 ViT, and Riemannian flow matching on its latents.

The models by name, timm-style:

    >>> import dinosae
    >>> dinosae.list_models("ae")[:4]
    ['ae-tiny', 'ae-S', 'ae-B', 'ae-L']
    >>> [name for name in dinosae.list_models("ae") if name.startswith("ae-B-")]
    ['ae-B-dinov2', 'ae-B-siglip2', 'ae-B-mae', 'ae-B-clip']

``dinosae.create_model(name, **overrides)`` builds one, ``dinosae.load_model(path)``
reads a run directory, a checkpoint or an official release file. Importing the
package does not import torch (the command line starts fast); these two do.
"""

from __future__ import annotations

from typing import Any

from dinosae._version import __version__
from dinosae.config import list_models

__all__ = ["__version__", "create_model", "list_models", "load_model"]


def create_model(name: str, **overrides: Any) -> Any:
    """See :func:`dinosae.models.registry.create_model`."""
    from dinosae.models.registry import create_model as create

    return create(name, **overrides)


def load_model(path: Any, **options: Any) -> Any:
    """See :func:`dinosae.models.loading.load_model`."""
    from dinosae.models.loading import load_model as load

    return load(path, **options)
