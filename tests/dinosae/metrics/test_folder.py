"""Image sets from folders and uint8 .npz archives."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from dinosae.metrics.folder import ImageSource, read_image


def _random_images(seed: int, n: int, height: int, width: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, height, width, 3), dtype=np.uint8)


def test_folder_batches_are_sorted_exact_and_split_where_size_changes(tmp_path):
    small, large = _random_images(0, 3, 6, 8), _random_images(1, 2, 10, 7)
    (tmp_path / "sub").mkdir()
    for i, image in enumerate(small):
        Image.fromarray(image).save(tmp_path / f"a{i}.png")
    for i, image in enumerate(large):
        Image.fromarray(image).save(tmp_path / "sub" / f"b{i}.png")
    (tmp_path / "notes.txt").write_text("not an image")
    source = ImageSource(tmp_path)
    assert len(source) == 5
    batches = list(source.batches(batch_size=2))
    assert [tuple(b.shape) for b in batches] == [(2, 3, 6, 8), (1, 3, 6, 8), (2, 3, 10, 7)]
    assert all(b.dtype == torch.float32 for b in batches)
    restored = [(b.permute(0, 2, 3, 1) * 255).round().to(torch.uint8).numpy() for b in batches]
    np.testing.assert_array_equal(np.concatenate(restored[:2]), small)
    np.testing.assert_array_equal(restored[2], large)


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed])
def test_npz_is_streamed_in_batches(tmp_path, save):
    images = _random_images(2, 11, 5, 4)
    save(tmp_path / "set.npz", images, np.arange(11))  # arr_1 (labels) is ignored
    source = ImageSource(tmp_path / "set.npz")
    assert len(source) == 11
    batches = list(source.batches(batch_size=4))
    assert [b.shape[0] for b in batches] == [4, 4, 3]
    restored = (torch.cat(batches).permute(0, 2, 3, 1) * 255).round().to(torch.uint8).numpy()
    np.testing.assert_array_equal(restored, images)


def test_grayscale_and_rgba_become_rgb(tmp_path):
    Image.new("L", (4, 3), 9).save(tmp_path / "gray.png")
    Image.new("RGBA", (4, 3), (1, 2, 3, 128)).save(tmp_path / "rgba.png")
    assert read_image(tmp_path / "gray.png").tolist()[0][0] == [9, 9, 9]
    assert read_image(tmp_path / "rgba.png").tolist()[0][0] == [1, 2, 3]


def test_bad_sources_raise_naming_the_problem(tmp_path):
    with pytest.raises(ValueError, match="neither a folder"):
        ImageSource(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="contains no images"):
        ImageSource(tmp_path / "empty")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "x.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="x.png"):
        list(ImageSource(tmp_path / "broken").batches())
    np.savez(tmp_path / "float.npz", np.random.rand(2, 4, 4, 3))
    with pytest.raises(ValueError, match="uint8"):
        ImageSource(tmp_path / "float.npz")
    np.savez(tmp_path / "stats.npz", mu=np.zeros(3))
    with pytest.raises(ValueError, match="arr_0"):
        ImageSource(tmp_path / "stats.npz")
    np.savez(tmp_path / "ok.npz", _random_images(3, 2, 4, 4))
    with pytest.raises(ValueError, match="batch_size"):
        list(ImageSource(tmp_path / "ok.npz").batches(0))
