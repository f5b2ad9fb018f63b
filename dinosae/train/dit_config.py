"""Training settings for the DiT on a latent cache."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dinosae.rfm import LogitNormalTime, ShiftedTime, TimeSampler, UniformTime, dimension_shift

PATHS = ("rfm", "euclidean")
TIME_SAMPLERS = ("uniform", "logit-normal")


@dataclass
class DiTTrainConfig:
    """What ``dinosae train dit`` does.

    ``path="rfm"`` is the paper's Riemannian flow matching on the spheres;
    ``"euclidean"`` is the linear-path baseline on the same latents.
    ``shift=None`` takes the dimension-dependent shift ``sqrt(N * D / 4096)``;
    ``shift=1`` turns shifting off.
    """

    path: str = "rfm"
    steps: int = 400_000
    batch_size: int = 256
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema_decay: float = 0.9999
    time_sampler: str = "logit-normal"
    shift: float | None = None
    flip: bool = True
    seed: int = 0
    log_every: int = 50
    ckpt_every: int = 5000
    keep_last: int = 2
    num_workers: int = 4
    compile: bool = False

    def __post_init__(self) -> None:
        if self.path not in PATHS:
            raise ValueError(f"path must be one of {PATHS}, got {self.path!r}")
        if self.time_sampler not in TIME_SAMPLERS:
            raise ValueError(f"time_sampler must be one of {TIME_SAMPLERS}, got {self.time_sampler!r}")
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"steps and batch size must be positive, got {self.steps} and {self.batch_size}")

    def resolved_shift(self, tokens: int, dim: int) -> float:
        return dimension_shift(tokens * dim) if self.shift is None else float(self.shift)

    def sampler(self, tokens: int, dim: int) -> TimeSampler:
        base = UniformTime() if self.time_sampler == "uniform" else LogitNormalTime()
        shift = self.resolved_shift(tokens, dim)
        return base if shift == 1.0 else ShiftedTime(base, shift)


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    return torch.bfloat16 if device.type == "cuda" else None
