"""A small real-image dataset built from the photographs that ship inside scikit-image.

Each photo is a class; images are random square crops of it, resized. Train
and held-out crops come from disjoint random streams; ``unseen`` photos are
never trained on (their whole picture and crops of it), which is what a
reconstruction test of generalization needs. Nothing is downloaded:
scikit-image carries these files in its wheel.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry",
          "retina", "stereo_motorcycle")
# The demo's split: classes to train on, and natural photos (two of them grey) it never sees. The grey
# textures and the colour wheel widen what six photos show a small decoder (BENCHMARKS.md, "The demo's
# autoencoder": 18.8 -> 19.2 dB on the unseen photos after stage 1).
TRAIN_PHOTOS = ("astronaut", "rocket", "hubble_deep_field", "immunohistochemistry", "retina", "stereo_motorcycle",
                "brick", "grass", "gravel", "moon", "clock", "colorwheel")
UNSEEN_PHOTOS = ("chelsea", "coffee", "camera", "coins")


def load_photo(name: str) -> np.ndarray:
    """An RGB uint8 (H, W, 3) photo from ``skimage.data`` (grey ones repeated over the channels).

    Example:
        >>> load_photo("camera").shape, load_photo("coffee").shape
        ((512, 512, 3), (400, 600, 3))
    """
    try:
        import skimage.data
    except ImportError as error:
        raise ImportError("the photo dataset needs scikit-image: pip install scikit-image") from error
    image = getattr(skimage.data, name)()
    if isinstance(image, tuple):
        image = image[0]
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
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
                        heldout_per_photo: int = 4, photos: tuple[str, ...] = PHOTOS, seed: int = 0,
                        unseen: tuple[str, ...] = (), unseen_crops: int = 6,
                        train_scale: tuple[float, float] = (0.35, 0.9)) -> dict[str, Path]:
    """Write ``root/train/<photo>/*.png`` and ``root/heldout/<photo>/*.png`` (new crops of the same photos),
    and with ``unseen`` photos ``root/unseen/<photo>/*.png``: each whole (its centre square) and
    ``unseen_crops`` crops. Returns the folders by split.

    ``train_scale`` bounds the training crops' side as a share of the photo's shorter side; held-out and
    unseen crops keep (0.35, 0.9). Each split's crops come from their own random stream, so the unseen
    photos' crops do not depend on which photos are trained on.

    Example:
        >>> import tempfile
        >>> folders = write_photo_dataset(tempfile.mkdtemp(), size=32, train_per_photo=2, heldout_per_photo=1,
        ...                               photos=("astronaut", "coffee"), unseen=("camera",), unseen_crops=2)
        >>> [len(list(folders[split].rglob("*.png"))) for split in ("train", "heldout", "unseen")]
        [4, 2, 3]
    """
    root = Path(root)
    splits = {"train": (train_per_photo, train_scale), "heldout": (heldout_per_photo, (0.35, 0.9))}
    for index, name in enumerate(photos):
        photo = load_photo(name)
        for offset, (split, (count, scale)) in enumerate(splits.items()):
            rng = np.random.default_rng([seed, index, offset])
            _write(root / split / name, random_crops(photo, count, size, rng, *scale))
    folders = {split: root / split for split in splits}
    for index, name in enumerate(unseen):
        photo = load_photo(name)
        side = min(photo.shape[:2])
        top, left = (photo.shape[0] - side) // 2, (photo.shape[1] - side) // 2
        whole = Image.fromarray(photo[top:top + side, left:left + side]).resize((size, size), Image.Resampling.BICUBIC)
        rng = np.random.default_rng([seed, index, 2])
        _write(root / "unseen" / name, [whole, *random_crops(photo, unseen_crops, size, rng)])
        folders["unseen"] = root / "unseen"
    return folders


def _write(folder: Path, images: list[Image.Image]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        image.save(folder / f"{i:05d}.png")
