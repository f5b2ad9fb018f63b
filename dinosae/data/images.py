"""Image folders as data: listing, decoding, batching for evaluation.

A dataset root is either an ImageFolder tree (one sub-folder per class) or a flat
folder of images (every image gets label 0). Images are resized (shorter side)
and center-cropped to a square, and returned as float tensors in [0, 1].

An image that cannot be decoded is not fatal: ``load_image`` returns ``None``,
``collate_images`` drops it and reports its path, and the training loop warns
once per file and counts them. A run over ImageNet should not die at hour ten
because of one truncated JPEG.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".ppm")


class DataError(ValueError):
    """A data folder cannot be used (missing, empty, or no readable images)."""


@dataclass(frozen=True)
class ImageRecord:
    path: Path
    label: int


def list_images(root: str | os.PathLike) -> tuple[list[ImageRecord], list[str]]:
    """Every image under ``root`` with its label, and the class names.

    Sub-folders of ``root`` that contain images are classes (sorted by name, as
    torchvision's ImageFolder numbers them); images directly in ``root`` form a
    flat, unlabeled folder. Mixing both is an error, since labels would be
    ambiguous.

    Example:
        >>> import tempfile, PIL.Image
        >>> root = tempfile.mkdtemp()
        >>> PIL.Image.new("RGB", (8, 8)).save(f"{root}/a.png")
        >>> records, classes = list_images(root)
        >>> (len(records), classes)
        (1, [])
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data folder {str(root)!r} does not exist or is not a directory")
    flat = sorted(p for p in root.iterdir() if _is_image(p))
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    nested = {d.name: sorted(p for p in d.rglob("*") if _is_image(p)) for d in class_dirs}
    nested = {name: files for name, files in nested.items() if files}
    if flat and nested:
        raise DataError(f"data folder {str(root)!r} mixes images and class sub-folders; "
                        "use one layout")
    if nested:
        classes = list(nested)
        records = [ImageRecord(p, i) for i, name in enumerate(classes) for p in nested[name]]
        return records, classes
    if not flat:
        raise DataError(f"data folder {str(root)!r} contains no images "
                        f"(looked for {', '.join(IMAGE_EXTENSIONS)})")
    return [ImageRecord(p, 0) for p in flat], []


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def load_image(path: str | os.PathLike, size: int) -> torch.Tensor | None:
    """Decode, resize the shorter side to ``size`` and center-crop: (3, size, size) in [0, 1].

    Returns ``None`` when the file cannot be decoded (truncated, corrupt, not an image).

    Example:
        >>> import tempfile, PIL.Image
        >>> path = tempfile.mktemp(suffix=".png")
        >>> PIL.Image.new("RGB", (40, 20), "red").save(path)
        >>> load_image(path, 16).shape
        torch.Size([3, 16, 16])
    """
    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
            width, height = image.size
            scale = size / min(width, height)
            resized = (max(size, round(width * scale)), max(size, round(height * scale)))
            image = image.resize(resized, Image.Resampling.BICUBIC, reducing_gap=None)
            left = (resized[0] - size) // 2
            top = (resized[1] - size) // 2
            image = image.crop((left, top, left + size, top + size))
            array = np.asarray(image, dtype=np.uint8)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None  # DecompressionBombError: an image of more pixels than PIL's limit (a zip bomb, or corrupt)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)


class ImageDataset(torch.utils.data.Dataset):
    """Images of a folder, indexed by ``(index, flip)`` so that augmentation is part of the order.

    The flip decision comes from the batch order (``ResumableBatches``), not from a
    worker's random state, which makes a resumed run see exactly the same pixels.

    Example:
        >>> import tempfile, PIL.Image
        >>> root = tempfile.mkdtemp()
        >>> PIL.Image.new("RGB", (8, 8), "blue").save(f"{root}/a.png")
        >>> dataset = ImageDataset(root, image_size=8)
        >>> image, label, path = dataset[(0, True)]
        >>> image.shape, label
        (torch.Size([3, 8, 8]), 0)
    """

    def __init__(self, root: str | os.PathLike, image_size: int) -> None:
        self.records, self.classes = list_images(root)
        self.root = Path(root)
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.records)

    def identity(self) -> dict[str, object]:
        """What the folder holds, to recognise it again: its path, image count and a hash of its
        listing (relative paths and labels), which stays the same when the folder is copied elsewhere."""
        digest = hashlib.sha256()
        for record in self.records:
            digest.update(f"{record.path.relative_to(self.root).as_posix()}\t{record.label}\n".encode())
        return {"path": str(self.root.resolve()), "count": len(self.records), "listing": digest.hexdigest()[:16]}

    def __getitem__(self, key: tuple[int, bool]) -> tuple[torch.Tensor | None, int, str]:
        index, flip = key
        record = self.records[index]
        image = load_image(record.path, self.image_size)
        if image is not None and flip:
            image = image.flip(-1)
        return image, record.label, str(record.path)


@dataclass
class ImageBatch:
    """Decoded images (B, 3, H, W), their labels and paths, and the paths of the ones that failed."""

    images: torch.Tensor
    labels: torch.Tensor
    skipped: list[str]
    paths: list[str]


def collate_images(items: Sequence[tuple[torch.Tensor | None, int, str]]) -> ImageBatch:
    """Stack decoded images, dropping (and naming) the ones that failed to decode."""
    good = [(image, label, path) for image, label, path in items if image is not None]
    skipped = [path for image, _, path in items if image is None]
    if not good:
        return ImageBatch(torch.empty(0), torch.empty(0, dtype=torch.long), skipped, [])
    images = torch.stack([image for image, _, _ in good])
    labels = torch.tensor([label for _, label, _ in good], dtype=torch.long)
    return ImageBatch(images, labels, skipped, [path for _, _, path in good])


class FolderBatches:
    """The images at ``indices`` (all by default), unflipped, in order and in batches, for evaluation.

    Unreadable images are skipped with a warning naming each and listed in
    ``skipped``; empty batches are not yielded.

    Example:
        >>> import tempfile, PIL.Image
        >>> root = tempfile.mkdtemp()
        >>> for i in range(3):
        ...     PIL.Image.new("RGB", (8, 8)).save(f"{root}/{i}.png")
        >>> batches = FolderBatches(ImageDataset(root, image_size=8), batch_size=2)
        >>> [batch.images.shape[0] for batch in batches], batches.skipped
        ([2, 1], [])
    """

    def __init__(self, dataset: ImageDataset, indices: Sequence[int] | None = None, batch_size: int = 32,
                 num_workers: int = 0, progress: bool = False, desc: str | None = None) -> None:
        keys = [(i, False) for i in (range(len(dataset)) if indices is None else indices)]
        self.batches = [keys[i:i + batch_size] for i in range(0, len(keys), batch_size)]
        self.dataset, self.num_workers = dataset, num_workers
        self.progress, self.desc = progress, desc
        self.skipped: list[str] = []

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[ImageBatch]:
        from tqdm.auto import tqdm

        loader = torch.utils.data.DataLoader(self.dataset, batch_sampler=self.batches, collate_fn=collate_images,
                                             num_workers=self.num_workers)
        for batch in tqdm(loader, unit="batch", disable=not self.progress, desc=self.desc):
            for path in batch.skipped:
                warnings.warn(f"skipping unreadable image {path}", stacklevel=2)
            self.skipped += batch.skipped
            if batch.images.shape[0]:
                yield batch
