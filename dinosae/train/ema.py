"""Exponential moving average of a model's trainable weights."""

from __future__ import annotations

import torch
from torch import nn


class EMA:
    """Float32 shadow copies of the trainable parameters of ``module``, updated after each step.

    Only parameters with ``requires_grad`` are tracked: frozen weights equal
    their own average, and copying them would double the memory of a frozen ViT.
    With ``warmup`` the decay is ``min(decay, (1 + n) / (10 + n))`` after ``n``
    updates, so the average of a short run (a CPU test, the first steps of a
    stage) is not stuck at the initialization; without it the decay is
    constant, as in DiT.

    Example:
        >>> layer = torch.nn.Linear(2, 2)
        >>> ema = EMA(layer, decay=0.9)
        >>> with torch.no_grad():
        ...     _ = layer.weight.add_(1.0)
        >>> ema.update(layer)
        >>> bool((ema.shadow["weight"] - layer.weight).abs().max() < 1.0)
        True
    """

    def __init__(self, module: nn.Module, decay: float = 0.9999, warmup: bool = True) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay, self.warmup = decay, warmup
        self.updates = 0
        self.shadow = {name: p.detach().float().clone()
                       for name, p in module.named_parameters() if p.requires_grad}

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        params = dict(module.named_parameters())
        names = list(self.shadow)
        shadows = [self.shadow[n] for n in names]
        current = [params[n].detach().float() for n in names]
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates)) if self.warmup else self.decay
        torch._foreach_lerp_(shadows, current, 1.0 - decay)
        self.updates += 1

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.shadow)

    def load_state_dict(self, state: dict[str, torch.Tensor], updates: int) -> None:
        missing = set(self.shadow) - set(state)
        if missing:
            raise ValueError(f"EMA state lacks {sorted(missing)[:5]}")
        for name in self.shadow:
            self.shadow[name].copy_(state[name])
        self.updates = updates

    @torch.no_grad()
    def copy_to(self, module: nn.Module) -> None:
        """Overwrite the module's trainable weights with their averages."""
        params = dict(module.named_parameters())
        for name, value in self.shadow.items():
            params[name].copy_(value)
