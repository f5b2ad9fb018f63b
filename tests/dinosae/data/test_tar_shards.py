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
