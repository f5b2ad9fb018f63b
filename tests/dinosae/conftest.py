"""Fixtures for the dinosae tests: a small real-photo dataset and a tiny autoencoder config."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dinosae.config import AE_PRESETS, preset


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
