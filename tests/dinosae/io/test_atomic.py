"""Atomic writes: a failed write leaves the previous file and no stray temporary file."""

from __future__ import annotations

import json

import pytest

from dinosae.io.atomic import write_atomic, write_json


def test_a_failed_write_keeps_the_old_file_and_leaves_nothing_behind(tmp_path):
    target = write_json(tmp_path / "metrics.json", {"psnr": 20.0})

    def crash(tmp):
        tmp.write_text('{"psnr": 2')  # half written when the process "dies"
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomic(target, crash)
    assert json.loads(target.read_text()) == {"psnr": 20.0}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_writes_create_missing_folders(tmp_path):
    path = write_json(tmp_path / "a" / "b" / "m.json", {"x": [1, 2]})
    assert json.loads(path.read_text()) == {"x": [1, 2]}
