"""Image folders: datasets, decoding, corrupt files, and the resumable batch order."""

from __future__ import annotations

import itertools
import warnings

import pytest
import torch
from PIL import Image

from dinosae.data.batches import ResumableBatches
from dinosae.data.decode import load_image
from dinosae.data.images import ImageDataset, collate_images


def _image(path, color="red", size=(40, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)


def test_load_image_resizes_shorter_side_and_center_crops(tmp_path):
    image = Image.new("RGB", (60, 20), "black")
    image.paste((255, 255, 255), (20, 0, 40, 20))  # a white middle third
    image.save(tmp_path / "wide.png")
    tensor = load_image(tmp_path / "wide.png", 16)
    assert tensor.shape == (3, 16, 16) and tensor.dtype == torch.uint8
    assert tensor[:, :, 4:12].float().mean() > 0.95 * 255
    item = ImageDataset(tmp_path, 16)[(0, False)]
    assert item.image.dtype == torch.float32 and torch.equal(item.image, tensor.float() / 255)


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
    plain, flipped = dataset[(0, False)].image, dataset[(0, True)].image
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


def test_a_root_of_splits_is_named_as_such(tmp_path):
    for split in ("train", "heldout"):
        (tmp_path / split / "dog").mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(tmp_path / split / "dog" / "a.png")
    with pytest.warns(UserWarning, match=r"look like splits \(heldout, train\).*pass one split's folder"):
        ImageDataset(tmp_path, 16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ImageDataset(tmp_path / "train", 16)
