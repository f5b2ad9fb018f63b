"""Linear probe against scikit-learn's LogisticRegression."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dinosae.metrics.probe import linear_probe

linear_model = pytest.importorskip("sklearn.linear_model")
preprocessing = pytest.importorskip("sklearn.preprocessing")


def _problem(seed: int, n: int, dim: int, classes: int, separation: float):
    """Gaussian classes around random centres, with a random per-feature scale and offset."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((classes, dim)) * separation
    labels = rng.integers(0, classes, n)
    feats = centres[labels] + rng.standard_normal((n, dim))
    feats = feats * rng.uniform(0.1, 10, dim) + rng.uniform(-5, 5, dim)  # standardization matters
    split = n * 3 // 4
    return feats[:split], labels[:split], feats[split:], labels[split:]


def _sklearn_accuracy(train_x, train_y, test_x, test_y, weight_decay: float) -> float:
    scaler = preprocessing.StandardScaler().fit(train_x)
    model = linear_model.LogisticRegression(C=1 / (weight_decay * len(train_x)), max_iter=5000, tol=1e-10)
    model.fit(scaler.transform(train_x), train_y)
    return float(model.score(scaler.transform(test_x), test_y))


def _torch(*arrays):
    x_train, y_train, x_test, y_test = arrays
    return torch.from_numpy(x_train).float(), torch.from_numpy(y_train), torch.from_numpy(x_test).float(), torch.from_numpy(y_test)


@pytest.mark.parametrize("seed, separation, weight_decay", [(0, 0.6, 1e-3), (1, 0.4, 1e-2), (2, 0.8, 1e-4)])
def test_matches_sklearn_on_overlapping_classes(seed, separation, weight_decay):
    problem = _problem(seed, n=800, dim=24, classes=6, separation=separation)
    expected = _sklearn_accuracy(*problem, weight_decay)
    got = linear_probe(*_torch(*problem), weight_decay=weight_decay)
    assert 0.3 < expected < 0.98  # a problem where the probe's quality shows
    assert got == pytest.approx(expected, abs=0.02)


def test_separable_classes_are_probed_perfectly():
    problem = _problem(3, n=600, dim=16, classes=5, separation=4.0)
    assert _sklearn_accuracy(*problem, 1e-4) >= 0.99
    assert linear_probe(*_torch(*problem)) >= 0.99


def test_float64_and_constant_features_are_fine():
    x_train, y_train, x_test, y_test = _problem(4, n=400, dim=8, classes=3, separation=3.0)
    x_train[:, 0] = 7.0  # a constant feature must not produce NaN
    x_test[:, 0] = 7.0
    accuracy = linear_probe(torch.from_numpy(x_train), torch.from_numpy(y_train),
                            torch.from_numpy(x_test), torch.from_numpy(y_test))
    assert accuracy >= 0.95


def test_bad_inputs_raise():
    x, y = torch.randn(10, 3), torch.arange(10) % 2
    with pytest.raises(ValueError, match="integer"):
        linear_probe(x, y.float(), x, y)
    with pytest.raises(ValueError, match="to match"):
        linear_probe(x, y[:5], x, y)
    with pytest.raises(ValueError, match="dimension"):
        linear_probe(x, y, torch.randn(10, 4), y)
    with pytest.raises(ValueError, match="NaN"):
        linear_probe(x, y, torch.full((10, 3), float("nan")), y)
    with pytest.raises(ValueError, match="non-negative"):
        linear_probe(x, y - 1, x, y)
