"""``dinosae bench data``: listing and loading an image folder, side by side with torchvision's ImageFolder.

Listing: ``dinosae.data.listing.list_folder`` against torchvision's
``make_dataset`` (what ImageFolder runs), timed round-robin on the same tree,
and the memory each keeps per record (measured with ``tracemalloc``).

Loading: images per second of dinosae's training loader (uint8 decoding in the
workers, pinned batches on a GPU, conversion to float on the device) and of
torchvision's ImageFolder with PIL (Resize, CenterCrop, RandomHorizontalFlip,
ToTensor) on the same folder, with the same workers, batch size and output
size. Both loaders start their workers first; then each repeat pulls
``batches`` batches from each, in a fresh random order (see
``dinosae.bench.timing.measure_side_by_side``).
"""

from __future__ import annotations

import os
import tracemalloc
from dataclasses import dataclass
from typing import Callable, Iterator

import torch

from dinosae.bench.timing import measure_side_by_side
from dinosae.data.batches import ResumableBatches
from dinosae.data.images import ImageDataset, collate_images
from dinosae.data.listing import DataError, list_folder
from dinosae.train.loop import batch_loader


@dataclass(frozen=True)
class ListingRates:
    """Seconds to list a tree and bytes kept per record, for dinosae and torchvision."""

    files: int
    seconds: dict[str, float]
    bytes_per_record: dict[str, float]

    def to_json(self) -> dict:
        return {"files": self.files, "seconds": self.seconds, "bytes_per_record": self.bytes_per_record,
                "time_ratio": self.seconds["dinosae"] / self.seconds["torchvision"]}


@dataclass(frozen=True)
class LoaderRates:
    """Images per second of each loader."""

    images_per_s: dict[str, float]
    settings: dict[str, object]

    def to_json(self) -> dict:
        return {"images_per_s": self.images_per_s, **self.settings,
                "speedup": self.images_per_s["dinosae"] / self.images_per_s["torchvision"]}


def _torchvision_listing(root: str) -> list[tuple[str, int]]:
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

    return make_dataset(root, find_classes(root)[1], IMG_EXTENSIONS)


def _kept_bytes(list_tree: Callable[[str], object], root: str) -> int:
    tracemalloc.start()
    try:
        listing = list_tree(root)
        kept = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    del listing
    return kept


def listing_rates(root: str | os.PathLike, repeats: int = 5) -> ListingRates:
    """Time both listings of ``root`` round-robin (median of ``repeats``) and measure their records' memory.

    Example:
        >>> import tempfile, PIL.Image
        >>> root = tempfile.mkdtemp()
        >>> os.mkdir(f"{root}/cls")
        >>> PIL.Image.new("RGB", (8, 8)).save(f"{root}/cls/a.png")
        >>> listing_rates(root, repeats=1).files
        1
    """
    root = str(root)
    tools = {"dinosae": list_folder, "torchvision": _torchvision_listing}
    timings = measure_side_by_side({name: lambda _, tool=tool: tool(root) for name, tool in tools.items()},
                                   torch.device("cpu"), repeats=repeats, warmup=1)
    files = len(list_folder(root))
    return ListingRates(files, {name: timing.median for name, timing in timings.items()},
                        {name: _kept_bytes(tool, root) / files for name, tool in tools.items()})


def _endless(loader: torch.utils.data.DataLoader) -> Iterator:
    while True:
        yield from loader


def loader_rates(root: str | os.PathLike, *, image_size: int = 256, batch_size: int = 32, workers: int = 2,
                 batches: int = 10, repeats: int = 5, device: str | torch.device = "cpu") -> LoaderRates:
    """Images/s of dinosae's training loader and of torchvision's ImageFolder with PIL, measured side by side.

    ``root`` must be an ImageFolder tree (torchvision's ImageFolder needs class sub-folders).

    Example:
        >>> import tempfile, PIL.Image
        >>> root = tempfile.mkdtemp()
        >>> os.mkdir(f"{root}/cls")
        >>> for i in range(4):
        ...     PIL.Image.new("RGB", (24, 20)).save(f"{root}/cls/{i}.jpg")
        >>> rates = loader_rates(root, image_size=16, batch_size=2, workers=0, batches=1, repeats=1)
        >>> sorted(rates.images_per_s)
        ['dinosae', 'torchvision']
    """
    from torchvision import datasets, transforms

    device = torch.device(device)
    dataset = ImageDataset(root, image_size, dtype=torch.uint8)
    if not dataset.classes:
        raise DataError(f"{str(root)!r} is a flat folder; torchvision's ImageFolder needs class sub-folders")
    sampler = ResumableBatches(len(dataset), batch_size, seed=0)
    ours = batch_loader(dataset, sampler, collate_images, workers, 0, device)
    pil = transforms.Compose([transforms.Resize(image_size, transforms.InterpolationMode.BICUBIC),
                              transforms.CenterCrop(image_size), transforms.RandomHorizontalFlip(),
                              transforms.ToTensor()])
    reference = torch.utils.data.DataLoader(datasets.ImageFolder(str(root), transform=pil), batch_size=batch_size,
                                            shuffle=True, num_workers=workers, pin_memory=device.type == "cuda",
                                            persistent_workers=workers > 0, drop_last=True)
    theirs = _endless(reference)

    def pull_ours(_: int) -> None:
        for _ in range(batches):
            next(ours).pixels(device)

    def pull_theirs(_: int) -> None:
        for _ in range(batches):
            images, _labels = next(theirs)
            images.to(device, non_blocking=True)

    timings = measure_side_by_side({"dinosae": pull_ours, "torchvision": pull_theirs}, device, repeats=repeats,
                                   warmup=1)
    return LoaderRates({name: batches * batch_size / timing.median for name, timing in timings.items()},
                       {"image_size": image_size, "batch_size": batch_size, "workers": workers, "batches": batches,
                        "repeats": repeats, "device": str(device), "images": len(dataset)})


def format_rates(listing: ListingRates | None, loading: LoaderRates) -> str:
    """A small table of both measurements."""
    lines = []
    if listing is not None:
        lines += [f"listing {listing.files} files: dinosae {listing.seconds['dinosae']:.3f} s, torchvision "
                  f"{listing.seconds['torchvision']:.3f} s (x{listing.to_json()['time_ratio']:.2f}); bytes per record: "
                  f"dinosae {listing.bytes_per_record['dinosae']:.0f}, "
                  f"torchvision {listing.bytes_per_record['torchvision']:.0f}"]
    rates = loading.images_per_s
    lines += [f"loading ({loading.settings['workers']} workers, batch {loading.settings['batch_size']}, "
              f"{loading.settings['image_size']} px, {loading.settings['device']}): dinosae {rates['dinosae']:.0f} "
              f"images/s, torchvision ImageFolder + PIL {rates['torchvision']:.0f} images/s "
              f"(x{loading.to_json()['speedup']:.2f})"]
    return "\n".join(lines)
