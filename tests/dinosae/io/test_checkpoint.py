"""Checkpoints: round trip, atomic replacement, pruning, path resolution, corrupt files."""

from __future__ import annotations

import pytest
import torch

import dinosae.io.checkpoint as checkpoint_module
from dinosae.io.checkpoint import Checkpoint, CheckpointError, load_checkpoint, resolve_checkpoint, save_checkpoint


def _checkpoint(step: int) -> Checkpoint:
    generator = torch.Generator().manual_seed(step)
    return Checkpoint(step=step, model={"w": torch.randn(3, 4, generator=generator)},
                      ema={"w": torch.randn(3, 4, generator=generator)},
                      state={"optimizer": {"lr": 0.1 * step}}, meta={"kind": "test"})


def test_round_trip(tmp_path):
    original = _checkpoint(7)
    path = save_checkpoint(tmp_path, original)
    loaded = load_checkpoint(tmp_path)
    assert loaded.step == 7 and loaded.path == path and loaded.meta["kind"] == "test"
    assert torch.equal(loaded.model["w"], original.model["w"]) and torch.equal(loaded.ema["w"], original.ema["w"])
    assert loaded.state == original.state


def test_keeps_the_newest_and_resolves_every_path_form(tmp_path):
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, _checkpoint(step), keep_last=2)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir() if p.is_dir())
    assert names == ["step_00000002", "step_00000003"]
    newest = tmp_path / "checkpoints" / "step_00000003"
    assert resolve_checkpoint(tmp_path) == newest
    assert resolve_checkpoint(tmp_path / "checkpoints") == newest
    assert resolve_checkpoint(newest / "..") .resolve() == newest.resolve()
    assert load_checkpoint(tmp_path / "checkpoints" / "step_00000002").step == 2


def test_crash_while_writing_leaves_the_previous_checkpoint_latest(tmp_path, monkeypatch):
    save_checkpoint(tmp_path, _checkpoint(1))

    def dies(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint_module.torch, "save", dies)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path, _checkpoint(2))
    monkeypatch.undo()
    assert load_checkpoint(tmp_path).step == 1
    leftovers = [p.name for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_saving_a_step_again_replaces_it_whole(tmp_path):
    save_checkpoint(tmp_path, _checkpoint(4))
    again = _checkpoint(4)
    again.model["w"] = torch.ones(3, 4)
    save_checkpoint(tmp_path, again)
    assert torch.equal(load_checkpoint(tmp_path).model["w"], torch.ones(3, 4))


@pytest.mark.parametrize("kind", ["missing", "empty", "corrupt", "dangling"])
def test_unusable_checkpoints_raise_checkpoint_errors(tmp_path, kind):
    target = tmp_path / "run"
    if kind == "empty":
        target.mkdir()
    elif kind == "corrupt":
        save_checkpoint(target, _checkpoint(1))
        (target / "checkpoints" / "step_00000001" / "model.safetensors").write_bytes(b"garbage")
    elif kind == "dangling":
        save_checkpoint(target, _checkpoint(1))
        (target / "checkpoints" / "latest").write_text("step_00000009\n")
    with pytest.raises(CheckpointError):
        load_checkpoint(target)
