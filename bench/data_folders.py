"""Folders for ``dinosae bench data`` (BENCHMARKS.md, "Data path").

    python bench/data_folders.py photos OUT [--classes 10] [--per-class 100]
        ImageNet-like JPEGs: random crops of scikit-image's bundled photos, each re-encoded at its own size
        (shorter side 300-500 px, aspect 3:4 to 4:3, quality 75-95), one class per photo.
    python bench/data_folders.py tree OUT [--classes 100] [--per-class 1000]
        An ImageNet-shaped tree of empty .JPEG files, for timing listings (no file is opened).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from dinosae.data.photos import TRAIN_PHOTOS, UNSEEN_PHOTOS, load_photo

PHOTOS = TRAIN_PHOTOS + UNSEEN_PHOTOS


def write_photos(out: Path, classes: int, per_class: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for index in range(classes):
        name = PHOTOS[index % len(PHOTOS)]
        photo = load_photo(name)
        folder = out / f"n{index:08d}_{name}"
        folder.mkdir(parents=True, exist_ok=True)
        height, width = photo.shape[:2]
        for item in range(per_class):
            side = int(rng.integers(min(height, width) // 2, min(height, width) + 1))
            top, left = int(rng.integers(0, height - side + 1)), int(rng.integers(0, width - side + 1))
            crop = Image.fromarray(photo[top:top + side, left:left + side])
            shorter, aspect = int(rng.integers(300, 501)), float(rng.uniform(0.75, 4 / 3))
            size = (round(shorter * max(aspect, 1.0)), round(shorter / min(aspect, 1.0)))
            crop.resize(size, Image.Resampling.BICUBIC).save(folder / f"n{index:08d}_{item}.JPEG",
                                                             quality=int(rng.integers(75, 96)))


def write_tree(out: Path, classes: int, per_class: int) -> None:
    for index in range(classes):
        folder = out / f"n{index:08d}"
        folder.mkdir(parents=True, exist_ok=True)
        for item in range(per_class):
            (folder / f"n{index:08d}_{item}.JPEG").touch()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=["photos", "tree"])
    parser.add_argument("out", type=Path)
    parser.add_argument("--classes", type=int, default=None)
    parser.add_argument("--per-class", type=int, default=None)
    args = parser.parse_args()
    if args.kind == "photos":
        write_photos(args.out, args.classes or 10, args.per_class or 100)
    else:
        write_tree(args.out, args.classes or 100, args.per_class or 1000)


if __name__ == "__main__":
    main()
