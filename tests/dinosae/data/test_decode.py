"""Decoding to uint8: torchvision's decoders with PIL for the rest, resize and crops, unreadable files."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms.v2.functional import InterpolationMode, resize

from dinosae.data.batches import ResumableBatches
from dinosae.data.decode import Crop, crop_image, load_image, read_image
from dinosae.data.images import ImageDataset


def _photo(path, size=(48, 32), mode="RGB", seed=0):
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).convert(mode).save(path)
    return pixels


@pytest.mark.parametrize("suffix, mode", [(".png", "RGB"), (".bmp", "RGB"), (".ppm", "RGB"), (".tiff", "RGB"),
                                          (".png", "L"), (".jpg", "CMYK"), (".webp", "RGB")])
def test_every_format_decodes_to_the_pixels_pil_reads(tmp_path, suffix, mode):
    path = tmp_path / f"image{suffix}"
    _photo(path, mode=mode)
    expected = np.array(Image.open(path).convert("RGB"))
    image = read_image(path)
    assert image.dtype == torch.uint8 and image.shape == (3, 32, 48)
    # JPEG decoders may differ by a few levels in their colour conversion; lossless formats are exact.
    tolerance = 8 if suffix == ".jpg" else 0
    assert (image.permute(1, 2, 0).int() - torch.from_numpy(expected).int()).abs().max() <= tolerance


def test_resize_is_close_to_pils_bicubic(tmp_path):
    path = tmp_path / "photo.png"
    pixels = _photo(path, size=(96, 64))
    smooth = torch.from_numpy(pixels).permute(2, 0, 1)
    ours = crop_image(smooth, Crop(32)).float()
    resized = Image.fromarray(pixels).resize((48, 32), Image.Resampling.BICUBIC, reducing_gap=None)
    reference = torch.from_numpy(np.asarray(resized)[:, 8:40].copy()).permute(2, 0, 1).float()
    assert (ours - reference).abs().mean() < 2.0


def test_random_crops_move_with_the_draw_and_stay_inside(tmp_path):
    image = torch.randint(0, 256, (3, 40, 60), dtype=torch.uint8)
    crop = Crop(16, resize=24, random=True)
    resized = resize(image, [24, 36], interpolation=InterpolationMode.BICUBIC, antialias=True)
    places = set()
    for draw in torch.randint(2**31, (40,), generator=torch.Generator().manual_seed(0)).tolist():
        top, left = crop.offsets(36, 24, draw)
        assert 0 <= top <= 8 and 0 <= left <= 20
        places.add((top, left))
        assert torch.equal(crop_image(image, crop, draw), resized[:, top:top + 16, left:left + 16])
    assert len(places) > 30


def test_random_crops_are_part_of_the_resumable_order(tmp_path):
    for index in range(6):
        _photo(tmp_path / f"{index}.png", size=(40, 30), seed=index)
    dataset = ImageDataset(tmp_path, 16, crop=Crop(16, resize=24, random=True), dtype=torch.uint8)

    def images(start, count):
        batches = ResumableBatches(len(dataset), 3, seed=5, start_step=start, crop_draws=True)
        return [torch.stack([dataset[key].image for key in keys]) for keys in itertools.islice(batches, count)]

    full, resumed = images(0, 5), images(2, 3)
    assert all(torch.equal(a, b) for a, b in zip(full[2:], resumed))
    plain = ResumableBatches(len(dataset), 3, seed=5)
    drawn = ResumableBatches(len(dataset), 3, seed=5, crop_draws=True)
    for keys, keys_with_draws in itertools.islice(zip(plain, drawn), 4):
        assert keys == [key[:2] for key in keys_with_draws]


def test_unreadable_files_give_none(tmp_path):
    _photo(tmp_path / "good.jpg")
    data = (tmp_path / "good.jpg").read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(data[:len(data) // 3])
    (tmp_path / "text.png").write_text("not an image")
    (tmp_path / "empty.webp").write_bytes(b"")
    assert read_image(tmp_path / "good.jpg") is not None
    for name in ("text.png", "empty.webp", "missing.jpg"):
        assert load_image(tmp_path / name, 16) is None, name
    truncated = read_image(tmp_path / "truncated.jpg")  # libjpeg fills a truncated scan with grey, as PIL does
    assert truncated is None or truncated.shape == (3, 32, 48)


def test_a_crop_larger_than_the_resize_is_refused():
    with pytest.raises(ValueError, match="smaller than the crop"):
        Crop(256, resize=128)
