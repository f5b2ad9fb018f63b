import pytest
import torch

from dinosae.evaluation.pca_baseline import PatchPCA, _from_patches, pca_baseline
from dinosae.metrics import psnr


def _images(n: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_data_of_rank_k_is_reconstructed_exactly_with_k_components():
    g = torch.Generator().manual_seed(1)
    codes, basis = torch.randn(40, 4, 5, generator=g, dtype=torch.float64), torch.randn(5, 768, generator=g,
                                                                                         dtype=torch.float64)
    offset = torch.rand(768, generator=g, dtype=torch.float64)
    patches = codes @ basis + offset
    images = _from_patches(patches, 16, 32, 32)
    pca = PatchPCA.fit(images, patch=16, components=5)
    assert torch.allclose(pca.reconstruct(images).double(), images, atol=1e-5)


def test_more_components_never_reconstruct_worse():
    train, test = _images(16), _images(4, seed=1)
    errors = [float((PatchPCA.fit(train, 16, k).reconstruct(test) - test).pow(2).mean()) for k in (8, 32, 128, 512)]
    assert errors == sorted(errors, reverse=True) and errors[-1] < errors[0]


def test_components_are_orthonormal_and_ordered_by_variance():
    train = _images(16)
    pca = PatchPCA.fit(train, 16, 24)
    eye = torch.eye(24, dtype=torch.float64)
    assert torch.allclose(pca.basis.T @ pca.basis, eye, atol=1e-10)
    variance = pca.encode(train).flatten(0, 1).var(0)
    assert bool((variance[:-1] >= variance[1:] - 1e-9).all())


def test_baseline_reports_each_split():
    splits = {"a": _images(2, seed=2), "b": _images(3, seed=3)}
    result = pca_baseline(_images(16), splits, patch=16, components=64)
    pca = PatchPCA.fit(_images(16), 16, 64)
    assert set(result) == {"a", "b"} and all(5 < m["psnr"] < 60 for m in result.values())
    for name, images in splits.items():
        assert result[name]["psnr"] == pytest.approx(float(psnr(pca.reconstruct(images).clamp(0, 1), images).mean()))


@pytest.mark.parametrize("images, components, message", [
    (torch.rand(2, 1, 32, 32), 4, "images must be a tensor"),
    (torch.rand(2, 3, 30, 32), 4, "multiples of the patch"),
    (torch.rand(2, 3, 32, 32), 769, "components must be between 1 and 768"),
])
def test_bad_input_is_named(images, components, message):
    with pytest.raises(ValueError, match=message):
        PatchPCA.fit(images, 16, components)
