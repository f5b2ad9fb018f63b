"""A small real-image dataset built from the photographs that ship inside scikit-image.

Each photo is a class; images are random square crops of it, resized. Train
and held-out crops come from disjoint random streams. Nothing is downloaded:
scikit-image carries these files in its wheel.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry",
          "retina", "stereo_motorcycle")


def load_photo(name: str) -> np.ndarray:
    """An RGB uint8 (H, W, 3) photo from ``skimage.data``."""
    try:
        import skimage.data
    except ImportError as error:
        raise ImportError("the photo dataset needs scikit-image: pip install scikit-image") from error
    image = getattr(skimage.data, name)()
    if isinstance(image, tuple):
        image = image[0]
    return np.ascontiguousarray(image[..., :3])


def random_crops(photo: np.ndarray, count: int, size: int, rng: np.random.Generator,
                 min_scale: float = 0.35, max_scale: float = 0.9) -> list[Image.Image]:
    """``count`` square crops of random side (a fraction of the shorter side) and position, at ``size`` px."""
    height, width = photo.shape[:2]
    crops = []
    for _ in range(count):
        side = int(min(height, width) * rng.uniform(min_scale, max_scale))
        top = int(rng.integers(0, height - side + 1))
        left = int(rng.integers(0, width - side + 1))
        crop = Image.fromarray(photo[top:top + side, left:left + side])
        crops.append(crop.resize((size, size), Image.Resampling.BICUBIC))
    return crops


def write_photo_dataset(root: str | os.PathLike, size: int = 64, train_per_photo: int = 32,
                        heldout_per_photo: int = 4, photos: tuple[str, ...] = PHOTOS, seed: int = 0) -> dict[str, Path]:
    """Write ``root/train/<photo>/*.png`` and ``root/heldout/<photo>/*.png``; returns both folders.

    Example:
        >>> import tempfile
        >>> folders = write_photo_dataset(tempfile.mkdtemp(), size=32, train_per_photo=2,
        ...                               heldout_per_photo=1, photos=("astronaut", "coffee"))
        >>> len(list(folders["train"].rglob("*.png"))), len(list(folders["heldout"].rglob("*.png")))
        (4, 2)
    """
    root = Path(root)
    splits = {"train": train_per_photo, "heldout": heldout_per_photo}
    for index, name in enumerate(photos):
        photo = load_photo(name)
        for offset, (split, count) in enumerate(splits.items()):
            rng = np.random.default_rng([seed, index, offset])
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i, crop in enumerate(random_crops(photo, count, size, rng)):
                crop.save(folder / f"{i:05d}.png")
    return {split: root / split for split in splits}
