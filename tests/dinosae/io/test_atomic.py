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


def test_what_is_written_aside_gets_the_umasks_mode(tmp_path):
    import os
    import stat

    from dinosae.io.atomic import umask, write_folder

    previous = os.umask(0o022)
    try:
        assert umask() == 0o022
        path = write_json(tmp_path / "m.json", {"a": 1})
        folder = write_folder(tmp_path / "shared", lambda staging: (staging / "w.bin").write_bytes(b"1"))
        modes = [stat.S_IMODE(p.stat().st_mode) for p in (path, folder, folder / "w.bin")]
    finally:
        os.umask(previous)
    assert modes == [0o644, 0o755, 0o644]  # mkstemp and mkdtemp alone would give 0600 and 0700
