"""Decoding an image file to a square uint8 tensor: decode, resize the shorter side, crop.

Files are decoded by torchvision (libjpeg-turbo, libpng, libwebp) into uint8
tensors, and by PIL for what torchvision cannot read (BMP, TIFF, PPM, ...). The
pixels stay uint8 until they reach the device (a quarter of float32's bytes
through the workers' shared memory and the host-to-device copy); see
``dinosae.data.images.ImageBatch.pixels``.

A file that cannot be decoded gives ``None``: truncated, corrupt, not an image,
or of more pixels than PIL's limit (a decompression bomb; checked from the
header before anything is decoded).
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms.v2.functional import InterpolationMode, resize

# What PIL raises for files it cannot read; DecompressionBombError for an image over its pixel limit.
_UNREADABLE = (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError)
# Decoded by PIL: torchvision's decoders read JPEG, PNG, WebP and GIF, and fail (slowly) on these.
_PIL_ONLY = (".bmp", ".tif", ".tiff", ".ppm")


@dataclass(frozen=True)
class Crop:
    """How an image becomes a ``size`` x ``size`` square: resize its shorter side to ``resize`` (default
    ``size``), then take the centre or, with ``random``, a crop placed by a draw (RAE's stage 1: resize
    384, random crop 256).

    Example:
        >>> Crop(16).offsets(40, 16, draw=None), Crop(16, resize=24, random=True).offsets(24, 24, draw=12)
        ((0, 12), (3, 1))
    """

    size: int
    resize: int | None = None
    random: bool = False

    def __post_init__(self) -> None:
        if self.resize is not None and self.resize < self.size:
            raise ValueError(f"resize {self.resize} is smaller than the crop {self.size}")

    @property
    def shorter_side(self) -> int:
        return self.size if self.resize is None else self.resize

    def offsets(self, width: int, height: int, draw: int | None) -> tuple[int, int]:
        """The crop's (top, left) in a resized image; ``draw`` (a non-negative int) places a random crop."""
        rows, cols = height - self.size + 1, width - self.size + 1
        if not self.random or draw is None:
            return (rows - 1) // 2, (cols - 1) // 2
        return draw % rows, (draw // rows) % cols


def read_image(path: str | os.PathLike) -> torch.Tensor | None:
    """The file's pixels as a uint8 tensor (3, H, W), or None when it cannot be decoded.

    Example:
        >>> import tempfile, PIL.Image
        >>> path = tempfile.mktemp(suffix=".jpg")
        >>> PIL.Image.new("RGB", (40, 20), "red").save(path)
        >>> image = read_image(path)
        >>> image.shape, image.dtype
        (torch.Size([3, 20, 40]), torch.uint8)
    """
    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError:
        return None
    return decode_file(data, str(path))


def decode_file(data: bytes, name: str) -> torch.Tensor | None:
    """An image file's bytes (``name`` gives its format by extension) as uint8 (3, H, W), or None when they
    cannot be decoded."""
    try:
        return decode_bytes(data, name.lower().endswith(_PIL_ONLY))
    except _UNREADABLE:
        return None


def decode_bytes(data: bytes, with_pil: bool = False) -> torch.Tensor:
    """Decode an encoded image to uint8 (3, H, W); raises one of PIL's errors when it cannot be decoded."""
    with Image.open(io.BytesIO(data)) as image:  # reads the header only: size and the bomb check
        if not with_pil:
            try:
                return decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
            except RuntimeError:
                pass  # a format or variant torchvision cannot read (CMYK, 16-bit, ...): PIL decodes it
        array = np.asarray(image.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


def crop_image(image: torch.Tensor, crop: Crop, draw: int | None = None) -> torch.Tensor:
    """Resize the shorter side of a uint8 (3, H, W) image (bicubic, antialiased) and crop it to a square.

    Example:
        >>> image = torch.randint(0, 256, (3, 20, 40), dtype=torch.uint8)
        >>> crop_image(image, Crop(16)).shape
        torch.Size([3, 16, 16])
    """
    height, width = image.shape[-2:]
    side = crop.shorter_side
    scale = side / min(width, height)
    size = (max(side, round(height * scale)), max(side, round(width * scale)))
    if size != (height, width):
        image = resize(image, list(size), interpolation=InterpolationMode.BICUBIC, antialias=True)
    top, left = crop.offsets(size[1], size[0], draw)
    return image[:, top:top + crop.size, left:left + crop.size]


def load_image(path: str | os.PathLike, crop: Crop | int, draw: int | None = None) -> torch.Tensor | None:
    """Decode, resize and crop: uint8 (3, size, size), or None when the file cannot be decoded.

    Example:
        >>> import tempfile, PIL.Image
        >>> path = tempfile.mktemp(suffix=".png")
        >>> PIL.Image.new("RGB", (40, 20), "red").save(path)
        >>> load_image(path, 16).shape
        torch.Size([3, 16, 16])
    """
    image = read_image(path)
    if image is None:
        return None
    return crop_image(image, crop if isinstance(crop, Crop) else Crop(crop), draw)
