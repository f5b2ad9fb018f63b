"""Linear probing: how linearly separable the classes are in a feature space.

A multinomial logistic regression on standardized features, fitted full-batch with
L-BFGS (strong Wolfe line search) under an L2 penalty, scored by test accuracy.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ._checks import check_features


def linear_probe(train_feats: Tensor, train_labels: Tensor, test_feats: Tensor, test_labels: Tensor,
                 weight_decay: float = 1e-4, max_iter: int = 1000) -> float:
    """Test accuracy of a logistic-regression probe fitted on the training features.

    Features are standardized with the training set's mean and (population) std. The
    objective is ``mean cross-entropy + weight_decay / 2 * |W|^2`` (bias unpenalized),
    which is scikit-learn's ``LogisticRegression(C=1 / (weight_decay * n_train))``.
    Computes in the features' dtype (at least float32) on their device; classes are
    ``0 .. max label``.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> labels = torch.arange(60) % 3
        >>> feats = torch.randn(60, 5, generator=g) + 4 * F.one_hot(labels, 5)
        >>> linear_probe(feats[:40], labels[:40], feats[40:], labels[40:])
        1.0
    """
    train_feats = check_features(train_feats, "train_feats")
    test_feats = check_features(test_feats, "test_feats")
    _check_labels(train_labels, train_feats, "train")
    _check_labels(test_labels, test_feats, "test")
    if train_feats.shape[1] != test_feats.shape[1]:
        raise ValueError(f"train and test features differ in dimension: {train_feats.shape[1]} vs {test_feats.shape[1]}")
    if weight_decay < 0 or max_iter < 1:
        raise ValueError(f"weight_decay must be >= 0 and max_iter >= 1, got {weight_decay} and {max_iter}")
    dtype = torch.promote_types(train_feats.dtype, torch.float32)
    device = train_feats.device
    x_train = train_feats.detach().to(dtype)
    mean = x_train.mean(dim=0)
    # Constant features would divide by zero; leaving them unscaled keeps them constant (zero).
    std = x_train.std(dim=0, unbiased=False).clamp_min(torch.finfo(dtype).eps)
    x_train = (x_train - mean) / std
    x_test = (test_feats.detach().to(device, dtype) - mean) / std
    y_train = train_labels.to(device)
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1

    weight = torch.zeros(x_train.shape[1], num_classes, dtype=dtype, device=device, requires_grad=True)
    bias = torch.zeros(num_classes, dtype=dtype, device=device, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], lr=1, max_iter=max_iter, history_size=20,
                                  tolerance_grad=1e-9, tolerance_change=1e-12, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(x_train @ weight + bias, y_train) + 0.5 * weight_decay * weight.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    with torch.no_grad():
        predicted = (x_test @ weight + bias).argmax(dim=1)
    return (predicted == test_labels.to(device)).double().mean().item()


def _check_labels(labels: object, feats: Tensor, split: str) -> None:
    if not isinstance(labels, Tensor) or labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise ValueError(f"{split}_labels must be an integer tensor")
    if labels.shape != (feats.shape[0],):
        raise ValueError(f"{split}_labels must have shape ({feats.shape[0]},) to match {split}_feats, got {tuple(labels.shape)}")
    if labels.min() < 0:
        raise ValueError(f"{split}_labels must be non-negative class indices")
