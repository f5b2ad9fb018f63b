"""Reading weight files: ``.safetensors``, or torch pickles loaded with ``weights_only``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch


def read_weights(path: str | os.PathLike, what: str = "weights file") -> Any:
    """The object stored in a weights file (usually a dict of tensors, possibly wrapped).

    A missing file is a ``FileNotFoundError``, an unreadable one a ``ValueError``
    naming it (as ``what``); pickles load with ``weights_only=True``, so a file cannot run code.

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "w.pt"
        >>> torch.save({"w": torch.ones(2)}, path)
        >>> read_weights(path)["w"]
        tensor([1., 1.])
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {str(path)!r} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(path)
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(f"cannot read {what} {str(path)!r}: {error}") from error
