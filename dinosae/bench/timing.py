"""Timing a callable on CPU or CUDA: warm-up, repeats, medians, copy bandwidth.

On CUDA each repeat is timed with events, and when the inputs fit in L2 the
callable is handed a different copy of them each time (``rotations``) so no
repeat finds its data in cache.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

# H100/H200 have 50-60 MB of L2; rotate through more than that.
_CACHE_BYTES = 256 << 20


@dataclass(frozen=True)
class Timing:
    """Seconds per call: the median and the 20th/80th percentiles over repeats."""

    median: float
    p20: float
    p80: float
    repeats: int


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def rotations(nbytes: int, device: torch.device) -> int:
    """How many copies of inputs of ``nbytes`` to cycle through so none stays in cache."""
    if device.type != "cuda" or nbytes <= 0:
        return 1
    return max(1, min(16, -(-_CACHE_BYTES // nbytes)))


def measure(
    fn: Callable[[int], object],
    device: torch.device,
    *,
    repeats: int = 10,
    warmup: int = 3,
) -> Timing:
    """Time ``fn(i)`` for i = 0, 1, ...; ``fn`` picks its inputs by ``i`` (to rotate copies)."""
    for i in range(warmup):
        fn(i)
    times: list[float] = []
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(repeats)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(repeats)]
        for i in range(repeats):
            starts[i].record()
            fn(warmup + i)
            ends[i].record()
        torch.cuda.synchronize(device)
        times = [s.elapsed_time(e) / 1e3 for s, e in zip(starts, ends)]
    else:
        for i in range(repeats):
            start = time.perf_counter()
            fn(warmup + i)
            times.append(time.perf_counter() - start)
    return Timing(statistics.median(times), _quantile(times, 0.2), _quantile(times, 0.8), repeats)


def copy_bandwidth(nbytes: int, device: torch.device, *, repeats: int = 10) -> float:
    """Bytes per second of a device-to-device copy moving ``nbytes`` (read + write counted)."""
    n = max(1, nbytes // 8)  # half read, half written, float32
    copies = rotations(n * 4, device)
    src = [torch.ones(n, device=device) for _ in range(copies)]
    dst = [torch.empty(n, device=device) for _ in range(copies)]
    timing = measure(lambda i: dst[i % copies].copy_(src[i % copies]), device, repeats=repeats)
    return 2 * n * 4 / timing.median


def tensor_bytes(tensors: Sequence[torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)
