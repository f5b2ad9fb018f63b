"""The sliced Wasserstein distance between sample sets."""

import pytest
import torch

import sphere_ops
from dinosae.data.toy import VMFMixture
from dinosae.metrics import sliced_wasserstein


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_sliced_wasserstein_tells_the_same_distribution_from_others() -> None:
    g = seeded(4)
    mixture = VMFMixture.random(4, tokens=4, dim=8, kappa=40.0, generator=g)
    other = VMFMixture.random(4, tokens=4, dim=8, kappa=40.0, generator=g)
    data = mixture.sample(2000, g)[0]
    same = sliced_wasserstein(data, mixture.sample(2000, g)[0], generator=seeded(5)).item()
    broader = sliced_wasserstein(data, VMFMixture(mixture.means, 5.0).sample(2000, g)[0], generator=seeded(5)).item()
    different = sliced_wasserstein(data, other.sample(2000, g)[0], generator=seeded(5)).item()
    noise = sliced_wasserstein(data, sphere_ops.random_uniform((2000, 4), 8, generator=g), generator=seeded(5)).item()
    assert same < 0.2 * broader and broader < different and same < 0.1 * noise
    assert sliced_wasserstein(data, data, generator=seeded(5)).item() == 0.0
    # symmetric, and defined for sets of different sizes
    forth = sliced_wasserstein(data[:500], data[500:], generator=seeded(6))
    assert forth == sliced_wasserstein(data[500:], data[:500], generator=seeded(6)) and forth < 2 * same


def test_sliced_wasserstein_is_exact_in_one_dimension() -> None:
    """In R^1 every direction is +-1: SW is W2, which for a shift by c is |c|."""
    a = torch.randn(1000, 1, dtype=torch.float64)
    b = a[torch.randperm(1000)] + 3.0
    assert abs(sliced_wasserstein(a, b, projections=7).item() - 3.0) < 1e-12


def test_sets_of_different_sample_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="same sample shape"):
        sliced_wasserstein(torch.zeros(5, 3), torch.zeros(5, 4))
