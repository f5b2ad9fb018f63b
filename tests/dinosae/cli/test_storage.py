"""Every command that writes stops with one line naming the file when the disk is full or read-only,
and leaves neither a temporary file nor its lock behind."""

from __future__ import annotations

import errno

import pytest
from click.testing import CliRunner
from safetensors import SafetensorError

from dinosae.cli import main


@pytest.fixture(scope="module")
def latents(tmp_path_factory, models, photos):
    out = tmp_path_factory.mktemp("storage") / "latents"
    result = CliRunner().invoke(main, ["encode", "--ckpt", str(models / "ae"), "--data", str(photos["heldout"]),
                                       "--out", str(out), "--num-workers", "0", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    return out


def _commands(models, photos, latents, target):
    data, ae, dit = str(photos["heldout"]), str(models / "ae"), str(models / "dit")
    cpu = ["--device", "cpu"]
    return {
        "train ae": ["train", "ae", "--data", data, "--out", f"{target}/run", "--preset", "tiny", "--steps", "1",
                     "--batch-size", "2", "--num-workers", "0", *cpu],
        "train dit": ["train", "dit", "--latents", str(latents), "--out", f"{target}/dit", "--preset", "tiny",
                      "--steps", "1", "--batch-size", "2", "--num-workers", "0", *cpu],
        "encode": ["encode", "--ckpt", ae, "--data", data, "--out", f"{target}/latents", "--num-workers", "0", *cpu],
        "sample": ["sample", "--ae", ae, "--dit", dit, "--out", f"{target}/samples", "--num-samples", "2",
                   "--steps", "1", *cpu],
        "reconstruct": ["reconstruct", "--ckpt", ae, "--data", data, "--out", f"{target}/rec", "--limit", "2", *cpu],
        "eval recon": ["eval", "recon", "--ckpt", ae, "--data", data, "--out", f"{target}/metrics", "--limit", "2",
                       *cpu],
    }


@pytest.mark.parametrize("command", ["train ae", "train dit", "encode", "sample", "reconstruct", "eval recon"])
def test_an_unwritable_disk_is_one_line_naming_the_file(command, unwritable, models, photos, latents):
    target, reason = unwritable
    result = CliRunner().invoke(main, _commands(models, photos, latents, target)[command])
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert result.exit_code == 1 and len(errors) == 1, result.output + repr(result.exception)
    assert reason in errors[0] and str(target) in errors[0], errors[0]
    leftovers = [p for p in target.rglob("*") if p.name.startswith(".tmp.") or p.name == ".dinosae.lock"]
    assert leftovers == []


def test_a_full_disk_during_a_checkpoint_names_the_file(tmp_path, monkeypatch):
    """The same where no tmpfs can be mounted: safetensors reports ENOSPC in its own words."""
    import torch

    import dinosae.io.checkpoint as checkpoint_module
    from dinosae.cli.options import describe, is_user_error

    def full(*args, **kwargs):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(checkpoint_module, "save_file", full)
    with pytest.raises(OSError) as caught:
        checkpoint_module.save_checkpoint(tmp_path, checkpoint_module.Checkpoint(step=1, model={"w": torch.ones(2)}))
    assert caught.value.errno == errno.ENOSPC and is_user_error(caught.value)
    assert describe(caught.value) == f"No space left on device: {tmp_path}/checkpoints/step_00000001/model.safetensors"
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == []
