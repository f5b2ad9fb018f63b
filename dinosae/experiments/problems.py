"""The problems of the flow ablations: training data with a held-out set and its floor.

- ``vmf``: a class-labelled mixture of von Mises-Fisher products on N spheres,
  sampled exactly, so the training data is unlimited and the held-out set is
  the true distribution;
- ``latents``: a latent cache from ``dinosae encode``, split into training
  latents and a held-out part.

The floor is the distance between an independent sample of the same size and
the held-out set (fresh mixture samples, or training latents), what a perfect
generator scores. Generators are judged with the held-out labels, so the vMF
floor's sample has them too: with fresh labels the floor also holds the noise
of the class counts (0.0067 against 0.0043 at the defaults), which no
class-conditional sampler pays.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

# The seed offset of the sliced-W2 projections, shared by the floor and every distance.
PROJECTION_SEED = 4

Draw = Callable[[int, torch.Generator], tuple[Tensor, Tensor]]


@dataclass(frozen=True)
class Problem:
    """Training data (``draw(n, generator) -> (x (n, N, D), y (n,))``), a held-out set and its floor."""

    name: str
    draw: Draw
    heldout: Tensor
    heldout_labels: Tensor
    num_classes: int
    floor: float
    info: dict

    @property
    def grid_size(self) -> int:
        return math.isqrt(self.heldout.shape[1])


def vmf_problem(*, components: int = 8, tokens: int = 4, dim: int = 32, kappa: float = 400.0,
                classes: int | None = None, heldout: int = 2048, seed: int = 0) -> Problem:
    """A random class-conditional vMF mixture, its held-out set and floor: ``components`` in ``classes``
    classes (None: one class per component; fewer makes each class multi-modal).

    Example:
        >>> problem = vmf_problem(components=2, tokens=4, dim=8, kappa=20.0, heldout=64)
        >>> problem.heldout.shape, problem.num_classes, problem.floor < 0.5
        (torch.Size([64, 4, 8]), 2, True)
    """
    from dinosae.data.toy import VMFMixture
    from dinosae.metrics import sliced_wasserstein

    _check_grid(tokens)
    if heldout < 2:
        raise ValueError(f"the held-out set needs at least 2 samples, got {heldout}")
    generator = torch.Generator().manual_seed(seed)
    mixture = VMFMixture.random(components, tokens, dim, kappa=kappa, classes=classes, generator=generator)
    x, y = mixture.sample(heldout, generator)
    floor = sliced_wasserstein(mixture.sample_labels(y, generator), x, generator=seeded(seed + PROJECTION_SEED))
    info = {"components": components, "classes": mixture.num_classes, "tokens": tokens, "dim": dim, "kappa": kappa,
            "heldout": heldout}
    return Problem("vmf", mixture.sample, x, y, mixture.num_classes, floor.item(), info)


def latent_problem(directory: str | os.PathLike, *, heldout_fraction: float = 0.25, max_latents: int | None = 4096,
                   seed: int = 0) -> Problem:
    """Latents of a cache: a random ``max_latents`` of them, ``heldout_fraction`` held out, the rest trained on.

    The floor compares the held-out set with as many training latents, class by class (see
    :func:`matched_by_class`), as a class-conditional sampler given the held-out labels is compared.
    """
    from dinosae.data.latents import LatentCache, LatentCacheError
    from dinosae.metrics import sliced_wasserstein

    cache = LatentCache(directory)
    _check_grid(cache.tokens)
    if not 0 < heldout_fraction <= 0.5 or (max_latents is not None and max_latents < 4):
        raise ValueError(f"heldout_fraction must be in (0, 0.5] and max_latents >= 4, got {heldout_fraction} "
                         f"and {max_latents}")
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(cache), generator=generator)[:max_latents].tolist()
    num_heldout = int(len(order) * heldout_fraction)
    if num_heldout < 2:
        raise LatentCacheError(f"latent cache {str(directory)!r} holds {len(cache)} latents: too few to hold out "
                               f"{heldout_fraction:.0%} (at least 2)")
    items = [cache[(i, False)] for i in order]
    x = torch.stack([latent for latent, _ in items])
    y = torch.tensor([label for _, label in items], dtype=torch.long)
    if int(y.max()) >= cache.num_classes:
        raise LatentCacheError(f"latent cache {str(directory)!r} has label {int(y.max())} but "
                               f"{cache.num_classes} classes in its meta.json")
    heldout, train, train_labels = x[:num_heldout], x[num_heldout:], y[num_heldout:]
    matched = matched_by_class(train_labels, y[:num_heldout])
    floor = sliced_wasserstein(train[matched], heldout, generator=seeded(seed + PROJECTION_SEED))

    def draw(n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        index = torch.randint(train.shape[0], (n,), generator=generator)
        return train[index], train_labels[index]

    info = {"directory": str(directory), "tokens": cache.tokens, "dim": cache.dim, "train": train.shape[0],
            "heldout": num_heldout}
    return Problem("latents", draw, heldout, y[:num_heldout], cache.num_classes, floor.item(), info)


def matched_by_class(labels: Tensor, wanted: Tensor) -> Tensor:
    """Indices into ``labels``, one per entry of ``wanted`` and of its class: each class's entries in order,
    cycling when ``wanted`` holds more of a class than ``labels`` does. A class that ``labels`` lacks takes, in
    turn, the entries of the classes nobody wants (of every class when there are none).

    Example:
        >>> matched_by_class(torch.tensor([1, 0, 1, 2]), torch.tensor([0, 1, 1, 1, 3])).tolist()
        [1, 0, 2, 0, 3]
    """
    if labels.numel() == 0:
        raise ValueError("no latents to match the held-out labels with")
    labels, wanted_classes = labels.tolist(), set(wanted.tolist())
    by_class: dict[int, list[int]] = {}
    for index, label in enumerate(labels):
        by_class.setdefault(label, []).append(index)
    spare = [i for i, label in enumerate(labels) if label not in wanted_classes] or list(range(len(labels)))
    taken: dict[int | None, int] = {}
    out = []
    for label in wanted.tolist():
        pool, key = (by_class[label], label) if label in by_class else (spare, None)  # None: the spare turn
        out.append(pool[taken.get(key, 0) % len(pool)])
        taken[key] = taken.get(key, 0) + 1
    return torch.tensor(out, dtype=torch.long)


def _check_grid(tokens: int) -> None:
    if math.isqrt(tokens) ** 2 != tokens:
        raise ValueError(f"the DiT needs a square grid of tokens, got {tokens}")


def seeded(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator on ``device`` seeded with ``seed``.

    Example:
        >>> torch.rand(1, generator=seeded(0)).item() == torch.rand(1, generator=seeded(0)).item()
        True
    """
    return torch.Generator(device=device).manual_seed(seed)
