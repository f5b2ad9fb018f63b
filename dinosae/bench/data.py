"""``dinosae bench data``: listing and loading an image folder, side by side with torchvision's ImageFolder.

Listing: ``dinosae.data.listing.list_folder`` against torchvision's
``make_dataset`` (what ImageFolder runs), timed round-robin on the same tree,
and the memory each keeps per record (measured with ``tracemalloc``).

Loading: images per second of dinosae's training loader (uint8 decoding in the
workers, pinned batches on a GPU, conversion to float on the device) and of
torchvision's ImageFolder with PIL (Resize, CenterCrop, RandomHorizontalFlip,
ToTensor) on the same folder, with the same workers, batch size and output
size. Each repeat runs both loaders one after the other, in a fresh random
order, and only one loader's workers exist at a time: the loader starts its
workers, pulls ``warmup`` batches untimed (workers up, prefetch drained to the
steady state), is timed over ``batches`` batches and is shut down. Workers left
alive between turns would refill their prefetch queue on the same cores while
the other loader is timed, charging one loader's decoding to the other.
"""

from __future__ import annotations

import gc
import os
import random
import statistics
import time
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
    """Batches of ``loader`` epoch after epoch, its workers started now rather than at the first batch."""

    def epochs(batches: Iterator) -> Iterator:
        while True:
            yield from batches
            batches = iter(loader)

    return epochs(iter(loader))


def _seconds_for(batches: Iterator, pull: Callable[[object], None], warmup: int, count: int,
                 device: torch.device) -> float:
    for _ in range(warmup):
        pull(next(batches))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(count):
        pull(next(batches))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def loader_rates(root: str | os.PathLike, *, image_size: int = 256, batch_size: int = 32, workers: int = 2,
                 batches: int = 10, repeats: int = 5, warmup: int | None = None,
                 device: str | torch.device = "cpu") -> LoaderRates:
    """Images/s of dinosae's training loader and of torchvision's ImageFolder with PIL, measured side by side.

    ``root`` must be an ImageFolder tree (torchvision's ImageFolder needs class sub-folders).
    ``warmup`` batches (by default one per prefetched batch, plus one) are pulled untimed each turn.

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
    # DataLoader's default prefetch is two batches per worker.
    warmup = 2 * workers + 1 if warmup is None else warmup
    dataset = ImageDataset(root, image_size, dtype=torch.uint8)
    if not dataset.classes:
        raise DataError(f"{str(root)!r} is a flat folder; torchvision's ImageFolder needs class sub-folders")
    if batch_size > len(dataset):
        raise DataError(f"a batch of {batch_size} is more than the {len(dataset)} images of {str(root)!r}: every "
                        "epoch would end before its first full batch")
    pil = transforms.Compose([transforms.Resize(image_size, transforms.InterpolationMode.BICUBIC),
                              transforms.CenterCrop(image_size), transforms.RandomHorizontalFlip(),
                              transforms.ToTensor()])
    reference = datasets.ImageFolder(str(root), transform=pil)

    def ours(turn: int) -> Iterator:
        return batch_loader(dataset, ResumableBatches(len(dataset), batch_size, seed=turn), collate_images, workers,
                            turn, device)

    def theirs(turn: int) -> Iterator:
        return _endless(torch.utils.data.DataLoader(
            reference, batch_size=batch_size, shuffle=True, num_workers=workers, pin_memory=device.type == "cuda",
            drop_last=True, generator=torch.Generator().manual_seed(turn)))

    def to_device(images: torch.Tensor) -> None:
        images.to(device, non_blocking=True)

    loaders = {"dinosae": (ours, lambda batch: batch.pixels(device)),
               "torchvision": (theirs, lambda batch: to_device(batch[0]))}
    seconds: dict[str, list[float]] = {name: [] for name in loaders}
    order = random.Random(0)
    names = list(loaders)
    for turn in range(repeats):
        order.shuffle(names)
        for name in names:
            start_loader, pull = loaders[name]
            batches_of = start_loader(turn)
            seconds[name].append(_seconds_for(batches_of, pull, warmup, batches, device))
            # The iterator and its DataLoader refer to each other, so only a collection ends its workers.
            del batches_of
            gc.collect()
    return LoaderRates({name: batches * batch_size / statistics.median(ts) for name, ts in seconds.items()},
                       {"image_size": image_size, "batch_size": batch_size, "workers": workers, "batches": batches,
                        "repeats": repeats, "warmup": warmup, "device": str(device), "images": len(dataset)})


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
