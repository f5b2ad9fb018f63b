"""Image sets for the distribution metrics: a folder of image files, or a uint8 ``.npz``.

The ``.npz`` layout is the ADM / guided-diffusion evaluator's: ``arr_0`` of shape
(N, H, W, 3), dtype uint8. It is streamed from the archive batch by batch, so a 50k-image
reference set never has to fit in memory at once. ``dinosae sample`` writes beside its
``samples.npz`` a ``samples.json`` that says how they were drawn (:func:`read_samples_record`).
"""

from __future__ import annotations

import contextlib
import json
import os
import zipfile
from pathlib import Path
from typing import IO, Iterator

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".ppm")
NPZ_IMAGES_KEY = "arr_0"


class ImageSource:
    """The images of a folder (searched recursively, sorted by path) or of an ``.npz`` ``arr_0``.

    ``batches(batch_size)`` yields float32 (B, 3, H, W) tensors in [0, 1]. Images of a
    folder may differ in size: a batch ends early where the size changes, since only
    equal sizes stack. An unreadable file raises ValueError naming it (a metric over a
    silently shrunken set would be wrong).

    Example:
        >>> import tempfile
        >>> root = Path(tempfile.mkdtemp())
        >>> for i in range(3):
        ...     Image.new("RGB", (8, 6), (40 * i, 0, 0)).save(root / f"{i}.png")
        >>> source = ImageSource(root)
        >>> len(source), [tuple(b.shape) for b in source.batches(2)]
        (3, [(2, 3, 6, 8), (1, 3, 6, 8)])
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.files: list[Path] = []
        self.is_npz = self.path.is_file() and self.path.suffix == ".npz"
        self.image_shape: tuple[int, int] | None = None  # (H, W) when every image has it
        if self.is_npz:
            with _npz_images(self.path) as (shape, _):
                self._count = shape[0]
                self.image_shape = (shape[1], shape[2])
        elif self.path.is_dir():
            self.files = sorted(p for p in self.path.rglob("*")
                                if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."))
            if not self.files:
                raise ValueError(f"{self.path} contains no images (looked for {', '.join(IMAGE_EXTENSIONS)})")
            self._count = len(self.files)
        else:
            raise ValueError(f"{self.path} is neither a folder of images nor an .npz file")

    def __len__(self) -> int:
        return self._count

    def batches(self, batch_size: int = 50) -> Iterator[Tensor]:
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if self.is_npz:
            yield from self._npz_batches(batch_size)
        else:
            yield from self._folder_batches(batch_size)

    def _folder_batches(self, batch_size: int) -> Iterator[Tensor]:
        pending: list[np.ndarray] = []
        for file in self.files:
            image = read_image(file)
            if pending and (len(pending) == batch_size or image.shape != pending[0].shape):
                yield _to_tensor(np.stack(pending))
                pending = []
            pending.append(image)
        yield _to_tensor(np.stack(pending))

    def _npz_batches(self, batch_size: int) -> Iterator[Tensor]:
        with _npz_images(self.path) as (shape, stream):
            per_image = int(np.prod(shape[1:]))
            for start in range(0, shape[0], batch_size):
                count = min(batch_size, shape[0] - start)
                data = stream.read(count * per_image)
                if len(data) != count * per_image:
                    raise ValueError(f"{self.path}: {NPZ_IMAGES_KEY} ends early, at image {start}")
                yield _to_tensor(np.frombuffer(bytearray(data), dtype=np.uint8).reshape(count, *shape[1:]))


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Decode an image file to uint8 (H, W, 3) RGB; ValueError naming the file if it cannot be read.

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "a.png"
        >>> Image.new("L", (5, 4), 7).save(path)
        >>> read_image(path).shape, read_image(path)[0, 0].tolist()
        ((4, 5, 3), [7, 7, 7])
    """
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"), dtype=np.uint8)
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise ValueError(f"cannot read image {path}: {error}") from error


def open_npz(path: str | os.PathLike) -> np.lib.npyio.NpzFile:
    """``np.load`` of an ``.npz`` archive (arrays only, never pickles), with a ValueError naming the file
    when it is not one (numpy would report a text file as "pickled data").

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "a.npz"
        >>> _ = path.write_text("not numbers")
        >>> open_npz(path)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: ... is not an .npz archive (a zip of .npy arrays)
    """
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{str(path)!r} is not an .npz archive (a zip of .npy arrays)")
    return np.load(path, allow_pickle=False)


def _to_tensor(images: np.ndarray) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255)


@contextlib.contextmanager
def _npz_images(path: Path) -> Iterator[tuple[tuple[int, ...], IO[bytes]]]:
    """(shape, byte stream positioned at the pixels) of an npz's uint8 ``arr_0``, read lazily."""
    try:
        archive = zipfile.ZipFile(path)
        stream = archive.open(f"{NPZ_IMAGES_KEY}.npy")
    except (zipfile.BadZipFile, KeyError) as error:
        raise ValueError(f"{path} is not an .npz with an '{NPZ_IMAGES_KEY}' image array") from error
    with archive, stream:
        version = np.lib.format.read_magic(stream)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran_order, dtype = read_header(stream)
        if dtype != np.uint8 or len(shape) != 4 or shape[3] != 3 or fortran_order:
            raise ValueError(f"{path}: '{NPZ_IMAGES_KEY}' must be a C-ordered uint8 array (N, H, W, 3), "
                             f"got {dtype} {shape}")
        yield shape, stream


def read_samples_record(samples: str | os.PathLike) -> dict | None:
    """What ``dinosae sample`` recorded beside a ``samples.npz`` (its ``samples.json``: the protocol and what
    the solver did), or None where there is none.

    Example:
        >>> read_samples_record("/nonexistent/samples.npz") is None
        True
    """
    path = Path(samples).with_suffix(".json")
    return json.loads(path.read_text()) if path.is_file() else None
