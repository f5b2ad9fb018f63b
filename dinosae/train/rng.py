"""Random-number state: per-step generators for the training math, and a snapshot of global RNGs."""

from __future__ import annotations

import random

import numpy as np
import torch


def step_generator(seed: int, step: int, rank: int, device: torch.device) -> torch.Generator:
    """A generator whose stream depends only on ``(seed, step, rank)``.

    Training randomness (noise, time samples, label dropout) drawn from it is
    reproduced exactly by a resumed run without restoring any RNG state.

    Example:
        >>> a = step_generator(0, 5, 0, torch.device("cpu"))
        >>> b = step_generator(0, 5, 0, torch.device("cpu"))
        >>> bool(torch.equal(torch.rand(3, generator=a), torch.rand(3, generator=b)))
        True
    """
    generator = torch.Generator(device=device)
    generator.manual_seed((seed * 1_000_003 + step) * 4099 + rank)
    return generator


def capture_rng() -> dict:
    """The global RNG states (saved in checkpoints for code that uses them)."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
