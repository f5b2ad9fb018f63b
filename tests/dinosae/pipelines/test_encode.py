"""``dinosae encode``'s background writer: every shard written in order, and a failed write stops the job."""

from __future__ import annotations

import pytest

import dinosae.pipelines.encode as encode
from dinosae.data.latents import shard_name


def test_a_failed_shard_write_raises_and_leaves_no_finished_cache(tmp_path, models, three_photos, monkeypatch):
    written = []

    def failing_write(directory, index, *tensors):
        written.append(index)
        if index == 1:
            raise OSError(28, "No space left on device")
        return real_write(directory, index, *tensors)

    real_write = encode.write_shard
    monkeypatch.setattr(encode, "write_shard", failing_write)
    with pytest.raises(OSError, match="No space left"):
        encode.encode_folder(models / "ae", three_photos / "train", tmp_path / "lat", shard_size=5, batch_size=3,
                             num_workers=0, progress=False)
    assert written[:2] == [0, 1] and (tmp_path / "lat" / shard_name(0)).is_file()
    assert not (tmp_path / "lat" / "meta.json").exists()
    monkeypatch.setattr(encode, "write_shard", real_write)
    cache = encode.encode_folder(models / "ae", three_photos / "train", tmp_path / "lat", shard_size=5,
                                 batch_size=3, num_workers=0, progress=False)
    assert cache.meta["shard_counts"] == [5, 5, 5, 3]
