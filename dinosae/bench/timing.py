"""Timing a callable on CPU or CUDA: warm-up, repeats, medians, copy bandwidth.

On CUDA each repeat is timed with events, and when the inputs fit in L2 the
callable is handed a different copy of them each time (``rotations``) so no
repeat finds its data in cache.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
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
    return measure_side_by_side({"fn": fn}, device, repeats=repeats, warmup=warmup)["fn"]


def measure_side_by_side(
    fns: Mapping[str, Callable[[int], object]],
    device: torch.device,
    *,
    repeats: int = 10,
    warmup: int = 3,
) -> dict[str, Timing]:
    """Time several callables round-robin, one call of each per repeat.

    Interleaving, in a fresh random order each repeat, spreads whatever the
    machine does meanwhile (page faults and memory compaction after another
    callable's allocations, frequency changes, other processes) over every
    callable alike, instead of charging it to whichever runs first or next.
    """
    order = random.Random(0)
    names = list(fns)
    for i in range(warmup):
        for fn in fns.values():
            fn(i)
    times: dict[str, list[float]] = {name: [] for name in fns}
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        events = {name: [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(repeats)] for name in fns}
        for i in range(repeats):
            order.shuffle(names)
            for name in names:
                start, end = events[name][i]
                start.record()
                fns[name](warmup + i)
                end.record()
        torch.cuda.synchronize(device)
        times = {name: [s.elapsed_time(e) / 1e3 for s, e in pairs] for name, pairs in events.items()}
    else:
        for i in range(repeats):
            order.shuffle(names)
            for name in names:
                start = time.perf_counter()
                fns[name](warmup + i)
                times[name].append(time.perf_counter() - start)
    return {
        name: Timing(statistics.median(ts), _quantile(ts, 0.2), _quantile(ts, 0.8), repeats)
        for name, ts in times.items()
    }


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
