"""Images from a DiT and a decoder: the arithmetic a user picks changes the pixels only by its rounding."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import dinosae
from dinosae.generation.samples import class_labels, generate_images


@pytest.fixture(scope="module")
def pair():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ae = dinosae.create_model("ae-tiny").eval()
    dit = dinosae.create_model("dit-tiny", in_dim=192, grid_size=4, num_classes=3, hidden_size=32, depth=1,
                               num_heads=2)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in dit.parameters():  # adaLN-Zero starts at a zero field
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    return ae, dit.eval()


def test_bf16_samples_stay_close_to_float32_ones(pair):
    ae, dit = pair
    labels = class_labels(8, 3)
    exact = generate_images(ae, dit, labels, steps=8, precision="fp32", progress=False).astype(np.float64)
    fast = generate_images(ae, dit, labels, steps=8, precision="bf16", progress=False).astype(np.float64)
    psnr = 10 * np.log10(255**2 / ((exact - fast) ** 2).mean())
    assert psnr > 40, psnr  # measured 51 dB: a grey level or two on a few pixels
    assert not np.array_equal(exact, fast)  # bf16 did run


def test_an_unknown_precision_is_refused(pair):
    ae, dit = pair
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        generate_images(ae, dit, class_labels(1, 3), steps=1, precision="fp8", progress=False)
