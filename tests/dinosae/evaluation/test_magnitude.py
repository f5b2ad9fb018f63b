"""Magnitude invariance: the spherical path ignores latent magnitudes, the Euclidean path does not.

The invariance is a property of the architecture (the projection onto the
spheres before the decoder), so an untrained model checks it as well as a
trained one, and much faster.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from dinosae.config import AE_PRESETS, preset
from dinosae.data.images import DataError
from dinosae.evaluation.magnitude import magnitude_check, random_scales, sweep_factors
from dinosae.models.autoencoder import SphericalAutoencoder
from dinosae.models.vit import RandomTeacherWarning

LIMIT = 8


@pytest.fixture(scope="module")
def model() -> SphericalAutoencoder:
    torch.manual_seed(3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomTeacherWarning)
        return SphericalAutoencoder(preset(AE_PRESETS, "tiny")).eval()


def _first_images(root, count: int) -> torch.Tensor:
    """The first ``count`` images of a class tree in ImageFolder order, read with PIL (already 64 px)."""
    paths = sorted(p for folder in sorted(root.iterdir()) for p in folder.glob("*.png"))[:count]
    arrays = [np.asarray(Image.open(p).convert("RGB"), dtype=np.float64) / 255.0 for p in paths]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float()


def _psnr(reconstruction: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    mse = ((reconstruction.clamp(0, 1).double() - images.double()) ** 2).flatten(1).mean(1)
    return -10.0 * torch.log10(mse)


def test_spherical_path_ignores_magnitude_and_euclidean_path_does_not(model, photos):
    result = magnitude_check(model, photos["heldout"], (0.1, 10.0), seed=1, sweep=[0.1, 1.0, 10.0], limit=LIMIT)
    assert result["images"] == LIMIT
    assert abs(result["psnr_change"]) < 1e-4
    assert result["max_pixel_change"] < 1e-4
    assert result["max_pixel_change_euclidean"] > 1e-2
    assert result["psnr_change_euclidean"] == pytest.approx(result["psnr_scaled_euclidean"] - result["psnr"])
    sweep = result["sweep"]
    assert sweep["factor"] == [0.1, 1.0, 10.0]
    assert max(abs(p - result["psnr"]) for p in sweep["psnr_spherical"]) < 1e-4
    assert sweep["psnr_euclidean"][1] == pytest.approx(result["psnr"], abs=1e-9)  # c = 1 changes nothing
    assert abs(sweep["psnr_euclidean"][0] - result["psnr"]) > 1e-3


@pytest.mark.parametrize("per", ["token", "image"])
def test_psnrs_match_an_independent_computation(model, photos, per):
    seed = 7
    result = magnitude_check(model, photos["heldout"], (0.5, 4.0), seed, per=per, limit=LIMIT, batch_size=LIMIT)
    images = _first_images(photos["heldout"], LIMIT)
    with torch.no_grad():
        z = model.encode(images)
        scales = random_scales(z.shape[:2], (0.5, 4.0), per, torch.Generator().manual_seed(seed))
        plain = _psnr(model.decode(z), images).mean()
        spherical = _psnr(model.decode(z * scales / (z * scales).norm(dim=-1, keepdim=True)), images).mean()
        euclidean = _psnr(model.decode(z * scales), images).mean()
    assert result["psnr"] == pytest.approx(float(plain), abs=1e-4)
    assert result["psnr_scaled"] == pytest.approx(float(spherical), abs=1e-4)
    assert result["psnr_scaled_euclidean"] == pytest.approx(float(euclidean), abs=1e-4)


def test_random_scales_are_log_uniform_per_token_or_per_image():
    generator = torch.Generator().manual_seed(0)
    per_token = random_scales((500, 16), (0.1, 10.0), "token", generator)
    assert per_token.shape == (500, 16, 1)
    assert 0.1 <= float(per_token.min()) and float(per_token.max()) <= 10.0
    # log10 of a log-uniform draw on [0.1, 10] is uniform on [-1, 1]: Kolmogorov-Smirnov distance.
    logs = np.sort(np.log10(per_token.flatten().double().numpy()))
    uniform_cdf = (logs + 1.0) / 2.0
    ranks = np.arange(1, len(logs) + 1) / len(logs)
    assert np.abs(uniform_cdf - ranks).max() < 1.63 / math.sqrt(len(logs))  # 1% level
    assert float(per_token.std(dim=1).min()) > 0  # tokens of an image differ

    per_image = random_scales((50, 16), (0.1, 10.0), "image", torch.Generator().manual_seed(1))
    assert torch.equal(per_image, per_image[:, :1].expand_as(per_image))
    assert float(per_image[:, 0].std()) > 0
    again = random_scales((50, 16), (0.1, 10.0), "image", torch.Generator().manual_seed(1))
    assert torch.equal(per_image, again)


def test_sweep_factors_are_log_spaced():
    factors = sweep_factors((0.1, 10.0), 9)
    assert factors[0] == pytest.approx(0.1) and factors[-1] == pytest.approx(10.0) and 1.0 in factors
    assert np.allclose(np.diff(np.log10(factors)), 0.25)


@pytest.mark.parametrize("factors", [(0.0, 10.0), (2.0, 1.0), (0.1, math.inf), (-1.0, 1.0)])
def test_bad_factor_ranges_are_refused(model, photos, factors):
    with pytest.raises(ValueError, match="0 < low <= high"):
        magnitude_check(model, photos["heldout"], factors, limit=1)


def test_bad_inputs_are_refused(model, photos, tmp_path):
    with pytest.raises(ValueError, match="per must be"):
        magnitude_check(model, photos["heldout"], per="pixel", limit=1)
    with pytest.raises(ValueError, match="0 < low <= high"):
        magnitude_check(model, photos["heldout"], sweep=[0.0], limit=1)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images"):
        magnitude_check(model, tmp_path / "empty")
    with pytest.raises(ValueError, match="at least 2 points"):
        sweep_factors((0.1, 10.0), 1)
