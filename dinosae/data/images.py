"""Image folders as data: datasets indexed by ``(index, flip[, crop draw])``, batches, evaluation order.

A dataset root is an ImageFolder tree, a flat folder of images
(``dinosae.data.listing``) or a folder of tar shards (``dinosae.data.tar_shards``);
a folder's listing comes from an index file that every command reuses
(``dinosae.data.index``). Workers decode to uint8
(``dinosae.data.decode``); ``ImageBatch.pixels`` converts to float in [0, 1]
on the device.

An image that cannot be decoded is not fatal: the dataset returns ``None`` for
it, ``collate_images`` drops it and reports its path, and the training loop
warns once per file and counts them. A run over ImageNet should not die at
hour ten because of one truncated JPEG.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator, NamedTuple, Sequence

import torch

from dinosae.data.decode import Crop, crop_image, decode_file
from dinosae.data.index import folder_listing
from dinosae.data.listing import DataError, FolderListing
from dinosae.data.tar_shards import TarListing

__all__ = ["DataError", "FolderBatches", "ImageBatch", "ImageDataset", "ImageItem", "collate_images"]


class ImageItem(NamedTuple):
    """One dataset item: the image (None when it cannot be decoded), its label, path and index."""

    image: torch.Tensor | None
    label: int
    path: str
    index: int


# Folder names that hold a data set's splits rather than its classes.
SPLIT_NAMES = frozenset({"train", "training", "val", "valid", "validation", "test", "testing", "heldout", "eval"})


def warn_if_splits(root: Path, classes: list[str]) -> None:
    """Warn when the class folders of ``root`` look like splits (``train/``, ``heldout/``): the root of a split
    data set was passed where one split was meant, and its splits would train as classes.

    Example:
        >>> import warnings
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     warn_if_splits(Path("data"), ["heldout", "train"])
        >>> str(caught[0].message).split(":")[0]
        "the class folders of 'data' look like splits (heldout, train)"
    """
    splits = [name for name in classes if name.lower() in SPLIT_NAMES]
    if len(splits) >= 2 or (splits and len(splits) == len(classes)):
        warnings.warn(f"the class folders of {str(root)!r} look like splits ({', '.join(splits)}): they would be "
                      f"trained on as classes; pass one split's folder ({str(root / splits[0])!r})", stacklevel=3)


class ImageDataset(torch.utils.data.Dataset):
    """Images of a folder, indexed by ``(index, flip)`` or ``(index, flip, draw)`` so that augmentation is part
    of the order.

    The flip decision and the random crop's ``draw`` come from the batch order
    (``ResumableBatches``), not from a worker's random state, which makes a
    resumed run see exactly the same pixels. Items are float32 in [0, 1], or
    uint8 with ``dtype=torch.uint8`` (what loaders use: the device converts).

    Example:
        >>> import tempfile, PIL.Image
        >>> root = tempfile.mkdtemp()
        >>> PIL.Image.new("RGB", (8, 8), "blue").save(f"{root}/a.png")
        >>> dataset = ImageDataset(root, image_size=8)
        >>> image, label, path, index = dataset[(0, True)]
        >>> image.shape, label
        (torch.Size([3, 8, 8]), 0)
    """

    def __init__(self, root: str | os.PathLike, image_size: int, *, listing: FolderListing | TarListing | None = None,
                 crop: Crop | None = None, dtype: torch.dtype = torch.float32) -> None:
        if dtype not in (torch.float32, torch.uint8):
            raise ValueError(f"images are float32 or uint8, not {dtype}")
        self.root = Path(root)
        self.listing = listing if listing is not None else folder_listing(root)
        self.classes = self.listing.classes
        warn_if_splits(self.root, self.classes)
        self.crop = crop if crop is not None else Crop(image_size)
        self.image_size = image_size
        self.dtype = dtype

    @property
    def image_size(self) -> int:
        return self.crop.size

    @image_size.setter
    def image_size(self, size: int) -> None:
        self.crop = replace(self.crop, size=size)

    @property
    def labels(self) -> list[int]:
        return self.listing.labels.tolist()

    def __len__(self) -> int:
        return len(self.listing)

    def identity(self) -> dict[str, object]:
        """What the folder holds, to recognise it again: its path, image count and a hash of its
        listing (relative paths and labels), which stays the same when the folder is copied elsewhere."""
        digest = hashlib.sha256()
        listing = self.listing
        for index, label in enumerate(listing.labels.tolist()):
            # The name's own bytes (a name that is not UTF-8 is hashed as it is, not refused).
            digest.update(os.fsencode(f"{listing.relative_path(index)}\t{label}\n"))
        return {"path": str(self.root.resolve()), "count": len(listing), "listing": digest.hexdigest()[:16]}

    def __getitem__(self, key: tuple[int, bool] | tuple[int, bool, int]) -> ImageItem:
        index, flip, *draw = key
        path = self.listing.path(index)
        try:
            image = decode_file(self.listing.read(index), path)
        except OSError:
            image = None  # unreadable like a corrupt file: skipped and named, never fatal
        if image is not None:
            image = crop_image(image, self.crop, draw[0] if draw else None)
            if flip:
                image = image.flip(-1)
            if self.dtype == torch.float32:
                image = image.float().div_(255.0)
        return ImageItem(image, int(self.listing.labels[index]), path, index)


@dataclass
class ImageBatch:
    """Decoded images (B, 3, H, W), their labels and paths, the paths of the ones that failed, and the
    dataset indices of the decoded ones.

    ``images`` are uint8 or float32 in [0, 1]; :meth:`pixels` gives float32 in [0, 1] on a device.
    """

    images: torch.Tensor
    labels: torch.Tensor
    skipped: list[str]
    paths: list[str]
    indices: list[int] = field(default_factory=list)

    def pixels(self, device: torch.device | str) -> torch.Tensor:
        """The images as float32 in [0, 1] on ``device``: uint8 crosses to the device, then converts.

        Example:
            >>> batch = ImageBatch(torch.tensor([[[[0, 255]]]], dtype=torch.uint8), torch.zeros(1), [], ["a"])
            >>> batch.pixels("cpu").tolist()
            [[[[0.0, 1.0]]]]
        """
        images = self.images.to(device, non_blocking=True)
        return images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()

    def pin_memory(self) -> ImageBatch:
        """A copy in page-locked memory, so that ``non_blocking`` copies to the GPU are asynchronous
        (DataLoader's ``pin_memory`` calls this)."""
        return replace(self, images=self.images.pin_memory(), labels=self.labels.pin_memory())


def collate_images(items: Sequence[ImageItem]) -> ImageBatch:
    """Stack decoded images, dropping (and naming) the ones that failed to decode."""
    good = [item for item in items if item.image is not None]
    skipped = [item.path for item in items if item.image is None]
    if not good:
        return ImageBatch(torch.empty(0, dtype=torch.uint8), torch.empty(0, dtype=torch.long), skipped, [])
    # default_collate stacks straight into shared memory inside a worker, sparing the queue a copy of the batch.
    return ImageBatch(torch.utils.data.default_collate([item.image for item in good]),
                      torch.tensor([item.label for item in good], dtype=torch.long), skipped,
                      [item.path for item in good], [item.index for item in good])


class FolderBatches:
    """The images at ``indices`` (all by default), unflipped, in order and in batches, for evaluation.

    With ``groups`` (sequences of indices) instead, each group is cut into
    batches of its own, so that no batch spans two groups (the shards of
    ``dinosae encode``). One loader serves every batch. Unreadable images are
    skipped with a warning naming each and listed in ``skipped``; empty batches
    are not yielded. ``pin_memory`` pins batches for asynchronous copies to a GPU.

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
                 num_workers: int = 0, progress: bool = False, desc: str | None = None,
                 pin_memory: bool = False, groups: Sequence[Sequence[int]] | None = None) -> None:
        if groups is None:
            groups = [range(len(dataset)) if indices is None else indices]
        self.batches = [[(i, False) for i in group[start:start + batch_size]]
                        for group in groups for start in range(0, len(group), batch_size)]
        self.dataset, self.num_workers, self.pin_memory = dataset, num_workers, pin_memory
        self.progress, self.desc = progress, desc
        self.skipped: list[str] = []

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[ImageBatch]:
        from tqdm.auto import tqdm

        loader = torch.utils.data.DataLoader(self.dataset, batch_sampler=self.batches, collate_fn=collate_images,
                                             num_workers=self.num_workers, pin_memory=self.pin_memory)
        for batch in tqdm(loader, unit="batch", disable=not self.progress, desc=self.desc):
            for path in batch.skipped:
                warnings.warn(f"skipping unreadable image {path}", stacklevel=2)
            self.skipped += batch.skipped
            if batch.images.shape[0]:
                yield batch
