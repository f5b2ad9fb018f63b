"""PSNR and SSIM against scikit-image on real photos."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from dinosae.metrics.image import psnr, ssim

skimage_metrics = pytest.importorskip("skimage.metrics")


def _hwc(image: torch.Tensor) -> np.ndarray:
    return image.permute(1, 2, 0).double().numpy()


@pytest.mark.parametrize("sigma", [0.01, 0.05, 0.2])
def test_psnr_matches_skimage(photo_tensor, add_noise, sigma):
    noisy = add_noise(photo_tensor, sigma)
    ours = psnr(photo_tensor, noisy)
    assert ours.shape == (len(photo_tensor),) and ours.dtype == torch.float64
    for i in range(len(photo_tensor)):
        expected = skimage_metrics.peak_signal_noise_ratio(_hwc(photo_tensor[i]), _hwc(noisy[i]), data_range=1)
        assert ours[i].item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("sigma", [0.01, 0.05, 0.2])
def test_ssim_matches_skimage(photo_tensor, add_noise, sigma):
    noisy = add_noise(photo_tensor, sigma, seed=1)
    ours = ssim(photo_tensor, noisy)
    assert ours.shape == (len(photo_tensor),) and ours.dtype == torch.float64
    for i in range(len(photo_tensor)):
        expected = skimage_metrics.structural_similarity(
            _hwc(photo_tensor[i]), _hwc(noisy[i]), channel_axis=2, gaussian_weights=True, sigma=1.5,
            use_sample_covariance=False, data_range=1)
        assert ours[i].item() == pytest.approx(expected, abs=1e-10)


def test_ssim_matches_skimage_on_unrelated_images_and_odd_sizes(photo_crops):
    images = photo_crops((37, 53))
    other = images.roll(1, dims=0)
    ours = ssim(images, other)
    for i in range(len(images)):
        expected = skimage_metrics.structural_similarity(
            _hwc(images[i]), _hwc(other[i]), channel_axis=2, gaussian_weights=True, sigma=1.5,
            use_sample_covariance=False, data_range=1)
        assert ours[i].item() == pytest.approx(expected, abs=1e-10)


def test_more_noise_scores_worse(photo_tensor, add_noise):
    mild, strong = add_noise(photo_tensor, 0.02), add_noise(photo_tensor, 0.1)
    assert (psnr(photo_tensor, mild) > psnr(photo_tensor, strong)).all()
    assert (ssim(photo_tensor, mild) > ssim(photo_tensor, strong)).all()
    assert torch.isinf(psnr(photo_tensor, photo_tensor)).all()
    assert torch.allclose(ssim(photo_tensor, photo_tensor), torch.ones(len(photo_tensor), dtype=torch.float64))


def test_bad_inputs_raise(photo_tensor):
    good = photo_tensor[:1]
    cases = {
        "must have shape": (good[:, :2], good[:, :2]),
        "floating dtype": ((good * 255).to(torch.uint8), (good * 255).to(torch.uint8)),
        "differ in shape": (good, photo_tensor[:2]),
        "must lie in [0, 1]": (good * 2, good),
        "NaN": (good.clone().fill_(float("nan")), good),
    }
    for message, (a, b) in cases.items():
        for metric in (psnr, ssim):
            with pytest.raises(ValueError, match=re.escape(message)):
                metric(a, b)
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(good[..., :10, :], good[..., :10, :])
