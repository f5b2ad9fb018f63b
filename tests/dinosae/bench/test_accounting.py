"""Saved-for-backward and live bytes are counted per allocation, whatever addresses the allocator reuses."""

from __future__ import annotations

import torch
from torch import nn

from dinosae.bench.accounting import LiveBytes, SavedBytes, storage_key


def test_a_storage_freed_mid_step_does_not_hide_the_next_one_at_its_address():
    """A graph dropped unused frees what it saved; the allocator often hands that address to the next
    storage (about every other try here), which is a new allocation and must be counted."""
    weight = nn.Parameter(torch.randn(4))
    for _ in range(50):
        with SavedBytes(exclude={storage_key(weight)}) as saved:
            dropped = torch.randn(4)
            (weight * dropped).sum()
            del dropped
            kept = torch.randn(4)
            loss = (weight * kept).sum()
        assert dict(saved.by_label) == {"other": 2 * 16}
        del loss


def test_a_storage_saved_twice_counts_once():
    weight = nn.Parameter(torch.randn(8))
    with SavedBytes(exclude={storage_key(weight)}) as saved:
        x = torch.randn(8)
        loss = (weight * x).sum() + (weight * x[:4].repeat(2)).sum() + (x * weight).sum()
    assert saved.total == 8 * 4 + 8 * 4 and loss.requires_grad  # x once, the repeated copy once


def test_live_bytes_follow_frees_and_reuse():
    with LiveBytes() as live:
        for _ in range(20):
            a = torch.randn(256)
            del a
        b = torch.randn(256)
    assert live.now == b.untyped_storage().nbytes() == 1024 and live.peak == 1024
