"""Listing a folder with scandir: labels and order as torchvision's ImageFolder, compact records, clear errors."""

from __future__ import annotations

import os

import pytest
from PIL import Image

from dinosae.data.listing import DataError, list_folder


def _image(path, size=(12, 10)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, "red").save(path)


def test_imagefolder_labels_follow_sorted_class_names(tmp_path):
    _image(tmp_path / "zebra" / "a.png")
    _image(tmp_path / "apple" / "b.jpg")
    _image(tmp_path / "apple" / "sub" / "c.png")
    (tmp_path / "apple" / "notes.txt").write_text("not an image")
    listing = list_folder(tmp_path)
    assert listing.classes == ["apple", "zebra"]
    names = [listing.relative_path(i) for i in range(len(listing))]
    assert list(zip(names, listing.labels.tolist())) == [("apple/b.jpg", 0), ("apple/sub/c.png", 0),
                                                         ("zebra/a.png", 1)]
    assert listing.path(2) == os.path.join(tmp_path, "zebra", "a.png")


def test_the_same_labels_and_files_as_torchvision(tmp_path):
    from torchvision.datasets import ImageFolder

    for index, name in enumerate(["c_3", "a-1", "B", "a", "a_b"]):
        for file in ["x.JPEG", "y.png", f"{index}.jpg", "Z.webp"]:
            _image(tmp_path / name / file)
    _image(tmp_path / "a" / "deeper" / "w.png")
    reference = ImageFolder(str(tmp_path))
    listing = list_folder(tmp_path)
    assert listing.classes == reference.classes
    assert sorted((listing.path(i), int(listing.labels[i])) for i in range(len(listing))) == sorted(reference.samples)


def test_records_are_compact(tmp_path):
    for index in range(200):
        (tmp_path / f"class_{index % 4}").mkdir(exist_ok=True)
        (tmp_path / f"class_{index % 4}" / f"image_{index:05d}.jpg").write_bytes(b"")
    listing = list_folder(tmp_path)
    assert len(listing) == 200 and listing.record_bytes() / len(listing) < 40


def test_flat_folder_has_one_label(tmp_path):
    for name in "cab":
        _image(tmp_path / f"{name}.png")
    listing = list_folder(tmp_path)
    assert listing.classes == [] and listing.labels.tolist() == [0, 0, 0]
    assert [listing.relative_path(i) for i in range(3)] == ["a.png", "b.png", "c.png"]


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
        list_folder(root)


def test_symlink_loops_and_dangling_links_are_skipped_with_a_warning(tmp_path):
    _image(tmp_path / "a" / "x.png")
    _image(tmp_path / "b" / "y.png")
    os.symlink("..", tmp_path / "a" / "up")
    os.symlink("loop", tmp_path / "a" / "loop")
    os.symlink("missing.png", tmp_path / "b" / "gone.png")
    with pytest.warns(UserWarning) as caught:
        listing = list_folder(tmp_path)
    assert [listing.relative_path(i) for i in range(len(listing))] == ["a/x.png", "b/y.png"]
    messages = " ".join(str(w.message) for w in caught)
    assert "a folder already listed" in messages and "Too many levels of symbolic links" in messages


def test_a_name_that_is_not_utf8_is_kept_as_its_bytes(tmp_path):
    _image(tmp_path / "c" / "x.png")
    os.rename(tmp_path / "c" / "x.png", os.fsencode(str(tmp_path / "c")) + b"/caf\xe9.png")
    listing = list_folder(tmp_path)
    assert listing.relative_path(0) == "c/caf\udce9.png" and os.path.isfile(listing.path(0))
    from dinosae.data.images import ImageDataset

    dataset = ImageDataset(tmp_path, 16)
    assert dataset.identity()["count"] == 1 and dataset[(0, False)].image is not None
