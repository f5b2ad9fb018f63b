"""Per-image cost on one thread, as in a DataLoader worker: dinosae's decode + resize + crop against
torchvision's ImageFolder transform with PIL, on the same JPEGs, and the main process's conversion.

    python bench/data_folders.py photos /tmp/benchdata/photos
    python bench/loader_per_image.py /tmp/benchdata/photos [--images 200] [--size 256]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Callable

import torch
from PIL import Image
from torchvision import transforms

from dinosae.data.decode import Crop, crop_image, decode_file


def best_ms(work: Callable[[int], object], count: int, repeats: int = 3) -> float:
    """The best of ``repeats`` passes over ``count`` items, in milliseconds per item."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for index in range(count):
            work(index)
        best = min(best, time.perf_counter() - start)
    return best / count * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()
    torch.set_num_threads(1)
    files = sorted(str(p) for p in args.folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg"))[:args.images]
    data = [Path(f).read_bytes() for f in files]
    decoded = [decode_file(d, f) for d, f in zip(data, files)]
    crop = Crop(args.size)
    pil = transforms.Compose([transforms.Resize(args.size, transforms.InterpolationMode.BICUBIC),
                              transforms.CenterCrop(args.size), transforms.ToTensor()])
    n = len(files)
    ours = best_ms(lambda i: crop_image(decode_file(data[i], files[i]), crop), n)
    theirs = best_ms(lambda i: pil(Image.open(files[i]).convert("RGB")), n)
    print(f"{n} JPEGs, one thread, ms per image: dinosae {ours:.2f} (decode "
          f"{best_ms(lambda i: decode_file(data[i], files[i]), n):.2f}, resize+crop "
          f"{best_ms(lambda i: crop_image(decoded[i], crop), n):.2f}); torchvision+PIL {theirs:.2f} "
          f"(x{theirs / ours:.2f})")
    batch = torch.randint(0, 256, (32, 3, args.size, args.size), dtype=torch.uint8)
    print(f"uint8 -> float32 of a batch of 32: {best_ms(lambda _: batch.float().div_(255.0), 10):.1f} ms")


if __name__ == "__main__":
    main()
