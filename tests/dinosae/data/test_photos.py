"""The bundled photo dataset: its splits, their crop scales, and unseen photos that stay the same."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("skimage.data")

from dinosae.data.photos import (  # noqa: E402
    TRAIN_PHOTOS, UNSEEN_PHOTOS, load_photo, random_crops, write_photo_dataset,
)


def _pixels(folder):
    return [np.asarray(Image.open(path)) for path in sorted(folder.rglob("*.png"))]


def test_unseen_photos_do_not_depend_on_the_training_photos(tmp_path):
    few = write_photo_dataset(tmp_path / "few", size=32, train_per_photo=1, heldout_per_photo=1,
                              photos=TRAIN_PHOTOS[:2], unseen=UNSEEN_PHOTOS[:2], unseen_crops=2)
    many = write_photo_dataset(tmp_path / "many", size=32, train_per_photo=1, heldout_per_photo=1,
                               photos=TRAIN_PHOTOS[:5], unseen=UNSEEN_PHOTOS[:2], unseen_crops=2)
    assert all(np.array_equal(a, b) for a, b in zip(_pixels(few["unseen"]), _pixels(many["unseen"]), strict=True))


def test_train_scale_changes_the_training_crops_only(tmp_path):
    narrow = write_photo_dataset(tmp_path / "narrow", size=32, train_per_photo=3, heldout_per_photo=2,
                                 photos=("astronaut",))
    wide = write_photo_dataset(tmp_path / "wide", size=32, train_per_photo=3, heldout_per_photo=2,
                               photos=("astronaut",), train_scale=(0.15, 1.0))
    assert all(np.array_equal(a, b) for a, b in zip(_pixels(narrow["heldout"]), _pixels(wide["heldout"]), strict=True))
    assert not any(np.array_equal(a, b) for a, b in zip(_pixels(narrow["train"]), _pixels(wide["train"]), strict=True))


def test_random_crops_draw_sides_within_the_scale():
    photo = load_photo("astronaut")
    rng = np.random.default_rng(3)
    # At size = the photo's side, a crop of the whole photo is the photo itself, and only that.
    whole = random_crops(photo, 2, photo.shape[0], rng, min_scale=1.0, max_scale=1.0)
    assert all(np.array_equal(np.asarray(crop), photo) for crop in whole)


def test_the_demo_never_trains_on_its_unseen_photos():
    assert not set(TRAIN_PHOTOS) & set(UNSEEN_PHOTOS)
    shapes = {name: load_photo(name).shape for name in TRAIN_PHOTOS + UNSEEN_PHOTOS}
    assert all(len(shape) == 3 and shape[2] == 3 and min(shape[:2]) >= 64 for shape in shapes.values()), shapes
