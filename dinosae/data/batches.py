"""The batch order of a training run, as a pure function of ``(seed, step)``."""

from __future__ import annotations

from typing import Iterator

import torch

from dinosae.data.listing import DataError


class ResumableBatches(torch.utils.data.Sampler):
    """Batches of ``(index, flip)`` keys for steps ``start_step, start_step + 1, ...``.

    Epoch ``e`` visits the dataset in a permutation drawn from ``seed + e``; the flips
    are drawn from the same generator, and with ``crop_draws`` a non-negative
    integer per item that places its random crop (keys ``(index, flip, draw)``).
    Step ``s`` is a pure function of ``(seed, s)``,
    so a run resumed at step ``s`` continues with exactly the batches an uninterrupted
    run would have seen. Each of ``world_size`` ranks takes its own contiguous slice of
    the global batch.

    Example:
        >>> batches = ResumableBatches(10, global_batch=4, seed=0)
        >>> first = next(iter(batches))
        >>> later = next(iter(ResumableBatches(10, global_batch=4, seed=0, start_step=1)))
        >>> it = iter(batches); _ = next(it); next(it) == later
        True
    """

    def __init__(self, num_items: int, global_batch: int, seed: int, start_step: int = 0,
                 rank: int = 0, world_size: int = 1, flip: bool = True, crop_draws: bool = False) -> None:
        if global_batch % world_size:
            raise ValueError(f"global batch {global_batch} is not divisible by {world_size} ranks")
        if num_items < 1:
            raise DataError("cannot draw batches from an empty dataset")
        self.num_items = num_items
        self.global_batch = global_batch
        self.seed = seed
        self.start_step = start_step
        self.rank = rank
        self.world_size = world_size
        self.flip = flip
        self.crop_draws = crop_draws

    def _epoch(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        order = torch.randperm(self.num_items, generator=generator)
        flips = torch.rand(self.num_items, generator=generator) < 0.5
        # Drawn after the flips, so that turning crops on changes neither the order nor the flips.
        draws = torch.randint(2**31, (self.num_items,), generator=generator) if self.crop_draws else None
        return order, flips & self.flip, draws

    def __iter__(self) -> Iterator[list[tuple]]:
        per_rank = self.global_batch // self.world_size
        position = self.start_step * self.global_batch
        cached_epoch, order, flips, draws = -1, None, None, None
        while True:
            keys = []
            for offset in range(self.rank * per_rank, (self.rank + 1) * per_rank):
                epoch, within = divmod(position + offset, self.num_items)
                if epoch != cached_epoch:
                    order, flips, draws = self._epoch(epoch)
                    cached_epoch = epoch
                key = (int(order[within]), bool(flips[within]))
                keys.append(key if draws is None else (*key, int(draws[within])))
            yield keys
            position += self.global_batch
