"""Fréchet Inception Distance and Inception Score.

FID is computed in float64 from feature means and covariances, which come from a
running accumulator (``FeatureStats``), from image sets (``compute_stats``: a folder or a
uint8 ``.npz``), or from precomputed statistics (an ``.npz`` with ``mu`` and ``sigma``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from ._checks import check_features
from .folder import ImageSource, open_npz

# A covariance may have eigenvalues below zero by rounding only: relative to its largest.
PSD_TOLERANCE = 1e-6


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     names: tuple[str, str, str, str] = ("mu1", "sigma1", "mu2", "sigma2")) -> float:
    """Fréchet distance between Gaussians N(mu1, sigma1) and N(mu2, sigma2), in float64.

    ``names`` are what errors call the four arguments (``"the reference's mu"``, ...).

    ``|mu1 - mu2|^2 + tr(sigma1) + tr(sigma2) - 2 tr sqrt(sigma1 sigma2)``, where
    ``tr sqrt(sigma1 sigma2)`` is computed as the sum of the square roots of the
    eigenvalues of the symmetric matrix ``sqrt(sigma1) sigma2 sqrt(sigma1)``
    (``torch.linalg.eigh`` in float64 on the CPU). Unlike ``scipy.linalg.sqrtm`` of the non-symmetric
    product, this is real, finite and deterministic for any positive
    semi-definite covariances, singular or ill-conditioned ones included (fewer
    samples than feature dimensions), with no offset added. Rounding makes
    eigenvalues slightly negative; below ``-PSD_TOLERANCE`` times the largest,
    the matrix is not a covariance and a ValueError says so.

    Example:
        >>> mu, sigma = np.zeros(3), np.diag([1.0, 4.0, 9.0])
        >>> round(frechet_distance(mu, sigma, mu + 1, 4 * sigma), 9)
        17.0
    """
    mu1, mu2 = _vector(mu1, names[0]), _vector(mu2, names[2])
    sigma1, sigma2 = _square(sigma1, names[1], len(mu1)), _square(sigma2, names[3], len(mu2))
    if len(mu1) != len(mu2):
        raise ValueError(f"the two statistics differ in dimension: {len(mu1)} vs {len(mu2)}")
    root1 = _psd_sqrt(sigma1, names[1])
    sigma2_t = torch.from_numpy(sigma2)
    _check_psd(torch.linalg.eigvalsh(sigma2_t), names[3])
    middle = root1 @ sigma2_t @ root1
    eigenvalues = torch.linalg.eigvalsh((middle + middle.T) / 2)
    trace_sqrt = float(eigenvalues.clamp_min(0.0).sqrt().sum())
    diff = mu1 - mu2
    distance = float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt)
    # A squared distance: a negative value is rounding (identical statistics give -1e-13).
    return max(distance, 0.0)


def _psd_sqrt(sigma: np.ndarray, name: str) -> Tensor:
    """The symmetric square root of a covariance (float64), its rounding-negative eigenvalues set to 0."""
    eigenvalues, vectors = torch.linalg.eigh(torch.from_numpy(sigma))
    _check_psd(eigenvalues, name)
    return (vectors * eigenvalues.clamp_min(0.0).sqrt()) @ vectors.T


def _check_psd(eigenvalues: Tensor, name: str) -> None:
    scale = max(float(eigenvalues.abs().max()), np.finfo(np.float64).tiny)
    if float(eigenvalues.min()) < -PSD_TOLERANCE * scale:
        raise ValueError(f"{name} is not a covariance: it has an eigenvalue {float(eigenvalues.min()):.3g} "
                         f"(the largest is {scale:.3g}); covariances are positive semi-definite")


def _vector(x: object, name: str) -> np.ndarray:
    array = np.asarray(x, dtype=np.float64)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{name} must be a non-empty vector (D,), got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return array


def _square(x: object, name: str, dim: int) -> np.ndarray:
    array = np.asarray(x, dtype=np.float64)
    if array.shape != (dim, dim):
        raise ValueError(f"{name} must have shape ({dim}, {dim}) to match its mean, got {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    asymmetry = np.abs(array - array.T).max()
    if asymmetry > 1e-8 * max(np.abs(array).max(), 1e-300):
        raise ValueError(f"{name} is not symmetric (largest |sigma - sigma^T| {asymmetry:.3g}): not a covariance")
    return (array + array.T) / 2


class FeatureStats:
    """Running mean and covariance of feature batches, accumulated in float64.

    Batches are merged with Chan et al.'s pairwise update (per-batch centred second
    moments), which stays accurate when the mean is large relative to the spread, unlike
    accumulating raw sums of squares. The covariance is the unbiased one (``np.cov``).
    Accumulators live on the device of the first batch.

    Example:
        >>> stats = FeatureStats()
        >>> x = torch.randn(100, 4, dtype=torch.float64)
        >>> stats.update(x[:30]); stats.update(x[30:])
        >>> mu, sigma = stats.compute()
        >>> bool(np.allclose(sigma, np.cov(x.numpy(), rowvar=False)))
        True
    """

    def __init__(self) -> None:
        self.count = 0
        self._mean: Tensor | None = None
        self._moment: Tensor | None = None  # sum of outer products of deviations from the mean

    def update(self, features: Tensor) -> None:
        """Add a batch (N, D) of features."""
        check_features(features, "features")
        x = features.detach().to(torch.float64)
        if self._mean is not None and x.shape[1] != self._mean.shape[0]:
            raise ValueError(f"features have dimension {x.shape[1]}, earlier batches {self._mean.shape[0]}")
        n = x.shape[0]
        batch_mean = x.mean(dim=0)
        centred = x - batch_mean
        batch_moment = centred.T @ centred
        if self._mean is None:
            self._mean, self._moment = batch_mean, batch_moment
        else:
            total = self.count + n
            delta = batch_mean.to(self._mean.device) - self._mean
            self._mean = self._mean + delta * (n / total)
            self._moment = self._moment + batch_moment.to(self._moment.device) + torch.outer(delta, delta) * (self.count * n / total)
        self.count += n

    def compute(self) -> tuple[np.ndarray, np.ndarray]:
        """(mu (D,), sigma (D, D)) as float64 numpy arrays; needs at least two samples."""
        if self._mean is None or self.count < 2:
            raise ValueError(f"a covariance needs at least 2 samples, got {self.count}")
        return self._mean.cpu().numpy(), (self._moment / (self.count - 1)).cpu().numpy()


def save_stats(path: str | os.PathLike, mu: np.ndarray, sigma: np.ndarray) -> None:
    """Write statistics as an ``.npz`` with keys ``mu`` and ``sigma`` (what ``compute_stats`` reads back).

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "stats.npz"
        >>> save_stats(path, np.zeros(2), np.eye(2))
        >>> [a.tolist() for a in compute_stats(path)]
        [[0.0, 0.0], [[1.0, 0.0], [0.0, 1.0]]]
    """
    np.savez(path, mu=np.asarray(mu, dtype=np.float64), sigma=np.asarray(sigma, dtype=np.float64))


def compute_stats(source: str | os.PathLike, extractor: Callable[[Tensor], Tensor] | None = None,
                  batch_size: int = 50, device: str | torch.device = "cpu",
                  progress: Callable[[int], object] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Feature statistics (mu, sigma) of an image set, in float64.

    ``source``: an ``.npz`` with ``mu`` and ``sigma`` (returned as stored), an ``.npz`` with
    uint8 images ``arr_0`` (N, H, W, 3), or a folder of images. ``extractor`` maps a
    (B, 3, H, W) batch in [0, 1] on ``device`` to (B, D) features; by default the FID
    Inception network's pool3 (``InceptionFeatures``). ``progress`` is called with the
    number of images of each batch done (for a progress bar).

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "images.npz"
        >>> np.savez(path, np.random.default_rng(0).integers(0, 256, (5, 4, 4, 3), dtype=np.uint8))
        >>> mu, sigma = compute_stats(path, extractor=lambda x: x.mean(dim=(2, 3)))
        >>> mu.shape, sigma.shape
        ((3,), (3, 3))
    """
    path = Path(source)
    if path.suffix == ".npz":
        with open_npz(path) as stored:
            if "mu" in stored.files and "sigma" in stored.files:
                return _vector(stored["mu"], f"{path}: mu"), _square(stored["sigma"], f"{path}: sigma", stored["mu"].shape[-1])
    images = ImageSource(path)
    if extractor is None:
        from .inception import InceptionFeatures

        extractor = InceptionFeatures().to(device)
    stats = FeatureStats()
    with torch.inference_mode():
        for batch in images.batches(batch_size):
            stats.update(extractor(batch.to(device)))
            if progress is not None:
                progress(batch.shape[0])
    return stats.compute()


def compute_fid(real: str | os.PathLike, fake: str | os.PathLike, extractor: Callable[[Tensor], Tensor] | None = None,
                batch_size: int = 50, device: str | torch.device = "cpu",
                progress: Callable[[int], object] | None = None) -> float:
    """FID between two image sets or statistics files (see ``compute_stats``), one feature network for both.

    Example:
        >>> import tempfile
        >>> root = Path(tempfile.mkdtemp())
        >>> rng = np.random.default_rng(0)
        >>> np.savez(root / "a.npz", rng.integers(0, 256, (8, 4, 4, 3), dtype=np.uint8))
        >>> compute_fid(root / "a.npz", root / "a.npz", extractor=lambda x: x.mean(dim=(2, 3))) < 1e-9
        True
    """
    if extractor is None:
        from .inception import InceptionFeatures

        extractor = InceptionFeatures().to(device)
    mu1, sigma1 = compute_stats(real, extractor, batch_size, device, progress)
    mu2, sigma2 = compute_stats(fake, extractor, batch_size, device, progress)
    return frechet_distance(mu1, sigma1, mu2, sigma2)


def inception_score(logits: Tensor, splits: int = 10) -> tuple[float, float]:
    """Inception Score (mean, std over splits) from class logits (N, C), in float64.

    Per split: ``exp(E_x KL(p(y|x) || p(y)))`` with ``p(y)`` the split's mean prediction;
    the splits are contiguous, as in the original code (the std is the population std).

    Example:
        >>> inception_score(torch.eye(4) * 50, splits=1)[0] == 4.0
        True
    """
    check_features(logits, "logits")
    if not 1 <= splits <= logits.shape[0]:
        raise ValueError(f"splits must be between 1 and the number of samples {logits.shape[0]}, got {splits}")
    log_p = torch.log_softmax(logits.detach().double(), dim=1)
    n = logits.shape[0]
    scores = []
    for i in range(splits):
        part = log_p[i * n // splits:(i + 1) * n // splits]
        log_marginal = torch.logsumexp(part, dim=0) - np.log(part.shape[0])
        kl = (part.exp() * (part - log_marginal)).sum(dim=1).mean()
        scores.append(kl.exp().item())
    return float(np.mean(scores)), float(np.std(scores))
