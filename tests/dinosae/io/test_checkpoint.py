"""Checkpoints: round trip, atomic replacement, pruning, path resolution, corrupt files."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch

import dinosae.io.checkpoint as checkpoint_module
from dinosae.io.checkpoint import Checkpoint, CheckpointError, load_checkpoint, resolve_checkpoint, save_checkpoint
from dinosae.io.tensor_files import read_safetensors


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

    monkeypatch.setattr(checkpoint_module, "save_state", dies)
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


@pytest.mark.parametrize("kind", ["missing", "empty", "corrupt", "dangling", "truncated"])
def test_unusable_checkpoints_raise_checkpoint_errors(tmp_path, kind):
    target = tmp_path / "run"
    if kind == "empty":
        target.mkdir()
    elif kind == "corrupt":
        save_checkpoint(target, _checkpoint(1))
        (target / "checkpoints" / "step_00000001" / "model.safetensors").write_bytes(b"garbage")
    elif kind == "dangling":
        save_checkpoint(target, _checkpoint(1))
        shutil.rmtree(target / "checkpoints" / "step_00000001")
    elif kind == "truncated":
        save_checkpoint(target, _checkpoint(1))
        weights = target / "checkpoints" / "step_00000001" / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:-10])
    with pytest.raises(CheckpointError):
        load_checkpoint(target)


def test_a_broken_latest_falls_back_to_the_newest_complete_checkpoint(tmp_path):
    for step in (1, 2):
        save_checkpoint(tmp_path, _checkpoint(step))
    (tmp_path / "checkpoints" / "latest").write_text("step_00000009\n")
    with pytest.warns(UserWarning, match="newest complete checkpoint, step_00000002"):
        assert load_checkpoint(tmp_path).step == 2


class _Payload:
    """Unpickling this runs ``os.system``: what a hostile state.pt would carry."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_pickled_state_file_is_never_read(tmp_path):
    """Only JSON and safetensors are read: a ``state.pt`` (what unreleased versions wrote) in its place makes the
    checkpoint unreadable, in one line, and its payload never runs."""
    path = save_checkpoint(tmp_path, _checkpoint(1))
    (path / "state.json").unlink()
    (path / "state.safetensors").unlink()
    marker = tmp_path / "pwned"
    torch.save({"optimizer": _Payload(marker)}, path / "state.pt")
    with pytest.raises(CheckpointError, match="is unreadable") as error:
        load_checkpoint(tmp_path)
    assert "\n" not in str(error.value) and not marker.exists()
    with open(path / "state.pt", "rb") as handle:  # the file does carry a working payload
        assert b"system" in handle.read()


def test_the_format_version_is_recorded_and_a_newer_one_refused(tmp_path):
    path = save_checkpoint(tmp_path, _checkpoint(1))
    meta = json.loads((path / "meta.json").read_text())
    assert meta["format_version"] == checkpoint_module.FORMAT_VERSION == 1
    (path / "meta.json").write_text(json.dumps({k: v for k, v in meta.items() if k != "format_version"}))
    assert load_checkpoint(tmp_path).step == 1  # written before the field existed: version 1
    (path / "meta.json").write_text(json.dumps({**meta, "format_version": 2}))
    with pytest.raises(CheckpointError, match="format version 2; this dinosae reads up to 1"):
        load_checkpoint(tmp_path)


def test_the_state_is_plain_json_and_safetensors(tmp_path):
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.randn(4, 3))], lr=1e-3, betas=(0.9, 0.95))
    optimizer.param_groups[0]["params"][0].grad = torch.randn(4, 3)
    optimizer.step()
    checkpoint = _checkpoint(1)
    checkpoint.state = {"optimizer": optimizer.state_dict(), "skipped": ["a.jpg"], "ema_updates": 3}
    path = save_checkpoint(tmp_path, checkpoint)
    assert sorted(p.name for p in path.iterdir()) == ["ema.safetensors", "meta.json", "model.safetensors",
                                                     "state.json", "state.safetensors"]
    json.loads((path / "state.json").read_text())
    restored = torch.optim.AdamW([torch.nn.Parameter(torch.randn(4, 3))], lr=1.0)
    restored.load_state_dict(load_checkpoint(tmp_path).state["optimizer"])
    assert restored.param_groups[0]["betas"] == (0.9, 0.95) and restored.param_groups[0]["lr"] == 1e-3
    for key in ("exp_avg", "exp_avg_sq", "step"):
        assert torch.equal(restored.state_dict()["state"][0][key], optimizer.state_dict()["state"][0][key])


@pytest.mark.parametrize("where", ["model", "ema"])
def test_non_finite_weights_are_never_saved(tmp_path, where):
    save_checkpoint(tmp_path, _checkpoint(1))
    bad = _checkpoint(2)
    getattr(bad, where)["w"][1, 2] = float("nan")
    with pytest.raises(FloatingPointError, match="'w' holds NaN"):
        save_checkpoint(tmp_path, bad)
    assert load_checkpoint(tmp_path).step == 1
    assert [p.name for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".")] == []


def test_leftovers_of_killed_saves_are_removed(tmp_path):
    save_checkpoint(tmp_path, _checkpoint(1))
    root = tmp_path / "checkpoints"
    for name in (".tmp.step_00000002.abc", ".tmp.old.step_00000001.q"):
        (root / name).mkdir()
        (root / name / "model.safetensors").write_bytes(b"partial")
    (tmp_path / ".tmp.config.json.123.json").write_text("{")
    removed = sorted(p.name for p in checkpoint_module.remove_checkpoint_leftovers(tmp_path))
    assert removed == [".tmp.config.json.123.json", ".tmp.old.step_00000001.q", ".tmp.step_00000002.abc"]
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step_00000001"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.int64, torch.float16])
def test_memory_mapped_reads_equal_plain_reads(tmp_path, dtype):
    from safetensors.torch import load_file, save_file

    tensors = {"a": (torch.randn(5, 7) * 100).to(dtype), "b": torch.randn(3).to(dtype), "empty": torch.zeros(0, 4)}
    save_file(tensors, tmp_path / "t.safetensors")
    mapped = read_safetensors(tmp_path / "t.safetensors")
    plain = load_file(tmp_path / "t.safetensors")
    assert mapped.keys() == plain.keys()
    for name in plain:
        assert mapped[name].dtype == plain[name].dtype and torch.equal(mapped[name], plain[name])
    mapped["a"].add_(1)  # copy-on-write: the file keeps its values
    assert torch.equal(load_file(tmp_path / "t.safetensors")["a"], plain["a"])
