"""A toy generative problem on a product of spheres, with a known distribution.

:class:`VMFMixture` is a class-labelled mixture of von Mises-Fisher products on
N spheres S^(D-1): a sample picks a component, then draws each of its N tokens
from vMF(mean token, kappa). It stands in for DINO-SAE latents (B, N, D) in the
ablation "Riemannian vs Euclidean flow matching", where the true distribution
is known and cheap to sample.
"""

from __future__ import annotations

import torch
from torch import Tensor

import sphere_ops

__all__ = ["VMFMixture"]


class VMFMixture:
    """A mixture of K products of vMF distributions on N spheres S^(D-1), one class label per component.

    ``means`` (K, N, D) has unit tokens; ``kappa`` is a float or a tensor
    broadcastable to (K, N); ``labels`` (K,) defaults to ``0..K-1`` and
    ``weights`` (K,) to equal weights.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> mixture = VMFMixture.random(4, tokens=4, dim=8, kappa=30.0, generator=g)
        >>> x, y = mixture.sample(5, generator=g)
        >>> x.shape, y.shape, mixture.num_classes
        (torch.Size([5, 4, 8]), torch.Size([5]), 4)
    """

    def __init__(
        self,
        means: Tensor,
        kappa: float | Tensor,
        labels: Tensor | None = None,
        weights: Tensor | None = None,
    ) -> None:
        if not isinstance(means, Tensor) or means.dim() != 3 or means.shape[-1] < 2:
            raise ValueError(f"means must be a tensor (K, N, D) with D >= 2, got {getattr(means, 'shape', means)}")
        if means.dtype not in (torch.float32, torch.float64):
            raise ValueError(f"means must be float32 or float64, got {means.dtype}")
        if not float((means.norm(dim=-1) - 1).abs().max()) <= 1e-5:
            raise ValueError("means must have unit tokens (points on S^(D-1))")
        K = means.shape[0]
        kappa = torch.as_tensor(kappa, dtype=means.dtype, device=means.device)
        try:
            kappa = kappa.broadcast_to(means.shape[:2])
        except RuntimeError:
            raise ValueError(
                f"kappa of shape {tuple(kappa.shape)} does not broadcast to (K, N) = {tuple(means.shape[:2])}"
            ) from None
        if not bool((kappa >= 0).all() & torch.isfinite(kappa).all()):
            raise ValueError("kappa must be finite and >= 0")
        labels = torch.arange(K, device=means.device) if labels is None else labels
        if labels.shape != (K,) or labels.dtype != torch.int64 or bool((labels < 0).any()):
            raise ValueError(f"labels must be {K} non-negative int64 labels, got {labels.dtype} {tuple(labels.shape)}")
        weights = torch.ones(K, dtype=torch.float64, device=means.device) if weights is None else weights
        if weights.shape != (K,) or not bool((weights >= 0).all()) or not weights.sum() > 0:
            raise ValueError(f"weights must be {K} non-negative numbers with a positive sum")
        self.means, self.kappa, self.labels = means, kappa, labels
        self.weights = weights.double() / weights.sum()

    @classmethod
    def random(
        cls,
        components: int,
        tokens: int,
        dim: int,
        *,
        kappa: float,
        classes: int | None = None,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> VMFMixture:
        """``components`` with uniformly random mean tokens and a common ``kappa``, in ``classes`` classes (None:
        one per component); component k is of class ``k % classes``, so a class has several modes when
        ``classes < components``.

        Example:
            >>> VMFMixture.random(3, tokens=2, dim=5, kappa=10.0).means.shape
            torch.Size([3, 2, 5])
            >>> VMFMixture.random(6, tokens=2, dim=5, kappa=10.0, classes=2).labels.tolist()
            [0, 1, 0, 1, 0, 1]
        """
        classes = components if classes is None else classes
        if not 1 <= classes <= components:
            raise ValueError(f"classes must be in [1, components = {components}], got {classes}")
        means = sphere_ops.random_uniform((components, tokens), dim, generator=generator, dtype=dtype)
        return cls(means, kappa, labels=torch.arange(components) % classes)

    @property
    def num_classes(self) -> int:
        return int(self.labels.max()) + 1

    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """``n`` samples: points (n, N, D) and their class labels (n,).

        Example:
            >>> mixture = VMFMixture.random(2, tokens=3, dim=4, kappa=5.0)
            >>> x, y = mixture.sample(6, generator=torch.Generator().manual_seed(1))
            >>> y.tolist()
            [0, 0, 0, 0, 1, 0]
        """
        component = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        x = sphere_ops.random_vmf(self.means[component], self.kappa[component], generator)
        return x, self.labels[component]

    def sample_labels(self, labels: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Points (n, N, D) of the given class ``labels`` (n,): each from a component of its class, drawn by
        the components' weights within the class.

        Example:
            >>> mixture = VMFMixture.random(3, tokens=2, dim=4, kappa=5.0)
            >>> mixture.sample_labels(torch.tensor([2, 0]), torch.Generator().manual_seed(0)).shape
            torch.Size([2, 2, 4])
        """
        if labels.ndim != 1 or (labels.numel() and not 0 <= int(labels.min()) <= int(labels.max()) < self.num_classes):
            raise ValueError(f"labels must be a vector of classes in [0, {self.num_classes}), got {labels}")
        within = (self.labels[None, :] == labels[:, None]).to(self.weights.dtype) * self.weights[None, :]
        component = torch.multinomial(within, 1, generator=generator)[:, 0]
        return sphere_ops.random_vmf(self.means[component], self.kappa[component], generator)
