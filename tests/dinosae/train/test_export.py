"""``dinosae export``: a run's model as a folder that loads and samples as the run does, with a model card
written from what the run recorded; what export would destroy is refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dinosae.config import DiTTrainConfig
from dinosae.data.latents import LatentCache
from dinosae.io.checkpoint import CheckpointError
from dinosae.models.loading import load_model, read_model
from dinosae.train.dit import dit_config_for, train_dit
from dinosae.train.export import export_run, stage_history

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def dit_run(tmp_path_factory, vmf_latents) -> Path:
    """A DiT trained for two steps on a latent cache: a run with metrics and EMA weights."""
    run = tmp_path_factory.mktemp("dit_run") / "run"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        # A fast EMA, so that the EMA weights are not still the initial ones (whose output is 0).
        train_dit(run, vmf_latents, dit_config_for(LatentCache(vmf_latents), "tiny"),
                  DiTTrainConfig(steps=2, batch_size=16, lr=1e-3, num_workers=0, log_every=1, time_sampler="uniform",
                                 shift=1.5, ema_decay=0.5), device="cpu")
    finally:
        torch.set_num_threads(threads)
    return run


def test_an_exported_dit_run_samples_as_the_run_does(dit_run, tmp_path):
    folder = export_run(dit_run, tmp_path / "export")
    inputs = (torch.nn.functional.normalize(torch.randn(2, 4, 8, generator=torch.Generator().manual_seed(2)), dim=-1),
              torch.tensor([0.3, 0.7]), torch.tensor([1, 4]))
    with torch.no_grad():
        out = load_model(folder)(*inputs)
    assert out.abs().max() > 0
    with torch.no_grad():
        assert torch.equal(out, load_model(dit_run)(*inputs))
    record = read_model(folder).meta
    assert record["train_config"]["shift"] == 1.5 and record["classes"] == ["a", "b", "c", "d"]
    assert record["source"]["weights"] == "EMA" and record["source"]["step"] == 2
    card = (folder / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: dinosae\nlicense: unknown\n")
    assert "| hidden size | 128 |" in card and "| dit | 2 | 16 | 0.001 |" in card
    assert "Training, the last logged step (2):" in card and "| loss |" in card
    assert "(512 latents of 4 x 8, listing hash" in card and "- Classes: 4 (a, b, c, d)." in card
    raw = export_run(dit_run, tmp_path / "raw", use_ema=False)
    with torch.no_grad():
        assert torch.equal(load_model(raw)(*inputs), load_model(dit_run, use_ema=False)(*inputs))
        assert not torch.equal(load_model(raw)(*inputs), load_model(folder)(*inputs))


def test_an_exported_autoencoder_checkpoint_says_its_teacher_was_random(models, tmp_path):
    folder = export_run(models / "ae", tmp_path / "ae")
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(load_model(folder)(images), load_model(models / "ae")(images))
    card = (folder / "README.md").read_text()
    assert "- random-teacher" in card and "**The teacher was random.**" in card
    assert "`vit_tiny_patch16_dinov3_qkvb`, 12 blocks" in card and "16 tokens x 192 dims" in card


def test_export_refuses_what_it_would_destroy_or_overwrite(models, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="is not empty; pass --force"):
        export_run(models / "dit", out)
    assert (out / "notes.txt").read_text() == "mine"
    export_run(models / "dit", out, force=True)
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    with pytest.raises(ValueError, match="the model being exported"):
        export_run(out, out, force=True)
    with pytest.raises(CheckpointError, match="does not exist"):
        export_run(tmp_path / "missing", tmp_path / "o")


def test_the_stage_history_follows_each_init_and_keeps_what_it_cannot_read(tmp_path):
    assert stage_history({"stage": 2, "init": str(tmp_path / "gone")}) == [
        {"init": str(tmp_path / "gone"), "missing": True}, {"stage": 2, "init": str(tmp_path / "gone")}]
    release = tmp_path / "release.pth"
    torch.save({"w": torch.ones(1)}, release)
    assert stage_history({"stage": 3, "init": str(release)})[0] == {"official": str(release)}


def test_force_never_replaces_a_folder_that_a_live_job_writes(models, tmp_path):
    from dinosae.io.lock import DirectoryLock, DirectoryLockedError

    out = tmp_path / "busy"
    out.mkdir()
    (out / "notes.txt").write_text("a run's")
    with DirectoryLock(out, "run"):
        with pytest.raises(DirectoryLockedError, match="is being written by pid"):
            export_run(models / "dit", out, force=True)
        assert (out / "notes.txt").read_text() == "a run's"
    export_run(models / "dit", out, force=True)  # the job has ended: --force replaces the folder
    assert not (out / "notes.txt").exists()


def test_a_random_teacher_run_exported_with_a_teacher_file_is_refused(models, tmp_path):
    with pytest.raises(CheckpointError, match="trained with a random ViT"):
        export_run(models / "ae", tmp_path / "out", teacher_weights=tmp_path / "dinov3.pth")
    assert not (tmp_path / "out").exists()
    card = (export_run(models / "ae", tmp_path / "plain") / "README.md").read_text()
    assert "**The teacher was random.**" in card
