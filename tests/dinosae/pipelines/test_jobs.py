"""The one shape of a resumable sharded job: claim the folder, keep trusted shards, split the rest over ranks."""

from __future__ import annotations

import json
import warnings
from dataclasses import replace
from pathlib import Path

import pytest

from dinosae.io.protocol import ProtocolMismatchError
from dinosae.pipelines.jobs import FORMAT_VERSION, claim_folder, missing_shards, shards_to_do
from dinosae.runtime import init_distributed


def test_a_folder_is_claimed_with_its_format_version(tmp_path):
    env = init_distributed("cpu")
    claim_folder(env, tmp_path, {"seed": 0}, "samples", "shard_*.npz")
    assert json.loads((tmp_path / "protocol.json").read_text()) == {"seed": 0, "format_version": FORMAT_VERSION}
    claim_folder(env, tmp_path, {"seed": 0}, "samples", "shard_*.npz")  # a rerun with the same settings resumes
    with pytest.raises(ProtocolMismatchError, match=r"seed: 0 -> 1\); choose another --out, or rerun"):
        claim_folder(env, tmp_path, {"seed": 1}, "samples", "shard_*.npz")


def test_shards_without_a_protocol_and_a_newer_format_are_refused(tmp_path):
    env = init_distributed("cpu")
    (tmp_path / "shard_00000.npz").write_bytes(b"")
    with pytest.raises(ProtocolMismatchError, match="unknown protocol"):
        claim_folder(env, tmp_path, {"seed": 0}, "samples", "shard_*.npz")
    newer = tmp_path / "newer"
    newer.mkdir()
    (newer / "protocol.json").write_text(json.dumps({"seed": 0, "format_version": FORMAT_VERSION + 1}))
    with pytest.raises(ProtocolMismatchError, match="format_version"):
        claim_folder(env, newer, {"seed": 0}, "samples", "shard_*.npz")
    older = tmp_path / "older"
    older.mkdir()
    (older / "protocol.json").write_text(json.dumps({"seed": 0}))  # written before the field existed
    claim_folder(env, older, {"seed": 0}, "samples", "shard_*.npz")


def test_each_rank_takes_its_missing_and_untrusted_shards(tmp_path):
    for index in (0, 1, 3):
        (tmp_path / f"{index}").write_text("cut" if index == 3 else "whole")
    env = init_distributed("cpu")
    problem = lambda path, index: None if path.read_text() == "whole" else "it is truncated"  # noqa: E731
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert shards_to_do(env, 5, lambda i: tmp_path / str(i), problem) == [2, 3, 4]
    assert [str(w.message) for w in caught] == ["making 3 again: it is truncated"]
    second_of_two = replace(env, rank=1, world_size=2)
    assert shards_to_do(second_of_two, 5, lambda i: tmp_path / str(i), problem) == [3]
    assert missing_shards(5, lambda i: Path(tmp_path / str(i))) == ["2", "4"]
