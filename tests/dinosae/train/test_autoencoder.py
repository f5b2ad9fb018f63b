"""Training the autoencoder: learning on real photos, exact resume, stages, DDP, bad data."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from PIL import Image

from dinosae.config import AETrainConfig
from dinosae.data.images import DataError
from dinosae.io.checkpoint import CheckpointError, load_checkpoint
from dinosae.models.loading import load_model
from dinosae.train.autoencoder import train_autoencoder
from dinosae.train.runlog import read_metrics

FAST = dict(batch_size=4, lpips_weight=0.0, num_workers=0, log_every=1, image_every=10**6)


def _train(run, data, config, stage=1, steps=2, **kwargs):
    settings = {**FAST, "stage": stage, "steps": steps, "lr": 3e-4, **kwargs.pop("train", {})}
    train_config = AETrainConfig(**settings)
    return train_autoencoder(run, data, config, train_config, device="cpu", **kwargs)


def test_resumed_run_takes_exactly_the_same_steps(tmp_path, photos, tiny_config):
    _train(tmp_path / "straight", photos["train"], tiny_config, steps=4, train={"ckpt_every": 2})
    _train(tmp_path / "split", photos["train"], tiny_config, steps=2, train={"ckpt_every": 2})
    _train(tmp_path / "split", photos["train"], tiny_config, steps=4, resume="latest")
    straight, split = read_metrics(tmp_path / "straight"), read_metrics(tmp_path / "split")
    assert [r["step"] for r in split] == [1, 2, 3, 4]
    for a, b in zip(straight, split):
        assert (a["l1"], a["align"], a["loss"]) == (b["l1"], b["align"], b["loss"])
    final_a, final_b = load_checkpoint(tmp_path / "straight"), load_checkpoint(tmp_path / "split")
    for key, value in final_a.model.items():
        assert torch.equal(value, final_b.model[key]), key
    for key, value in final_a.ema.items():
        assert torch.equal(value, final_b.ema[key]), key


def test_stages_load_their_parts_and_frozen_weights_never_move(tmp_path, photos, tiny_config):
    s1 = tmp_path / "s1"
    _train(s1, photos["train"], tiny_config, stage=1)
    stage1 = load_checkpoint(s1)
    vit_before = {k: v for k, v in stage1.model.items() if k.startswith("encoder.vit.")}

    s2 = tmp_path / "s2"
    _train(s2, photos["train"], tiny_config, stage=2, init=s1, train={"steps": 1})
    stage2 = load_checkpoint(s2)
    assert any(k.startswith("discriminator.") for k in stage2.model)
    logged = read_metrics(s2)[-1]
    assert {"gan_g", "gan_d", "disc_acc_real", "disc_acc_fake", "lr"} <= set(logged)
    assert 0.0 <= logged["disc_acc_real"] <= 1.0 and 0.0 <= logged["disc_acc_fake"] <= 1.0

    s3 = tmp_path / "s3"
    _train(s3, photos["train"], tiny_config, stage=3, init=s2)
    stage3 = load_checkpoint(s3)
    stem2 = {k: v for k, v in stage2.ema.items() if k.startswith("encoder.stem.")}
    for key, value in stem2.items():
        assert torch.equal(stage3.model[key], value), f"stage 3 moved the frozen stem: {key}"
    assert not any(k.startswith("encoder.stem.") for k in stage3.ema)
    decoder_key = "decoder.conv_out.conv.weight"  # the tiny preset's head upsamples (its first stage is empty)
    assert not torch.equal(stage3.model[decoder_key], stage2.ema[decoder_key])
    assert "align" not in read_metrics(s3)[-1]

    s4 = tmp_path / "s4"
    _train(s4, photos["train"], tiny_config, stage=4, init=s3)
    stage4 = load_checkpoint(s4)
    for checkpoint in (stage2, stage3, stage4):
        for key, value in vit_before.items():
            assert torch.equal(checkpoint.model[key], value), f"the frozen ViT moved: {key}"
    model = load_model(s4, kind="autoencoder")
    z = model.encode(torch.rand(2, 3, 64, 64))
    torch.testing.assert_close(z.norm(dim=-1), torch.ones(2, 16), atol=4e-7, rtol=0)


def test_stage_two_needs_the_right_kind_of_init(tmp_path, photos, tiny_config):
    with pytest.raises(CheckpointError):
        _train(tmp_path / "s2", photos["train"], tiny_config, stage=2, init=tmp_path / "missing")


def test_existing_run_is_not_overwritten_and_resume_needs_a_run(tmp_path, photos, tiny_config):
    run = tmp_path / "run"
    with pytest.raises(CheckpointError, match="no checkpoint to resume"):
        _train(run, photos["train"], tiny_config, resume="latest")
    _train(run, photos["train"], tiny_config, steps=1)
    before = (run / "checkpoints" / "latest").read_text()
    with pytest.raises(CheckpointError, match="already holds checkpoints"):
        _train(run, photos["train"], tiny_config, steps=1)
    assert (run / "checkpoints" / "latest").read_text() == before


def test_corrupt_image_is_skipped_with_one_warning_and_counted(tmp_path, tiny_config):
    data = tmp_path / "data"
    data.mkdir()
    for i in range(3):
        Image.effect_noise((64, 64), 40 + 10 * i).convert("RGB").save(data / f"{i}.png")
    (data / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _train(tmp_path / "run", data, tiny_config, steps=3)
    named = [w for w in caught if "broken.jpg" in str(w.message) and "skipping" in str(w.message)]
    assert len(named) == 1
    assert load_checkpoint(tmp_path / "run").state["skipped"] == [str(data / "broken.jpg")]


def test_empty_folder_is_a_clear_error(tmp_path, tiny_config):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="contains no images"):
        _train(tmp_path / "run", tmp_path / "empty", tiny_config)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_ddp_gradients_equal_a_single_process_on_the_global_batch(tmp_path):
    sys.path.insert(0, str(Path(__file__).parent))
    import ddp_worker

    out = tmp_path / "ddp_grads.pt"
    env = dict(os.environ, TRITON_INTERPRET="1", OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(Path(ddp_worker.__file__)), str(out)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    distributed = torch.load(out)

    model, config, images = ddp_worker.build()
    from dinosae.train.autoencoder import TrainForward, generator_losses

    losses, _ = generator_losses(TrainForward(model, config), model, images, config, None, None)
    losses["loss"].backward()
    single = ddp_worker.gradients(model)
    assert set(single) == set(distributed)
    for name, grad in single.items():
        torch.testing.assert_close(distributed[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_training_on_photos_raises_heldout_psnr_and_keeps_the_teacher(tmp_path, photos, tiny_config):
    """The tiny preset learns real photos: held-out PSNR rises by a clear margin, tokens stay DINO-like."""
    from dinosae.evaluation.reconstruction import reconstruction_metrics
    from dinosae.models.autoencoder import SphericalAutoencoder

    torch.manual_seed(0)
    untrained = SphericalAutoencoder(tiny_config).eval()
    before = reconstruction_metrics(untrained, photos["heldout"], lpips=_NoLPIPS(), progress=False, num_workers=0)
    run = tmp_path / "run"
    _train(run, photos["train"], tiny_config, steps=60, train={"batch_size": 8, "log_every": 10})
    model = load_model(run, kind="autoencoder")
    after = reconstruction_metrics(model, photos["heldout"], lpips=_NoLPIPS(), progress=False, num_workers=0)
    print(f"held-out PSNR {before['psnr']:.2f} dB untrained -> {after['psnr']:.2f} dB after 60 steps")
    assert after["psnr"] > before["psnr"] + 5.0
    images = torch.stack([item.image for item in _heldout_images(photos["heldout"])])
    with torch.no_grad():
        cosine = torch.nn.functional.cosine_similarity(model.encoder.student_tokens(images),
                                                       model.encoder.teacher_tokens(images), dim=-1)
        latents = model.encode(images)
    assert float(cosine.mean()) > 0.8
    torch.testing.assert_close(latents.norm(dim=-1), torch.ones(latents.shape[:2]), atol=4e-7, rtol=0)


class _NoLPIPS(torch.nn.Module):
    """LPIPS stand-in: these tests measure PSNR, and VGG16 on CPU would dominate their time."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.zeros(a.shape[0])


def _heldout_images(folder: Path):
    from dinosae.data.images import ImageDataset

    dataset = ImageDataset(folder, 64)
    return [dataset[(i, False)] for i in range(len(dataset))]


def test_torchrun_launches_the_command_on_two_cpu_processes(tmp_path, photos):
    config = tmp_path / "fast.json"
    config.write_text('{"train": {"lpips_weight": 0.0, "num_workers": 0, "image_every": 1000, "log_every": 1}}')
    env = dict(os.environ, TRITON_INTERPRET="1", OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "dinosae", "train", "ae", "--data", str(photos["heldout"]), "--out", str(tmp_path / "run"),
               "--preset", "tiny", "--steps", "2", "--batch-size", "4", "--device", "cpu", "--config", str(config)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert load_checkpoint(tmp_path / "run").step == 2
    assert [r["step"] for r in read_metrics(tmp_path / "run")] == [1, 2]


def test_a_nan_loss_stops_the_run_before_it_touches_the_checkpoint(tmp_path, photos, tiny_config, monkeypatch):
    run = tmp_path / "run"
    _train(run, photos["train"], tiny_config, steps=1)
    before = load_checkpoint(run)
    import dinosae.train.autoencoder as ae

    real_l1 = ae.l1_loss
    monkeypatch.setattr(ae, "l1_loss", lambda a, b: real_l1(a, b) * float("nan"))
    from dinosae.train.loop import NonFiniteLossError

    with pytest.raises(NonFiniteLossError, match="non-finite"):
        _train(run, photos["train"], tiny_config, steps=3, resume="latest")
    after = load_checkpoint(run)
    assert after.step == 1
    assert all(torch.equal(v, after.model[k]) for k, v in before.model.items())


def test_gradient_checkpointing_keeps_the_gradients_and_stores_less(tiny_config):
    """--grad-checkpoint recomputes the decoder's stages and LPIPS's VGG: the same gradients, bit for bit,
    from a forward pass that keeps far fewer activations for the backward."""
    from dinosae.metrics.lpips import LPIPS
    from dinosae.models.autoencoder import SphericalAutoencoder
    from dinosae.train.autoencoder import TrainForward, generator_losses, set_trainable

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = SphericalAutoencoder(tiny_config)
    config = AETrainConfig(stage=1, lpips_weight=1.0)
    set_trainable(model, config)
    lpips = LPIPS(validate=False)
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    grads, stored = [], []
    for checkpointing in (False, True):
        model.zero_grad()
        model.decoder.checkpointing = lpips.checkpointing = checkpointing
        saved = []

        def pack(tensor):
            saved.append(tensor.numel() * tensor.element_size())
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            losses, _ = generator_losses(TrainForward(model, config), model, images, config, lpips, None)
        losses["loss"].backward()
        stored.append(sum(saved))
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad})
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, rtol=0, atol=0, msg=name)
    assert stored[1] < 0.6 * stored[0], stored
