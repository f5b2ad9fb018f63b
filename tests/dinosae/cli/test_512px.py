"""512 px (issue 22): 32 x 32 latent tokens, a DiT over 1024 tokens, samples and their evaluation against a
reference of 512 px images. The models at 512 px run in the default tests; every command end to end (about
a minute on 2 cores) is marked slow."""

from __future__ import annotations

import json

import warnings

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import dinosae
from dinosae.cli import main
from dinosae.models.discriminator import DinoDiscriminator
from dinosae.io.checkpoint import load_checkpoint

SIZE = 512


def _ok(*args: object) -> str:
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.stdout


@pytest.fixture(scope="module")
def photos_512(tmp_path_factory):
    pytest.importorskip("skimage.data")
    from dinosae.data.photos import write_photo_dataset

    return write_photo_dataset(tmp_path_factory.mktemp("photos512"), size=SIZE, train_per_photo=1,
                               heldout_per_photo=1, photos=("astronaut", "coffee"))["heldout"]


def test_the_models_run_at_512_px():
    """RoPE places the ViT's 1024 tokens, the discriminator taps them, the DiT embeds a 32 x 32 grid."""
    generator = torch.Generator().manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ae = dinosae.create_model("ae-tiny", image_size=SIZE).eval()
    images = torch.rand(1, 3, SIZE, SIZE, generator=generator)
    with torch.no_grad():
        latents = ae.encode(images)
        assert latents.shape == (1, 1024, ae.latent_dim)
        assert ae.encoder.teacher_tokens(images).shape == (1, 1024, ae.latent_dim)
        assert ae.decode(latents).shape == (1, 3, SIZE, SIZE)
        assert DinoDiscriminator(ae.latent_dim, depths=(3, 7))(images, ae.encoder.vit).shape[0] == 1
        dit = dinosae.create_model("dit-tiny", in_dim=ae.latent_dim, grid_size=SIZE // 16, num_classes=2,
                                   hidden_size=32, depth=1, num_heads=2)
        velocity = dit(latents, torch.full((1,), 0.5), torch.tensor([1]))
    assert velocity.shape == latents.shape and torch.isfinite(velocity).all()


@pytest.mark.slow
def test_every_command_runs_at_512_px(tmp_path, photos_512):
    common = ["--preset", "tiny", "--image-size", SIZE, "--batch-size", "2", "--num-workers", "0", "--device",
              "cpu"]
    config = tmp_path / "fast.yaml"
    config.write_text("train:\n  image_every: 1000\n")
    _ok("train", "ae", "--data", photos_512, "--out", tmp_path / "s1", "--steps", "1", *common, "--config", config)
    # Stage 2 adds the DINO discriminator's feature taps and LPIPS at the full resolution.
    _ok("train", "ae", "--data", photos_512, "--out", tmp_path / "s2", "--stage", "2", "--init", tmp_path / "s1",
        "--steps", "1", *common, "--config", config)
    ae = load_checkpoint(tmp_path / "s2")
    assert ae.meta["ae_config"]["image_size"] == SIZE

    _ok("encode", "--ckpt", tmp_path / "s2", "--data", photos_512, "--out", tmp_path / "latents",
        "--num-workers", "0")
    meta = json.loads((tmp_path / "latents" / "meta.json").read_text())
    assert meta["tokens"] == (SIZE // 16) ** 2 == 1024

    _ok("train", "dit", "--latents", tmp_path / "latents", "--out", tmp_path / "dit", "--preset", "tiny",
        "--steps", "1", "--batch-size", "2", "--num-workers", "0", "--device", "cpu")
    assert load_checkpoint(tmp_path / "dit").meta["dit_config"]["grid_size"] == SIZE // 16

    _ok("sample", "--ae", tmp_path / "s2", "--dit", tmp_path / "dit", "--out", tmp_path / "samples", "--num", "4",
        "--steps", "2", "--no-png")
    with np.load(tmp_path / "samples" / "samples.npz") as stored:
        assert stored["arr_0"].shape == (4, SIZE, SIZE, 3)

    # ADM's 512 px reference batch has the 256 px one's layout: images arr_0 (N, 512, 512, 3) and statistics.
    # Precision and recall take 3 nearest neighbours, so each set needs 4 images at least.
    reference = np.random.default_rng(0).integers(0, 256, (4, SIZE, SIZE, 3), dtype=np.uint8)
    np.savez(tmp_path / "VIRTUAL_imagenet512.npz", arr_0=reference)
    result = json.loads(_ok("eval", "gen", "--samples", tmp_path / "samples" / "samples.npz", "--ref",
                            tmp_path / "VIRTUAL_imagenet512.npz", "--device", "cpu", "--json").splitlines()[-1])
    assert np.isfinite(result["fid"]) and result["num_reference_images"] == 4

    metrics = json.loads(_ok("eval", "recon", "--ckpt", tmp_path / "s2", "--data", photos_512, "--limit", "2",
                             "--json").splitlines()[-1])
    assert metrics["images"] == 2 and np.isfinite(metrics["psnr"])


def test_a_256_px_reference_refuses_512_px_samples(tmp_path):
    rng = np.random.default_rng(1)
    np.savez(tmp_path / "samples.npz", arr_0=rng.integers(0, 256, (2, SIZE, SIZE, 3), dtype=np.uint8))
    np.savez(tmp_path / "ref.npz", arr_0=rng.integers(0, 256, (2, 256, 256, 3), dtype=np.uint8))
    result = CliRunner().invoke(main, ["eval", "gen", "--samples", str(tmp_path / "samples.npz"), "--ref",
                                       str(tmp_path / "ref.npz"), "--device", "cpu"])
    assert result.exit_code != 0 and "samples are 512x512 px, the reference images 256x256" in result.output
