"""``save_pretrained`` / ``from_pretrained`` on the networks, as diffusers' and timm's models have them.

The folder format and the Hub download live in :mod:`dinosae.io.pretrained` (files are the io layer's
business); these methods only forward to it. That is the one place where this layer reaches up into
``dinosae.io``, lazily and by an exception named in the import contract (pyproject.toml): users expect
the methods on the classes themselves.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar, TypeVar

M = TypeVar("M", bound="PretrainedMixin")


class PretrainedMixin:
    """Hub-style saving and loading for a model class that names its ``pretrained_kind``.

    Example:
        >>> import tempfile, torch
        >>> from dinosae.models.dit import DiT
        >>> from dinosae.config import DiTConfig
        >>> dit = DiT(DiTConfig(hidden_size=32, depth=1, num_heads=2, in_dim=8, grid_size=2, num_classes=3))
        >>> folder = dit.save_pretrained(tempfile.mkdtemp() + "/dit")
        >>> sorted(p.name for p in folder.iterdir())
        ['config.json', 'model.safetensors']
        >>> DiT.from_pretrained(folder).config == dit.config
        True
    """

    pretrained_kind: ClassVar[str]

    def save_pretrained(self, directory: str | os.PathLike, **options: Any) -> Path:
        """Write ``config.json`` and ``model.safetensors`` to ``directory`` (see
        :func:`dinosae.io.pretrained.save_pretrained` for ``options``); returns the folder."""
        from dinosae.io.pretrained import save_pretrained

        return save_pretrained(self, directory, **options)

    @classmethod
    def from_pretrained(cls: type[M], source: str | os.PathLike, **options: Any) -> M:
        """The model saved in a local folder, or in a Hugging Face Hub repo ``owner/name`` (see
        :func:`dinosae.io.pretrained.from_pretrained` for ``options``), in eval mode."""
        from dinosae.io.pretrained import from_pretrained

        return from_pretrained(source, kind=cls.pretrained_kind, **options)
