"""Per-image reconstruction metrics: PSNR and SSIM on [0, 1] RGB batches.

Both compute in float64 (the SSIM variance terms are differences of nearly equal
local moments, which float32 resolves poorly in flat regions) and return a (B,)
float64 tensor on the input's device.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ._checks import check_pair

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
_K1, _K2 = 0.01, 0.03


def psnr(a: Tensor, b: Tensor) -> Tensor:
    """Peak signal-to-noise ratio in dB of each image pair, peak value 1: (B,).

    ``10 * log10(1 / mse)`` with the mean squared error over channels and pixels;
    identical images give ``inf``.

    Example:
        >>> a = torch.full((1, 3, 8, 8), 0.5)
        >>> round(psnr(a, a + 0.1).item(), 3)
        20.0
    """
    check_pair(a, b)
    mse = (a.double() - b.double()).square().mean(dim=(1, 2, 3))
    return 10.0 * torch.log10(1.0 / mse)


def ssim(a: Tensor, b: Tensor) -> Tensor:
    """Structural similarity of each image pair: (B,).

    Gaussian window (11 taps, sigma 1.5), data range 1, population (not sample)
    covariances, the SSIM map averaged over the pixels whose window lies inside
    the image and over the three channels, which is what scikit-image's
    ``structural_similarity(channel_axis=..., gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=1)`` computes. Images need H, W >= 11.

    Example:
        >>> a = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
        >>> ssim(a, a).tolist()
        [1.0, 1.0]
    """
    check_pair(a, b)
    height, width = a.shape[-2:]
    if min(height, width) < SSIM_WINDOW:
        raise ValueError(f"ssim needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels, got {height}x{width}")
    x = a.double().flatten(0, 1).unsqueeze(1)
    y = b.double().flatten(0, 1).unsqueeze(1)
    # One filtering pass over the five local moments, stacked along the batch.
    moments = _gaussian_filter(torch.cat([x, y, x * x, y * y, x * y]))
    mx, my, mxx, myy, mxy = moments.chunk(5)
    vx = mxx - mx * mx
    vy = myy - my * my
    cxy = mxy - mx * my
    c1, c2 = _K1**2, _K2**2
    ssim_map = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return ssim_map.reshape(a.shape[0], -1).mean(dim=1)


def _gaussian_filter(x: Tensor) -> Tensor:
    """Separable Gaussian filter of (N, 1, H, W), 'valid' region only."""
    radius = SSIM_WINDOW // 2
    taps = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-0.5 * (taps / SSIM_SIGMA) ** 2)
    kernel = kernel / kernel.sum()
    x = F.conv2d(x, kernel.view(1, 1, 1, -1))
    return F.conv2d(x, kernel.view(1, 1, -1, 1))


def directional_variation(images: Tensor) -> Tensor:
    """Mean absolute difference between vertically adjacent pixels and between horizontally adjacent ones:
    (B, 2), float64. Stripes in one direction raise one and not the other.

    ``stripe_score`` (in ``dinosae eval recon``) divides the ratio of the two for
    reconstructions by the same ratio for the originals: 1 is no directional
    artifact, above 1 horizontal stripes, below 1 vertical ones.

    Example:
        >>> stripes = torch.zeros(1, 3, 4, 4); stripes[:, :, ::2] = 1.0
        >>> directional_variation(stripes).tolist()
        [[1.0, 0.0]]
    """
    x = images.double()
    rows = (x[:, :, 1:] - x[:, :, :-1]).abs().mean(dim=(1, 2, 3))
    cols = (x[:, :, :, 1:] - x[:, :, :, :-1]).abs().mean(dim=(1, 2, 3))
    return torch.stack([rows, cols], dim=1)
