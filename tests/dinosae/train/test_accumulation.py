"""Gradient accumulation: micro-batches give the gradients and weights of the full batch, in one process and
on two ranks.

Adam's first steps move each weight by about ``lr`` whatever its gradient's size, so rounding in a gradient
that is nearly zero (a fresh discriminator's bias) moves weights by up to a few percent of ``lr``, and every
later gradient with them; and Adam does not see a gradient's scale at all. Hence the gradients of a step are
compared directly where a test can reach them, and across processes through the logged gradient norms
beside the weights.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from helpers import run_dinosae

import dinosae.train.autoencoder as autoencoder_trainer
import dinosae.train.dit as dit_trainer
from dinosae.config import AETrainConfig, DiTTrainConfig
from dinosae.io.checkpoint import load_checkpoint
from dinosae.data.latents import LatentCache
from dinosae.train.autoencoder import train_autoencoder
from dinosae.train.dit import dit_config_for, train_dit
from dinosae.train.loop import optimizer_step
from dinosae.train.runlog import read_metrics

pytestmark = pytest.mark.usefixtures("one_thread")
LR = 1e-3


def _recording(module, monkeypatch) -> list[dict[str, torch.Tensor]]:
    """Every gradient the trainer in ``module`` hands to its optimizers, in order."""
    recorded: list[dict[str, torch.Tensor]] = []

    def step(optimizer, params, clip):
        params = list(params)
        recorded.append({f"{i}": p.grad.clone() for i, p in enumerate(params) if p.grad is not None})
        return optimizer_step(optimizer, params, clip)

    monkeypatch.setattr(module, "optimizer_step", step)
    return recorded


def _assert_same_gradients(first, second):
    assert len(first) == len(second)
    for step, (a, b) in enumerate(zip(first, second)):
        assert a.keys() == b.keys()
        for name, grad in a.items():
            # Norm-wise, float32: a bias sums ~1e5 pixel terms that mostly cancel, so the order of the
            # sum moves it by ~4e-5, and a hinge loss's bias gradient is 0 up to rounding (hence the
            # floor); a wrong weighting would be off by O(1).
            error = float((b[name] - grad).norm() / (grad.norm() + 1e-4))
            assert error < 1e-4, f"update {step}, parameter {name}: relative error {error:.2e}"


def _assert_close_weights(a, b):
    """Root-mean-square per tensor: Adam's first update is about LR times the gradient's sign, so the few
    weights whose gradient is zero up to rounding may move apart by up to 2 LR (a different summation order,
    e.g. another CPU's vector width, flips them); a wrongly weighted rank or batch moves whole tensors."""
    first, second = load_checkpoint(a), load_checkpoint(b)
    assert first.model.keys() == second.model.keys()
    for name, value in first.model.items():
        if value.is_floating_point():
            rms = float((second.model[name] - value).float().pow(2).mean().sqrt())
            assert rms < 0.01 * LR, f"{name}: weights differ by {rms:.2e} (root mean square)"
        else:
            assert torch.equal(second.model[name], value), name


def _assert_close_grad_norms(a, b):
    """The first step's gradient norms agree to rounding; later ones follow weights that Adam's sign-like
    first update may have moved apart a little (see :func:`_assert_close_weights`)."""
    first, second = _grad_norms(a), _grad_norms(b)
    assert first[0] == pytest.approx(second[0], rel=1e-5)
    assert first[1:] == pytest.approx(second[1:], rel=1e-4)


@pytest.mark.parametrize("stage, extra", [(1, {}), (2, {"gan_adaptive": False}), (4, {"gan_weight": 0.0})],
                         ids=["stem+decoder", "gan", "latent-noise"])
def test_autoencoder_micro_batches_give_the_full_batch_gradients(tmp_path, photos, tiny_config, monkeypatch,
                                                                 stage, extra):
    settings = dict(stage=stage, steps=1, batch_size=8, lr=LR, lpips_weight=0.0, num_workers=0, image_every=10**6,
                    noise_max=0.4, **extra)
    gradients = {}
    for accum in (1, 2, 4):
        gradients[accum] = _recording(autoencoder_trainer, monkeypatch)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            train_autoencoder(tmp_path / f"accum{accum}", photos["heldout"], tiny_config,
                              AETrainConfig(**settings, grad_accum=accum), device="cpu")
    assert len(gradients[1]) == (2 if stage == 2 else 1)  # stage 2 also steps its discriminator
    for accum in (2, 4):
        _assert_same_gradients(gradients[1], gradients[accum])


def test_dit_micro_batches_give_the_full_batch_gradients(tmp_path, vmf_latents, monkeypatch):
    config = dit_config_for(LatentCache(vmf_latents), "tiny")
    gradients = {}
    for accum in (1, 4):
        gradients[accum] = _recording(dit_trainer, monkeypatch)
        train_dit(tmp_path / f"accum{accum}", vmf_latents, config,
                  DiTTrainConfig(steps=1, batch_size=32, lr=LR, num_workers=0, grad_accum=accum), device="cpu")
    _assert_same_gradients(gradients[1], gradients[4])


def _grad_norms(run):
    return [record["grad_norm"] for record in read_metrics(run)]


def test_two_ranks_with_micro_batches_train_as_one_process(tmp_path, photos):
    """Stage 1 draws nothing at random: ranks and micro-batches change only rounding."""
    config = tmp_path / "fast.json"
    config.write_text('{"train": {"lpips_weight": 0.0, "image_every": 1000, "num_workers": 0, "lr": 0.001, '
                      '"log_every": 1}}')
    common = ["train", "ae", "--data", photos["heldout"], "--preset", "tiny", "--steps", "2", "--batch-size", "8",
              "--device", "cpu", "--config", config]
    run_dinosae(*common, "--out", tmp_path / "one")
    run_dinosae(*common, "--out", tmp_path / "two", "--grad-accum", "2", ranks=2)
    _assert_close_grad_norms(tmp_path / "two", tmp_path / "one")
    _assert_close_weights(tmp_path / "one", tmp_path / "two")


def test_two_dit_ranks_with_micro_batches_match_two_ranks_without(tmp_path, vmf_latents):
    """Each rank draws its own noise, so two ranks are compared with two ranks."""
    common = ["train", "dit", "--latents", vmf_latents, "--preset", "tiny", "--steps", "2", "--batch-size", "16",
              "--num-workers", "0", "--lr", LR, "--device", "cpu"]
    run_dinosae(*common, "--out", tmp_path / "plain", ranks=2)
    run_dinosae(*common, "--out", tmp_path / "accum", "--grad-accum", "2", ranks=2)
    _assert_close_grad_norms(tmp_path / "accum", tmp_path / "plain")
    _assert_close_weights(tmp_path / "plain", tmp_path / "accum")
