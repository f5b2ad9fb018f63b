"""Improved precision/recall against a brute-force scipy computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist

from dinosae.metrics.precision_recall import knn_radii, precision_recall


def _brute_force(real: np.ndarray, fake: np.ndarray, k: int) -> tuple[float, float]:
    real_radii = np.sort(cdist(real, real), axis=1)[:, k]  # column 0 is each point itself
    fake_radii = np.sort(cdist(fake, fake), axis=1)[:, k]
    precision = (cdist(fake, real) <= real_radii[None, :]).any(axis=1).mean()
    recall = (cdist(real, fake) <= fake_radii[None, :]).any(axis=1).mean()
    return float(precision), float(recall)


def _sets(seed: int, n_real: int = 130, n_fake: int = 110, dim: int = 12):
    rng = np.random.default_rng(seed)
    real = rng.standard_normal((n_real, dim))
    # partly overlapping: a shifted, wider cloud, so both metrics land strictly inside (0, 1)
    fake = rng.standard_normal((n_fake, dim)) * 1.4 + 0.8
    return real, fake


@pytest.mark.parametrize("k, chunk_size", [(3, 10000), (3, 17), (5, 64), (1, 7)])
def test_matches_brute_force(k, chunk_size):
    real, fake = _sets(seed=k + chunk_size)
    expected = _brute_force(real, fake, k)
    assert 0 < expected[0] < 1 and 0 < expected[1] < 1
    got = precision_recall(torch.from_numpy(real), torch.from_numpy(fake), k=k, chunk_size=chunk_size)
    assert got == pytest.approx(expected, abs=1e-12)


def test_float32_agrees_with_float64_brute_force():
    real, fake = _sets(seed=11, n_real=300, n_fake=250, dim=32)
    expected = _brute_force(real, fake, 3)
    got = precision_recall(torch.from_numpy(real).float(), torch.from_numpy(fake).float(), chunk_size=100)
    # float32 rounding may flip a point sitting on a ball's boundary, nothing more
    assert got.precision == pytest.approx(expected[0], abs=2 / 250)
    assert got.recall == pytest.approx(expected[1], abs=2 / 300)


def test_knn_radii_match_sorted_distances():
    real, _ = _sets(seed=12)
    expected = np.sort(cdist(real, real), axis=1)[:, 4]
    got = knn_radii(torch.from_numpy(real), k=4, chunk_size=33)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10)


def test_identical_sets_give_one_and_far_sets_zero():
    real = torch.randn(150, 16)
    assert precision_recall(real, real.clone()) == (1.0, 1.0)
    assert precision_recall(real, torch.randn(120, 16) + 50.0) == (0.0, 0.0)


def test_bad_inputs_raise():
    real = torch.randn(20, 4)
    with pytest.raises(ValueError, match="dimension"):
        precision_recall(real, torch.randn(20, 5))
    with pytest.raises(ValueError, match="k must"):
        precision_recall(real, torch.randn(3, 4), k=3)
    with pytest.raises(ValueError, match="NaN"):
        precision_recall(real, torch.full((20, 4), float("nan")))
    with pytest.raises(ValueError, match="shape"):
        precision_recall(real, torch.randn(20))
    with pytest.raises(ValueError, match="floating"):
        precision_recall(real, torch.ones(20, 4, dtype=torch.long))
