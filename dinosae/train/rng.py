"""Training randomness as a pure function of ``(seed, step, rank)``.

Every random draw of a training step (latent noise, flow-matching times and
noise, label dropout) comes from the generator of that step, so a resumed run
repeats an uninterrupted one exactly without saving any RNG state, and a run
never depends on the global RNG.
"""

from __future__ import annotations

import torch


def step_generator(seed: int, step: int, rank: int, device: torch.device) -> torch.Generator:
    """A generator whose stream depends only on ``(seed, step, rank)``.

    Example:
        >>> a = step_generator(0, 5, 0, torch.device("cpu"))
        >>> b = step_generator(0, 5, 0, torch.device("cpu"))
        >>> bool(torch.equal(torch.rand(3, generator=a), torch.rand(3, generator=b)))
        True
    """
    generator = torch.Generator(device=device)
    generator.manual_seed((seed * 1_000_003 + step) * 4099 + rank)
    return generator
