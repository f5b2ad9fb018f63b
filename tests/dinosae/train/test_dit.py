"""Training the DiT on a latent cache: learning, exact resume, both manifolds, old runs, and sampling to files."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dataclasses import replace

from dinosae.config import DIT_PRESETS, DiTTrainConfig
from dinosae.pipelines.sample import class_labels, generate_latents, write_samples
from dinosae.io.checkpoint import load_checkpoint
from dinosae.data.latents import LatentCache, LatentCacheError
from dinosae.models.loading import load_model
from dinosae.train.dit import dit_config_for, train_dit
from dinosae.train.runlog import read_metrics

FAST = dict(batch_size=64, lr=1e-3, num_workers=0, log_every=1, time_sampler="uniform", shift=1.0)


def _small(vmf_latents):
    return dit_config_for(LatentCache(vmf_latents), "tiny")


pytestmark = pytest.mark.usefixtures("one_thread")


def test_flow_matching_loss_goes_down(tmp_path, vmf_latents):
    train_dit(tmp_path / "run", vmf_latents, _small(vmf_latents), DiTTrainConfig(steps=150, **FAST), device="cpu")
    losses = [r["loss"] for r in read_metrics(tmp_path / "run")]
    print(f"RFM loss, mean of the first and last 25 steps: {np.mean(losses[:25]):.3f} -> {np.mean(losses[-25:]):.3f}")
    assert np.mean(losses[-25:]) < 0.7 * np.mean(losses[:25])


def test_resumed_dit_run_is_exact(tmp_path, vmf_latents):
    config = _small(vmf_latents)
    train_dit(tmp_path / "a", vmf_latents, config, DiTTrainConfig(steps=4, ckpt_every=2, **FAST), device="cpu")
    train_dit(tmp_path / "b", vmf_latents, config, DiTTrainConfig(steps=2, ckpt_every=2, **FAST), device="cpu")
    train_dit(tmp_path / "b", vmf_latents, None, DiTTrainConfig(steps=4, **FAST), resume="latest", device="cpu")
    assert [r["loss"] for r in read_metrics(tmp_path / "a")] == [r["loss"] for r in read_metrics(tmp_path / "b")]
    a, b = load_checkpoint(tmp_path / "a"), load_checkpoint(tmp_path / "b")
    assert all(torch.equal(v, b.model[k]) for k, v in a.model.items())


def test_euclidean_baseline_trains_and_samples_on_the_spheres(tmp_path, vmf_latents):
    config = replace(_small(vmf_latents), manifold="euclidean", prediction="x1")
    train_dit(tmp_path / "run", vmf_latents, config, DiTTrainConfig(steps=3, **FAST), device="cpu")
    model = load_model(tmp_path / "run", kind="dit")
    assert (model.config.manifold, model.config.prediction) == ("euclidean", "x1")
    latents = generate_latents(model, torch.tensor([0, 1]), steps=3)
    torch.testing.assert_close(latents.norm(dim=-1), torch.ones(2, 4), atol=1e-5, rtol=0)


def test_cache_that_does_not_fit_the_model_is_refused(tmp_path, vmf_latents):
    config = DIT_PRESETS["tiny"]
    with pytest.raises(LatentCacheError, match="expects"):
        train_dit(tmp_path / "run", vmf_latents, config, DiTTrainConfig(steps=1, **FAST), device="cpu")


def test_samples_are_seeded_and_written_for_fid_evaluators(tmp_path, vmf_latents):
    train_dit(tmp_path / "run", vmf_latents, _small(vmf_latents), DiTTrainConfig(steps=2, **FAST), device="cpu")
    model = load_model(tmp_path / "run", kind="dit")
    labels = class_labels(6, model.config.num_classes)
    first = generate_latents(model, labels, steps=4, cfg=2.0, generator=torch.Generator().manual_seed(3))
    again = generate_latents(model, labels, steps=4, cfg=2.0, generator=torch.Generator().manual_seed(3))
    assert torch.equal(first, again)
    images = np.random.default_rng(0).integers(0, 256, (6, 16, 16, 3), dtype=np.uint8)  # decoded stand-ins
    paths = write_samples(tmp_path / "samples", images, labels, ["a", "b", "c", "d"])
    with np.load(paths["npz"]) as stored:
        assert stored["arr_0"].dtype == np.uint8 and stored["arr_0"].shape == (6, 16, 16, 3)
        assert stored["labels"].tolist() == [0, 1, 2, 3, 0, 1]
    assert sorted(p.name for p in paths["images"].iterdir())[:2] == ["000000_a.png", "000001_b.png"]


def test_class_labels_reject_unknown_classes():
    with pytest.raises(ValueError, match="outside"):
        class_labels(4, 3, [5])


def test_block_checkpointing_trains_the_same_weights(tmp_path, vmf_latents):
    for checkpointing in (False, True):
        train_dit(tmp_path / str(checkpointing), vmf_latents, _small(vmf_latents),
                  DiTTrainConfig(steps=2, grad_checkpoint=checkpointing, **FAST), device="cpu")
    plain, recomputed = load_checkpoint(tmp_path / "False"), load_checkpoint(tmp_path / "True")
    assert plain.meta["train_config"]["grad_checkpoint"] is False
    for name, value in plain.model.items():
        assert torch.equal(value, recomputed.model[name]), name


def test_a_run_of_an_older_unreleased_format_is_refused_in_one_line(tmp_path, vmf_latents):
    """Configs from before the flow layer (``path`` in the training config, ``input_scale`` in the model's) were
    never released: such a run is refused by the name of the field, not read with a guess."""
    from dinosae.io.checkpoint import save_checkpoint

    train_dit(tmp_path / "run", vmf_latents, _small(vmf_latents), DiTTrainConfig(steps=2, **FAST), device="cpu")
    new = load_checkpoint(tmp_path / "run")
    old_meta = dict(new.meta, dit_config={**new.meta["dit_config"], "input_scale": None, "output_scale": 1.0})
    save_checkpoint(tmp_path / "old", replace(new, meta=old_meta))
    with pytest.raises(ValueError, match="unknown key 'input_scale'") as error:
        load_model(tmp_path / "old", kind="dit")
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match="unknown key 'input_scale'"):
        train_dit(tmp_path / "old", vmf_latents, None, DiTTrainConfig(steps=4, **FAST), resume="latest", device="cpu")
