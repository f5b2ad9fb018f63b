"""When a flow is trained and integrated: training-time samplers and the solvers' time grid.

Time runs from t = 0 (noise) to t = 1 (data). Training times come from
:class:`UniformTime`, :class:`LogitNormalTime`, or :class:`ShiftedTime`, which
warps either towards noise for high-dimensional latents (:func:`time_shift`,
:func:`dimension_shift`); :func:`time_grid` is the solvers' grid, warped the same way.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from dinosae.flow.names import TIME_SAMPLERS, check_name

__all__ = ["TimeSampler", "UniformTime", "LogitNormalTime", "ShiftedTime", "time_shift", "dimension_shift",
           "training_shift", "make_time_sampler", "time_grid"]


class Draws(NamedTuple):
    """The request of one call of a time sampler: ``n`` times of ``dtype`` on ``device`` from ``generator``.

    Example:
        >>> Draws(2, torch.Generator().manual_seed(0), None, torch.float64).uniform().dtype
        torch.float64
    """

    n: int
    generator: torch.Generator | None
    device: torch.device | str | None
    dtype: torch.dtype

    def uniform(self) -> Tensor:
        return torch.rand(self.n, generator=self.generator, device=self.device, dtype=self.dtype)

    def normal(self) -> Tensor:
        return torch.randn(self.n, generator=self.generator, device=self.device, dtype=self.dtype)


class TimeSampler:
    """Draws ``n`` training times in [0, 1] (t = 0 noise, t = 1 data) as a tensor (n,); subclasses say how
    in :meth:`draw`.

    Example:
        >>> sampler = ShiftedTime(LogitNormalTime(), 2.0)
        >>> sampler(5, dtype=torch.float64).dtype
        torch.float64
    """

    def __call__(self, n: int, *, generator: torch.Generator | None = None,
                 device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
        return self.draw(Draws(n, generator, device, dtype))

    def draw(self, draws: Draws) -> Tensor:
        raise NotImplementedError


class UniformTime(TimeSampler):
    """t ~ U[0, 1).

    Example:
        >>> UniformTime()(3, generator=torch.Generator().manual_seed(0))
        tensor([0.4963, 0.7682, 0.0885])
    """

    def draw(self, draws: Draws) -> Tensor:
        return draws.uniform()

    def __repr__(self) -> str:
        return "UniformTime()"


class LogitNormalTime(TimeSampler):
    """t = sigmoid(m + s * N(0, 1)) (Esser et al. 2024), which favors the middle of the path.

    With t = 1 data, a positive ``mean`` favors times nearer the data; SD3's
    convention (t = 1 noise) has the opposite sign.

    Example:
        >>> t = LogitNormalTime(0.0, 1.0)(10_000, generator=torch.Generator().manual_seed(0))
        >>> round(t.mean().item(), 2)
        0.5
    """

    def __init__(self, mean: float = 0.0, std: float = 1.0) -> None:
        if not std > 0:
            raise ValueError(f"std must be > 0, got {std}")
        self.mean, self.std = float(mean), float(std)

    def draw(self, draws: Draws) -> Tensor:
        return torch.sigmoid(self.mean + self.std * draws.normal())

    def __repr__(self) -> str:
        return f"LogitNormalTime(mean={self.mean}, std={self.std})"


def time_shift(t: Tensor | float, shift: float) -> Tensor | float:
    """Warp times towards noise: ``t' = t / (shift - (shift - 1) t)``.

    This is the shift of SD3 and of RAE (``s sigma / (1 + (s - 1) sigma)`` on the
    noise level ``sigma = 1 - t``), written for t = 1 data. It keeps 0 and 1 fixed;
    ``shift > 1`` spends more time near noise, which high-dimensional latents need
    because noise destroys their signal more slowly. ``shift = 1`` is the identity.

    Example:
        >>> time_shift(torch.tensor([0.0, 0.5, 1.0]), 3.0)
        tensor([0.0000, 0.2500, 1.0000])
    """
    if not shift > 0:
        raise ValueError(f"shift must be > 0, got {shift}")
    return t / (shift - (shift - 1) * t)


class ShiftedTime(TimeSampler):
    """Times from ``base`` warped by :func:`time_shift`.

    Example:
        >>> sampler = ShiftedTime(UniformTime(), dimension_shift(256 * 768))
        >>> t = sampler(10_000, generator=torch.Generator().manual_seed(0))
        >>> bool(t.median() < 0.2)
        True
    """

    def __init__(self, base: TimeSampler, shift: float) -> None:
        if not shift > 0:
            raise ValueError(f"shift must be > 0, got {shift}")
        self.base, self.shift = base, float(shift)

    def draw(self, draws: Draws) -> Tensor:
        return time_shift(self.base.draw(draws), self.shift)

    def __repr__(self) -> str:
        return f"ShiftedTime({self.base!r}, shift={self.shift})"


def dimension_shift(dim: int, base_dim: int = 4096) -> float:
    """The time shift ``sqrt(dim / base_dim)`` for data of ``dim`` numbers (Esser et al. 2024, RAE).

    ``base_dim = 4096`` is the 32x32x4 SD-VAE latent of a 256 px image, where
    the unshifted schedule works; DINO-SAE latents (256 tokens x 768) get
    ``sqrt(196608 / 4096) ~ 6.9``.

    Example:
        >>> round(dimension_shift(256 * 768), 3)
        6.928
    """
    if dim < 1 or base_dim < 1:
        raise ValueError(f"dim and base_dim must be >= 1, got {dim} and {base_dim}")
    return math.sqrt(dim / base_dim)


def training_shift(shift: float | None, tokens: int, dim: int) -> float:
    """The time shift of a training config's ``shift`` for latents of ``tokens`` x ``dim``: the
    dimension-dependent ``sqrt(tokens * dim / 4096)`` when it is None.

    Example:
        >>> round(training_shift(None, tokens=256, dim=768), 3), training_shift(3.0, 256, 768)
        (6.928, 3.0)
    """
    return dimension_shift(tokens * dim) if shift is None else float(shift)


def make_time_sampler(name: str, shift: float = 1.0) -> TimeSampler:
    """The time sampler of a training config: ``"uniform"`` or ``"logit-normal"``, then shifted.

    Example:
        >>> make_time_sampler("logit-normal", 3.0)
        ShiftedTime(LogitNormalTime(mean=0.0, std=1.0), shift=3.0)
    """
    check_name("time sampler", name, TIME_SAMPLERS)
    base = UniformTime() if name == "uniform" else LogitNormalTime()
    return base if shift == 1.0 else ShiftedTime(base, shift)


def time_grid(steps: int, shift: float = 1.0) -> list[float]:
    """``steps + 1`` times from 0 (noise) to 1 (data), uniform and then warped by :func:`time_shift`.

    ``shift > 1`` puts smaller steps near noise. Plain floats: the samplers
    branch on them (guidance interval) without reading the device.

    Example:
        >>> time_grid(4, shift=3.0)
        [0.0, 0.1, 0.25, 0.5, 1.0]
    """
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    grid = time_shift(torch.linspace(0, 1, steps + 1, dtype=torch.float64), shift)
    # rounding away the last ulp makes the ends exactly 0 and 1 for every shift
    return [round(t, 15) for t in grid.tolist()]
