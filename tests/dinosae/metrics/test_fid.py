"""FID against closed forms and an eigenvalue computation; feature statistics; Inception Score."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.special
import torch
from PIL import Image

from dinosae.metrics.fid import FeatureStats, compute_fid, compute_stats, frechet_distance, inception_score, save_stats


def _eigen_fid(mu1, sigma1, mu2, sigma2) -> float:
    """tr sqrt(S1 S2) as the eigenvalues of the symmetric S1^1/2 S2 S1^1/2: no sqrtm involved."""
    w, v = np.linalg.eigh(sigma1)
    root = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    eig = np.linalg.eigvalsh(root @ sigma2 @ root)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.sqrt(np.clip(eig, 0, None)).sum())


def _random_stats(rng, n, d, scale=1.0, shift=0.0):
    x = rng.standard_normal((n, d)) @ rng.standard_normal((d, d)) * scale + shift
    return x.mean(axis=0), np.cov(x, rowvar=False)


def test_fid_of_a_set_with_itself_is_zero_and_bitwise_reproducible():
    rng = np.random.default_rng(0)
    mu, sigma = _random_stats(rng, 400, 48)
    first = frechet_distance(mu, sigma, mu, sigma)
    assert abs(first) < 1e-8
    assert frechet_distance(mu.copy(), sigma.copy(), mu.copy(), sigma.copy()) == first
    other = _random_stats(rng, 400, 48, shift=0.3)
    assert frechet_distance(mu, sigma, *other) == frechet_distance(mu, sigma, *other)


def test_diagonal_covariances_match_closed_form():
    rng = np.random.default_rng(1)
    mu1, mu2 = rng.standard_normal(30), rng.standard_normal(30)
    s1, s2 = rng.uniform(0.1, 3, 30), rng.uniform(0.1, 3, 30)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(s1) - np.sqrt(s2)) ** 2)
    assert frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected, rel=1e-10)


def test_commuting_covariances_match_closed_form():
    rng = np.random.default_rng(2)
    q, _ = np.linalg.qr(rng.standard_normal((40, 40)))
    a, b = rng.uniform(0.05, 4, 40), rng.uniform(0.05, 4, 40)
    mu1, mu2 = rng.standard_normal(40), rng.standard_normal(40) + 1
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    got = frechet_distance(mu1, q @ np.diag(a) @ q.T, mu2, q @ np.diag(b) @ q.T)
    assert got == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("n", [300, 20])  # 20 samples in 64-D: singular covariances
def test_general_covariances_match_eigenvalue_computation(n):
    rng = np.random.default_rng(3)
    stats1 = _random_stats(rng, n, 64)
    stats2 = _random_stats(rng, n, 64, scale=1.3, shift=0.2)
    expected = _eigen_fid(*stats1, *stats2)
    assert frechet_distance(*stats1, *stats2) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("n, d", [(30, 64), (64, 64), (2048, 64)], ids=["fewer samples than dims", "square", "many"])
def test_ill_conditioned_covariances_give_finite_reproducible_distances(n, d):
    """Rank-deficient (n < d) and near-singular covariances, where sqrtm of the product goes complex or
    NaN: finite, non-negative, symmetric in its arguments, bitwise reproducible, and equal to the
    test's own eigenvalue computation."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((n, d)) @ np.diag(np.logspace(0, -6, d))  # condition number 1e12
    y = rng.standard_normal((n, d)) @ np.diag(np.logspace(0, -6, d)) * 1.1 + 0.01
    a = (x.mean(0), np.cov(x, rowvar=False))
    b = (y.mean(0), np.cov(y, rowvar=False))
    first = frechet_distance(*a, *b)
    assert np.isfinite(first) and first >= 0
    assert frechet_distance(*a, *b) == first
    assert frechet_distance(*b, *a) == pytest.approx(first, rel=1e-9, abs=1e-12)
    assert first == pytest.approx(_eigen_fid(*a, *b), rel=1e-9, abs=1e-12)


def test_a_matrix_that_is_no_covariance_is_refused():
    with pytest.raises(ValueError, match="not a covariance"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), -np.eye(3))
    with pytest.raises(ValueError, match="not symmetric"):
        frechet_distance(np.zeros(2), np.array([[1.0, 0.5], [0.0, 1.0]]), np.zeros(2), np.eye(2))


@pytest.mark.parametrize("args, message", [
    ((np.zeros(3), np.eye(3), np.zeros(4), np.eye(4)), "differ in dimension"),
    ((np.zeros(3), np.eye(2), np.zeros(3), np.eye(3)), "shape"),
    ((np.zeros((3, 1)), np.eye(3), np.zeros(3), np.eye(3)), "vector"),
    ((np.array([0.0, np.nan, 0.0]), np.eye(3), np.zeros(3), np.eye(3)), "NaN"),
    ((np.zeros(3), np.diag([np.inf, 1.0, 1.0]), np.zeros(3), np.eye(3)), "NaN"),
])
def test_bad_statistics_raise(args, message):
    with pytest.raises(ValueError, match=message):
        frechet_distance(*args)


def test_feature_stats_match_numpy_over_uneven_batches():
    rng = np.random.default_rng(4)
    # a large common offset: raw sums of squares would lose most digits here
    x = rng.standard_normal((257, 16)) * 0.01 + 1e4
    stats = FeatureStats()
    for chunk in np.array_split(x, [1, 40, 41, 200]):
        stats.update(torch.from_numpy(chunk))
    mu, sigma = stats.compute()
    assert stats.count == 257
    np.testing.assert_allclose(mu, x.mean(axis=0), rtol=1e-14)
    np.testing.assert_allclose(sigma, np.cov(x, rowvar=False), rtol=1e-8, atol=1e-14)


def test_feature_stats_accept_float32_and_reject_bad_batches():
    x = torch.randn(50, 8)
    stats = FeatureStats()
    stats.update(x)
    mu, sigma = stats.compute()
    assert mu.dtype == np.float64 and sigma.dtype == np.float64
    np.testing.assert_allclose(sigma, np.cov(x.double().numpy(), rowvar=False), rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match="dimension"):
        stats.update(torch.randn(4, 9))
    with pytest.raises(ValueError, match="NaN"):
        stats.update(torch.full((4, 8), float("nan")))
    with pytest.raises(ValueError, match="shape"):
        stats.update(torch.randn(8))
    with pytest.raises(ValueError, match="at least 2"):
        FeatureStats().compute()


def _pixel_means(images: torch.Tensor) -> torch.Tensor:
    """A cheap deterministic stand-in for Inception: 4x4-pooled pixels (48 features)."""
    return torch.nn.functional.adaptive_avg_pool2d(images, 4).flatten(1)


def test_stats_from_folder_npz_and_saved_stats_agree(tmp_path):
    rng = np.random.default_rng(5)
    images = rng.integers(0, 256, (9, 12, 10, 3), dtype=np.uint8)
    folder = tmp_path / "images"
    folder.mkdir()
    for i, image in enumerate(images):
        Image.fromarray(image).save(folder / f"{i:02d}.png")
    np.savez(tmp_path / "images.npz", images)
    from_folder = compute_stats(folder, _pixel_means, batch_size=4)
    from_npz = compute_stats(tmp_path / "images.npz", _pixel_means, batch_size=2)
    direct = _pixel_means(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255).double().numpy()
    for got in (from_folder, from_npz):
        np.testing.assert_allclose(got[0], direct.mean(axis=0), rtol=1e-13)
        np.testing.assert_allclose(got[1], np.cov(direct, rowvar=False), rtol=1e-10, atol=1e-15)
    save_stats(tmp_path / "stats.npz", *from_folder)
    reloaded = compute_stats(tmp_path / "stats.npz")
    assert np.array_equal(reloaded[0], from_folder[0]) and np.array_equal(reloaded[1], from_folder[1])
    seen = []
    assert abs(compute_fid(folder, tmp_path / "images.npz", _pixel_means, batch_size=4, progress=seen.append)) < 1e-6
    assert sum(seen) == 18


def test_inception_score_extremes():
    assert inception_score(torch.zeros(64, 1008).add_(3.0), splits=4) == pytest.approx((1.0, 0.0), abs=1e-12)
    confident = 40.0 * torch.eye(10)
    assert inception_score(confident, splits=1)[0] == pytest.approx(10.0, rel=1e-12)
    # three splits, each holding 5 distinct classes
    labels = torch.arange(15) % 5
    mean, std = inception_score(40.0 * torch.nn.functional.one_hot(labels, 7).double(), splits=3)
    assert mean == pytest.approx(5.0, rel=1e-12) and std == pytest.approx(0.0, abs=1e-9)


def test_inception_score_matches_entropy_formula():
    """IS = exp(H(mean p) - mean H(p)) per split, computed with scipy."""
    generator = torch.Generator().manual_seed(6)
    logits = 3 * torch.randn(88, 20, generator=generator, dtype=torch.float64)
    probs = scipy.special.softmax(logits.numpy(), axis=1)
    scores = []
    for part in np.array_split(probs, 4):
        marginal_entropy = scipy.special.entr(part.mean(axis=0)).sum()
        mean_entropy = scipy.special.entr(part).sum(axis=1).mean()
        scores.append(np.exp(marginal_entropy - mean_entropy))
    mean, std = inception_score(logits, splits=4)
    assert mean == pytest.approx(np.mean(scores), rel=1e-10)
    assert std == pytest.approx(np.std(scores), rel=1e-8)


def test_inception_score_rejects_bad_input():
    with pytest.raises(ValueError, match="splits"):
        inception_score(torch.randn(5, 10), splits=6)
    with pytest.raises(ValueError, match="NaN"):
        inception_score(torch.full((5, 10), float("nan")), splits=1)
