"""Image folders: listing, decoding, corrupt files, and the resumable batch order."""

from __future__ import annotations

import itertools

import pytest
import torch
from PIL import Image

from dinosae.data.batches import ResumableBatches
from dinosae.data.images import DataError, ImageDataset, collate_images, list_images, load_image


def _image(path, color="red", size=(40, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)


def test_imagefolder_labels_follow_sorted_class_names(tmp_path):
    _image(tmp_path / "zebra" / "a.png")
    _image(tmp_path / "apple" / "b.jpg")
    _image(tmp_path / "apple" / "sub" / "c.png")
    records, classes = list_images(tmp_path)
    assert classes == ["apple", "zebra"]
    assert sorted((r.path.name, r.label) for r in records) == [("a.png", 1), ("b.jpg", 0), ("c.png", 0)]


def test_flat_folder_has_one_label(tmp_path):
    for name in "abc":
        _image(tmp_path / f"{name}.png")
    records, classes = list_images(tmp_path)
    assert classes == [] and {r.label for r in records} == {0} and len(records) == 3


@pytest.mark.parametrize("layout, message", [("missing", "does not exist"), ("empty", "contains no images"),
                                             ("mixed", "mixes images")])
def test_unusable_folders_raise_clear_errors(tmp_path, layout, message):
    root = tmp_path / "data"
    if layout != "missing":
        root.mkdir()
        (root / "notes.txt").write_text("not an image")
    if layout == "mixed":
        _image(root / "a.png")
        _image(root / "cls" / "b.png")
    with pytest.raises(DataError, match=message):
        list_images(root)


def test_load_image_resizes_shorter_side_and_center_crops(tmp_path):
    image = Image.new("RGB", (60, 20), "black")
    image.paste((255, 255, 255), (20, 0, 40, 20))  # a white middle third
    image.save(tmp_path / "wide.png")
    tensor = load_image(tmp_path / "wide.png", 16)
    assert tensor.shape == (3, 16, 16) and tensor.dtype == torch.float32
    assert tensor[:, :, 4:12].mean() > 0.95 and 0.0 <= tensor.min() and tensor.max() <= 1.0


def test_corrupt_images_are_dropped_and_named(tmp_path):
    _image(tmp_path / "good.png")
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (tmp_path / "empty.jpg").write_bytes(b"")
    dataset = ImageDataset(tmp_path, image_size=8)
    batch = collate_images([dataset[(i, False)] for i in range(len(dataset))])
    assert batch.images.shape == (1, 3, 8, 8)
    assert sorted(p.rsplit("/", 1)[-1] for p in batch.skipped) == ["bad.png", "empty.jpg"]


def test_flip_key_mirrors_the_image(tmp_path):
    image = Image.new("RGB", (16, 16), "black")
    image.paste((255, 0, 0), (0, 0, 8, 16))
    image.save(tmp_path / "half.png")
    dataset = ImageDataset(tmp_path, image_size=16)
    plain, _, _ = dataset[(0, False)]
    flipped, _, _ = dataset[(0, True)]
    assert torch.equal(flipped, plain.flip(-1)) and not torch.equal(flipped, plain)


def _take(batches, count):
    return list(itertools.islice(iter(batches), count))


def test_batches_resume_exactly_and_cover_each_epoch():
    full = _take(ResumableBatches(10, global_batch=4, seed=3), 6)
    resumed = _take(ResumableBatches(10, global_batch=4, seed=3, start_step=2), 4)
    assert resumed == full[2:]
    indices = [i for batch in full for i, _ in batch]
    assert sorted(indices[:10]) == list(range(10)) and sorted(indices[10:20]) == list(range(10))
    assert indices[:10] != indices[10:20]  # a new permutation each epoch
    assert {flip for batch in full for _, flip in batch} == {False, True}


def test_ranks_split_the_global_batch():
    single = _take(ResumableBatches(23, global_batch=6, seed=1), 5)
    ranks = [_take(ResumableBatches(23, global_batch=6, seed=1, rank=r, world_size=3), 5) for r in range(3)]
    for step in range(5):
        assert sum((ranks[r][step] for r in range(3)), []) == single[step]


def test_batch_must_divide_over_ranks():
    with pytest.raises(ValueError, match="not divisible"):
        ResumableBatches(10, global_batch=5, seed=0, world_size=2)


def test_a_decompression_bomb_is_skipped_as_unreadable(tmp_path, monkeypatch):
    _image(tmp_path / "bomb.png", size=(64, 64))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 64 x 64 is over twice this: PIL refuses it
    assert load_image(tmp_path / "bomb.png", 16) is None
    batch = collate_images([ImageDataset(tmp_path, 16)[(0, False)]])
    assert batch.images.shape[0] == 0 and batch.skipped == [str(tmp_path / "bomb.png")]
