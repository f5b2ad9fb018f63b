"""Tar shards: written from a folder, read as the folder is (same items, labels, identity, skipped files),
readable by plain tarfile in WebDataset's layout, and used by encode as a folder is."""

from __future__ import annotations

import tarfile

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from dinosae.cli import main
from dinosae.data.images import ImageDataset, collate_images
from dinosae.data.listing import DataError
from dinosae.data.tar_shards import TarListing, write_tar_shards


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "images"
    for index in range(7):
        path = root / ("cat" if index % 2 else "dog") / f"{index}.{'jpg' if index % 3 else 'png'}"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (20 + index, 30, 3), dtype=np.uint8)).save(path)
    (root / "dog" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    return root


def test_shards_serve_the_folders_items(folder, tmp_path):
    shards = write_tar_shards(folder, tmp_path / "shards", shard_size=3)
    assert sorted(p.name for p in shards.glob("*.tar")) == ["shard-00000.tar", "shard-00001.tar", "shard-00002.tar"]
    from_folder, from_shards = ImageDataset(folder, 16), ImageDataset(shards, 16)
    assert isinstance(from_shards.listing, TarListing)
    assert from_shards.classes == from_folder.classes and from_shards.labels == from_folder.labels
    assert from_shards.identity()["listing"] == from_folder.identity()["listing"]
    for key in [(0, False), (3, True), (6, False), (7, True)]:
        a, b = from_folder[key], from_shards[key]
        assert (a.label, a.index) == (b.label, b.index)
        assert (a.image is None and b.image is None) or torch.equal(a.image, b.image)
    batch = collate_images([from_shards[(i, False)] for i in range(len(from_shards))])
    assert batch.images.shape[0] == 7 and len(batch.skipped) == 1 and batch.skipped[0].endswith(":dog/broken.jpg")


def test_shards_have_webdatasets_layout(folder, tmp_path):
    shards = write_tar_shards(folder, tmp_path / "shards", shard_size=4)
    with tarfile.open(shards / "shard-00000.tar") as tar:
        names = tar.getnames()
        labels = [int(tar.extractfile(name).read()) for name in names if name.endswith(".cls")]
    keys = [name.split(".")[0] for name in names]
    assert keys == sorted(keys) and len(set(keys)) == 4 and all(keys.count(key) == 2 for key in set(keys))
    assert {name.split(".")[1] for name in names} <= {"jpg", "png", "cls"} and labels == [0, 0, 0, 1]


def test_the_command_writes_shards_and_refuses_a_used_folder(folder, tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["data", "shard", "--data", str(folder), "--out", str(tmp_path / "s"),
                                  "--shard-size", "5"])
    assert result.exit_code == 0, result.output
    assert "8 images in 2 shards" in result.output
    again = runner.invoke(main, ["data", "shard", "--data", str(folder), "--out", str(tmp_path / "s")])
    assert again.exit_code != 0 and "not empty" in again.output


def test_missing_shards_are_named(folder, tmp_path):
    shards = write_tar_shards(folder, tmp_path / "shards", shard_size=3)
    (shards / "shard-00001.tar").unlink()
    with pytest.raises(DataError, match="lack shard-00001.tar"):
        TarListing(shards)


def test_encode_reads_shards_as_it_reads_the_folder(folder, tmp_path, models):
    from dinosae.pipelines.encode import encode_folder

    shards = write_tar_shards(folder, tmp_path / "shards", shard_size=3)
    options = dict(shard_size=4, batch_size=3, num_workers=0, progress=False)
    with pytest.warns(UserWarning, match="broken.jpg"):
        from_folder = encode_folder(models / "ae", folder, tmp_path / "a", **options)
    with pytest.warns(UserWarning, match="broken.jpg"):
        from_shards = encode_folder(models / "ae", shards, tmp_path / "b", **options)
    assert len(from_folder) == len(from_shards) == 7
    for index in range(7):
        assert torch.equal(from_folder.stored((index, False))[0], from_shards.stored((index, False))[0])


# ---------------------------------------------------------------- the shards' own files, read back as input


def _rewrite_members(shards, **changes):
    with np.load(shards / "members.npz") as stored:
        arrays = {name: stored[name] for name in stored.files}
    arrays.update(changes)
    np.savez(shards / "members.npz", **{k: v for k, v in arrays.items() if v is not None})


def _rewrite_index(shards, edit):
    import json

    header = json.loads((shards / "shards.json").read_text())
    (shards / "shards.json").write_text(json.dumps(edit(header)))


@pytest.mark.parametrize("name", ["/etc/passwd", "../outside.tar", "sub/../../x.tar", ".."])
def test_a_shard_name_outside_the_folder_is_refused(folder, tmp_path, name):
    shards = write_tar_shards(folder, tmp_path / "shards", shard_size=3)
    (tmp_path / "outside.tar").write_bytes((shards / "shard-00000.tar").read_bytes())
    _rewrite_index(shards, lambda h: {**h, "shards": [{**h["shards"][0], "name": name}, *h["shards"][1:]]})
    with pytest.raises(DataError, match="is not a file of the shards' folder"):
        TarListing(shards)


@pytest.mark.parametrize("labels, message", [
    (lambda n: np.full(n, 2), r"labels in \[2, 2\], outside \[0, 2\)"),
    (lambda n: np.full(n, 10**6), "outside"),
    (lambda n: np.full(n, -1), "outside"),
    (lambda n: np.full(n, 0.5), "not integers"),
    (lambda n: np.zeros(n + 3, dtype=np.int64), "labels for"),
])
def test_labels_that_no_listing_makes_are_refused_naming_the_file(folder, tmp_path, labels, message):
    shards = write_tar_shards(folder, tmp_path / "shards", shard_size=3)
    _rewrite_members(shards, labels=labels(8))
    with pytest.raises(DataError, match=message) as error:
        TarListing(shards)
    assert "members.npz" in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("edit, message", [
    (lambda s: _rewrite_members(s, size=np.full(8, 1 << 40)), "runs past the end of its shard"),
    (lambda s: _rewrite_members(s, shard=np.full(8, 99, dtype=np.int32)), "in shard 99, of 3"),
    (lambda s: _rewrite_members(s, offset=None), "unreadable or incomplete"),
    (lambda s: _rewrite_members(s, names=np.zeros(3, dtype=np.float32)), "names are not bytes"),
    (lambda s: _rewrite_index(s, lambda h: {**h, "classes": "cat"}), "must be a list of names"),
    (lambda s: _rewrite_index(s, lambda h: {**h, "shards": [{"name": 3}]}), "must be a list of"),
    (lambda s: _rewrite_index(s, lambda h: {**h, "shards": [{**h["shards"][0], "count": 4}, *h["shards"][1:]]}),
     "counts 9 images"),
    (lambda s: (s / "shards.json").write_text("[" * 100_000), "is unreadable"),
])
def test_damaged_index_files_are_one_line_naming_the_file(folder, tmp_path, edit, message):
    shards = write_tar_shards(folder, tmp_path / "shards", shard_size=3)
    edit(shards)
    with pytest.raises(DataError, match=message) as error:
        TarListing(shards)
    assert "\n" not in str(error.value)


def test_a_name_that_is_not_utf8_is_sharded_and_read_back(folder, tmp_path):
    import os

    latin = os.fsencode(str(folder / "cat")) + b"/caf\xe9.png"
    with open(latin, "wb") as handle:
        handle.write((folder / "cat" / "1.jpg").read_bytes())
    shards = write_tar_shards(folder, tmp_path / "shards", shard_size=3)
    listing = TarListing(shards)
    names = [listing.relative_path(i) for i in range(len(listing))]
    assert "cat/caf\udce9.png" in names  # the name's bytes kept (os.fsdecode)
    dataset = ImageDataset(shards, 16)
    assert dataset.identity()["listing"] == ImageDataset(folder, 16).identity()["listing"]
    assert dataset[(names.index("cat/caf\udce9.png"), False)].image is not None
