"""Real photographs (bundled with scikit-image, so nothing is downloaded) as test images."""

from __future__ import annotations

from typing import Callable

import numpy as np
import pytest
import torch

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")


def _crops(size: tuple[int, int]) -> torch.Tensor:
    data = pytest.importorskip("skimage.data")
    height, width = size
    crops = []
    for name in PHOTOS:
        image = getattr(data, name)()
        top = (image.shape[0] - height) // 2
        left = (image.shape[1] - width) // 2
        crops.append(image[top:top + height, left:left + width])
    array = np.stack(crops).astype(np.float32) / 255.0
    return torch.from_numpy(array).permute(0, 3, 1, 2).contiguous()


@pytest.fixture(scope="session")
def photo_crops() -> Callable[[tuple[int, int]], torch.Tensor]:
    """Center crops of four photos at a given (H, W): (4, 3, H, W) float32 in [0, 1]."""
    return _crops


@pytest.fixture(scope="session")
def photo_tensor() -> torch.Tensor:
    """The four photos cropped to 96x128 (a name apart from tests/dinosae's folder fixture `photos`)."""
    return _crops((96, 128))


@pytest.fixture(scope="session")
def add_noise() -> Callable[..., torch.Tensor]:
    """Gaussian noise of a given sigma, clipped back into [0, 1]."""

    def noisy(images: torch.Tensor, sigma: float, seed: int = 0) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        noise = torch.randn(images.shape, generator=generator, dtype=images.dtype)
        return (images + sigma * noise).clamp(0, 1)

    return noisy
