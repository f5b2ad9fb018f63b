"""The shared training loop: train state round trips, the finite guard, and every rank in every step."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import pytest
import torch
from PIL import Image
from torch import nn

from dinosae.io.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from dinosae.runtime import DistEnv
from dinosae.train.ema import EMA
from dinosae.train.loop import FiniteGuard, TrainState
from dinosae.train.runlog import read_metrics


class _WithFrozenPart(nn.Module):
    """A model that, like the autoencoder with a teacher file, does not save its frozen part."""

    def __init__(self) -> None:
        super().__init__()
        self.trained = nn.Linear(3, 2)
        self.frozen = nn.Linear(2, 2).requires_grad_(False)

    def weights_to_save(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.state_dict().items() if k.startswith("trained.")}


def _state(seed: int) -> TrainState:
    torch.manual_seed(seed)
    model, critic = _WithFrozenPart(), nn.Linear(2, 1)
    optimizers = {"optimizer": torch.optim.AdamW(model.trained.parameters(), lr=0.1),
                  "disc_optimizer": torch.optim.AdamW(critic.parameters(), lr=0.1)}
    return TrainState({"model": model, "discriminator": critic}, optimizers, EMA(model, 0.9), extra={"skipped": []})


def _train_a_step(state: TrainState) -> None:
    x = torch.randn(4, 3)
    loss = state.modules["discriminator"](torch.relu(state.model.trained(x))).pow(2).mean()
    loss.backward()
    for optimizer in state.optimizers.values():
        optimizer.step()
        optimizer.zero_grad()
    state.ema.update(state.model)
    state.step += 1
    state.extra["skipped"].append(f"bad_{state.step}.png")


def test_train_state_round_trips_through_a_checkpoint(tmp_path):
    original = _state(0)
    for _ in range(3):
        _train_a_step(original)
    save_checkpoint(tmp_path, original.checkpoint({"kind": "test"}))
    checkpoint = load_checkpoint(tmp_path)
    assert set(checkpoint.model) == {"trained.weight", "trained.bias", "discriminator.weight", "discriminator.bias"}

    restored = _state(1)
    restored.restore(checkpoint)
    assert restored.step == 3 and restored.extra["skipped"] == ["bad_1.png", "bad_2.png", "bad_3.png"]
    assert restored.ema.updates == 3
    for name in ("model", "discriminator"):
        for key, value in original.modules[name].state_dict().items():
            if not key.startswith("frozen."):
                assert torch.equal(restored.modules[name].state_dict()[key], value), (name, key)
    assert not torch.equal(restored.model.frozen.weight, original.model.frozen.weight)  # not saved, not loaded
    for state in (original, restored):  # the optimizers' moments came back too: the next step agrees
        torch.manual_seed(5)
        _train_a_step(state)
    assert torch.equal(original.model.trained.weight, restored.model.trained.weight)
    assert torch.equal(original.ema.shadow["trained.weight"], restored.ema.shadow["trained.weight"])


def test_restore_refuses_weights_that_do_not_fit(tmp_path):
    state = _state(0)
    checkpoint = state.checkpoint({"kind": "test"})
    del checkpoint.model["trained.bias"]
    with pytest.raises(CheckpointError, match="missing \\['trained.bias'\\]"):
        _state(0).restore(checkpoint)


def test_finite_guard_reports_the_first_bad_step_only_when_asked():
    guard = FiniteGuard(torch.device("cpu"))
    assert guard.first_bad_step() is None
    guard.record({"loss": torch.tensor(1.0), "grad_norm": torch.tensor(2.0)}, step=0)
    guard.record({"loss": torch.tensor(1.0), "grad_norm": torch.tensor(float("inf"))}, step=4)
    guard.record({"loss": torch.tensor(float("nan"))}, step=7)
    assert guard.first_bad_step(DistEnv(0, 1, 0, torch.device("cpu"))) == 4


def _mostly_corrupt_folder(root):
    """One readable photo among seven unreadable files: some ranks' batches hold no image at all."""
    root.mkdir()
    Image.effect_noise((64, 64), 60).convert("RGB").save(root / "good.png")
    for i in range(7):
        (root / f"broken_{i}.png").write_bytes(b"\x89PNG not an image")
    return root


def test_a_run_whose_batches_are_all_unreadable_still_checkpoints_every_step(tmp_path, tiny_config):
    from dinosae.config import AETrainConfig
    from dinosae.train.autoencoder import train_autoencoder

    data = _mostly_corrupt_folder(tmp_path / "data")
    config = AETrainConfig(stage=1, steps=4, batch_size=2, lr=1e-3, lpips_weight=0.0, num_workers=0, log_every=1,
                           ckpt_every=2, image_every=10**6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train_autoencoder(tmp_path / "run", data, tiny_config, config, device="cpu")
    final = load_checkpoint(tmp_path / "run")
    assert final.step == 4 and len(final.state["skipped"]) == 7
    assert [r["step"] for r in read_metrics(tmp_path / "run")] == [1, 2, 3, 4]
    assert all(torch.isfinite(v).all() for v in final.model.values())


def test_a_rank_with_no_readable_image_takes_part_in_every_step(tmp_path):
    """Two gloo ranks; in most steps at least one has only unreadable files. Before the shared loop, such
    a rank skipped the step while the other waited in DDP's all-reduce forever."""
    data = _mostly_corrupt_folder(tmp_path / "data")
    config = tmp_path / "fast.json"
    config.write_text('{"train": {"lpips_weight": 0.0, "image_every": 1000, "log_every": 1, "ckpt_every": 2}}')
    env = dict(os.environ, TRITON_INTERPRET="1", OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "dinosae", "train", "ae", "--data", str(data), "--out", str(tmp_path / "run"),
               "--preset", "tiny", "--steps", "4", "--batch-size", "4", "--num-workers", "0", "--device", "cpu",
               "--config", str(config)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    final = load_checkpoint(tmp_path / "run")
    assert final.step == 4
    assert [r["step"] for r in read_metrics(tmp_path / "run")] == [1, 2, 3, 4]


def test_the_log_leaves_out_quantities_without_a_sample(tmp_path):
    from dinosae.train.runlog import RunLogger

    with RunLogger(tmp_path, total_steps=1, tensorboard=False, progress=False) as log:
        log.step(1, {"loss": 0.5, "loss_t<0.5": float("nan")}, images_seen=4)
    (record,) = read_metrics(tmp_path)
    assert record["loss"] == 0.5 and "loss_t<0.5" not in record
