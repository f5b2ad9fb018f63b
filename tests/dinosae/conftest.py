"""Fixtures for the dinosae tests: a small real-photo dataset, a tiny autoencoder config, and
checkpoints of a tiny autoencoder and DiT."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

import dinosae
from dinosae.config import AE_PRESETS, DiTTrainConfig, preset, to_dict
from dinosae.io.checkpoint import Checkpoint, save_checkpoint


@pytest.fixture(scope="session")
def photos(tmp_path_factory) -> dict[str, Path]:
    """64 px crops of the scikit-image photos: ``train`` (32 per photo) and ``heldout`` (4 per photo)."""
    pytest.importorskip("skimage.data")
    from dinosae.data.photos import write_photo_dataset

    return write_photo_dataset(tmp_path_factory.mktemp("photos"), size=64, train_per_photo=32,
                               heldout_per_photo=4)


@pytest.fixture(scope="session")
def three_photos(tmp_path_factory) -> Path:
    """A split root (``train/``, ``heldout/``) of three photo classes: 6 training and 2 held-out crops each."""
    pytest.importorskip("skimage.data")
    from dinosae.data.photos import write_photo_dataset

    root = tmp_path_factory.mktemp("three_photos")
    write_photo_dataset(root, size=64, train_per_photo=6, heldout_per_photo=2,
                        photos=("astronaut", "coffee", "chelsea"))
    return root


@pytest.fixture(scope="session")
def vmf_latents(tmp_path_factory) -> Path:
    """A vMF mixture on 4 tokens x 8 dims with 4 classes, stored as a latent cache (with flips)."""
    from dinosae.data.toy import VMFMixture
    from dinosae.data.latents import write_meta, write_shard

    root = tmp_path_factory.mktemp("latents")
    generator = torch.Generator().manual_seed(0)
    mixture = VMFMixture.random(4, tokens=4, dim=8, kappa=40.0, generator=generator)
    x, y = mixture.sample(512, generator)
    flipped, _ = mixture.sample(512, generator)
    write_shard(root, 0, x[:384], y[:384], flipped[:384])
    write_shard(root, 1, x[384:], y[384:], flipped[384:])
    write_meta(root, {"num": 512, "tokens": 4, "dim": 8, "shard_counts": [384, 128], "num_shards": 2, "flip": True,
                      "classes": ["a", "b", "c", "d"]})
    return root


@pytest.fixture
def tiny_config():
    return preset(AE_PRESETS, "tiny")


@pytest.fixture
def one_thread():
    """Tiny matmuls gain nothing from a second thread, and lose up to 10x when other processes share the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _random_weights(model: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: v + 0.05 * torch.randn(v.shape, generator=g) if v.is_floating_point() else v
            for k, v in model.state_dict().items()}


@pytest.fixture(scope="session")
def models(tmp_path_factory) -> Path:
    """A tiny autoencoder and a tiny DiT with random (not initial: adaLN-Zero would output 0) weights."""
    root = tmp_path_factory.mktemp("models")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ae = dinosae.create_model("ae-tiny")
    save_checkpoint(root / "ae", Checkpoint(step=1, model=ae.state_dict(),
                                            meta={"kind": "autoencoder", "ae_config": to_dict(ae.config)}))
    dit = dinosae.create_model("dit-tiny", in_dim=192, grid_size=4, num_classes=3, hidden_size=32, depth=1,
                               num_heads=2)
    save_checkpoint(root / "dit", Checkpoint(step=1, model=_random_weights(dit, 0), meta={
        "kind": "dit", "dit_config": to_dict(dit.config), "train_config": to_dict(DiTTrainConfig()),
        "classes": ["a", "b", "c"]}))
    return root


def _mount_tmpfs(path: Path, options: str) -> bool:
    import subprocess

    path.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                          capture_output=True).returncode == 0


@pytest.fixture(params=["full", "read-only"])
def unwritable(request, tmp_path_factory):
    """A real filesystem that refuses writes: a full tmpfs (ENOSPC) or a read-only one (EROFS).

    Mounting needs root; elsewhere the tests that use it are skipped (others simulate the errors).
    """
    import subprocess

    root = tmp_path_factory.mktemp("unwritable") / "mnt"
    options = "size=256k" if request.param == "full" else "ro,size=256k"
    if not _mount_tmpfs(root, options):
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        if request.param == "full":
            with open(root / "filler", "wb") as filler:
                try:
                    filler.write(b"\0" * (1 << 20))
                except OSError:
                    pass
        yield root, "No space left on device" if request.param == "full" else "Read-only file system"
    finally:
        subprocess.run(["umount", str(root)], capture_output=True)
