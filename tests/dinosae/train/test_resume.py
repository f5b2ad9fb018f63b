"""Resuming as the run was: its own total, configs and data; changes refused unless overridden; one writer."""

from __future__ import annotations

import shutil
import subprocess
import sys
import warnings

import pytest
import torch
from PIL import Image

from dinosae.config import AETrainConfig
from dinosae.data.images import DataError
from dinosae.io.checkpoint import load_checkpoint
from dinosae.io.lock import DirectoryLockedError
from dinosae.train.autoencoder import train_autoencoder
from dinosae.train.loop import NonFiniteLossError
from dinosae.train.resume import ResumeMismatchError
from dinosae.train.runlog import read_metrics

FAST = dict(batch_size=4, lr=3e-4, lpips_weight=0.0, num_workers=0, log_every=1, image_every=10**6, ckpt_every=2)


def _train(run, data, ae_config, **kwargs):
    train = kwargs.pop("train", {})
    config = None if train is None else AETrainConfig(**{**FAST, "steps": 4, **train})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return train_autoencoder(run, data, ae_config, config, device="cpu", **kwargs)


@pytest.fixture(scope="module")
def half_run(tmp_path_factory, photos):
    """A run of 4 steps stopped after its checkpoint at step 2 (its final checkpoint removed)."""
    from dinosae.config import AE_PRESETS, preset

    run = tmp_path_factory.mktemp("half") / "run"
    _train(run, photos["heldout"], preset(AE_PRESETS, "tiny"), train={"keep_last": 3})
    shutil.rmtree(run / "checkpoints" / "step_00000004")
    (run / "checkpoints" / "latest").write_text("step_00000002\n")
    return run


def _copy(run, tmp_path):
    target = tmp_path / "run"
    shutil.copytree(run, target)
    return target


def test_resume_without_steps_finishes_the_runs_own_total(half_run, photos, tmp_path):
    run = _copy(half_run, tmp_path)
    _train(run, photos["heldout"], None, train=None, resume="latest")
    assert load_checkpoint(run).step == 4
    assert [r["step"] for r in read_metrics(run)] == [1, 2, 3, 4]
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 4  # the steps after the checkpoint are logged once, not twice


def test_resume_with_other_settings_is_refused_listing_them(half_run, photos, tmp_path, tiny_config):
    run = _copy(half_run, tmp_path)
    before = sorted(p.name for p in (run / "checkpoints").iterdir())
    changed = dict(tiny_config.__dict__, image_size=32)
    with pytest.raises(ResumeMismatchError, match=r"model.image_size: 64 -> 32; train.lr: 0.0003 -> 0.001"):
        _train(run, photos["heldout"], type(tiny_config)(**changed), train={"lr": 1e-3}, resume="latest",
               explicit={"model": {"image_size"}, "train": {"lr"}})
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == before


def test_an_overridden_resume_applies_and_records_the_change(half_run, photos, tmp_path):
    run = _copy(half_run, tmp_path)
    _train(run, photos["heldout"], None, train={"lr": 1e-3}, resume="latest", override=True, explicit={"train": {"lr"}})
    final = load_checkpoint(run)
    assert final.meta["train_config"]["lr"] == 1e-3
    assert final.meta["resumes"] == [{"step": 2, "changes": ["train.lr: 0.0003 -> 0.001"]}]


def test_resume_on_other_data_is_refused(half_run, photos, tmp_path):
    run = _copy(half_run, tmp_path)
    with pytest.raises(ResumeMismatchError, match="data: 32 items .* -> 256 items"):
        _train(run, photos["train"], None, train=None, resume="latest")


def test_the_same_data_elsewhere_is_the_same_data(half_run, photos, tmp_path):
    run = _copy(half_run, tmp_path)
    moved = shutil.copytree(photos["heldout"], tmp_path / "staged_on_local_disk")
    _train(run, moved, None, train=None, resume="latest")
    assert load_checkpoint(run).step == 4


def test_resume_auto_starts_then_continues(photos, tmp_path, tiny_config):
    run = tmp_path / "run"
    _train(run, photos["heldout"], tiny_config, train={"steps": 2}, resume="auto")
    _train(run, photos["heldout"], tiny_config, train={"steps": 3}, resume="auto")
    assert load_checkpoint(run).step == 3


def test_a_second_writer_is_refused_and_changes_nothing(half_run, photos, tmp_path):
    run = _copy(half_run, tmp_path)
    before = {p.name: p.stat().st_mtime_ns for p in run.rglob("*")}
    holder = subprocess.Popen([sys.executable, "-c", "import time; from dinosae.io.lock import DirectoryLock; "
                               f"DirectoryLock({str(run)!r}).acquire(); print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(DirectoryLockedError, match=f"pid {holder.pid}"):
            _train(run, photos["heldout"], None, train=None, resume="latest")
    finally:
        holder.kill()
        holder.wait()
    after = {p.name: p.stat().st_mtime_ns for p in run.rglob("*") if p.name != ".dinosae.lock"}
    assert after == {k: v for k, v in before.items() if k != ".dinosae.lock"}


def test_leftovers_of_a_killed_save_are_removed_at_start(half_run, photos, tmp_path):
    run = _copy(half_run, tmp_path)
    staging = run / "checkpoints" / ".tmp.step_00000003.x1"
    staging.mkdir()
    (staging / "model.safetensors").write_bytes(b"\0" * 1024)
    _train(run, photos["heldout"], None, train=None, resume="latest")
    assert not staging.exists()


def test_weights_that_become_non_finite_stop_the_run_before_a_save(photos, tmp_path, tiny_config, monkeypatch):
    real_step = torch.optim.AdamW.step

    def poisoned(self, *args, **kwargs):
        result = real_step(self, *args, **kwargs)
        self.param_groups[0]["params"][0].data.fill_(float("inf"))
        return result

    _train(tmp_path / "run", photos["heldout"], tiny_config, train={"steps": 2})
    monkeypatch.setattr(torch.optim.AdamW, "step", poisoned)
    with pytest.raises(NonFiniteLossError, match="weights became non-finite by step 3"):
        _train(tmp_path / "run", photos["heldout"], tiny_config, train={"steps": 4}, resume="latest")
    assert load_checkpoint(tmp_path / "run").step == 2


def test_a_folder_of_which_nothing_decodes_trains_nothing(tmp_path, tiny_config):
    data = tmp_path / "data"
    data.mkdir()
    for i in range(5):
        (data / f"{i}.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    Image.new("RGB", (8, 8)).save(data / "x.png")
    (data / "x.png").write_bytes((data / "x.png").read_bytes()[:20])
    with pytest.raises(DataError, match="no readable image on any rank"):
        _train(tmp_path / "run", data, tiny_config, train={"steps": 3, "ckpt_every": 10})
    assert not (tmp_path / "run" / "checkpoints").exists()
