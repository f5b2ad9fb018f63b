"""The vMF mixture on a product of spheres and the sliced Wasserstein distance."""

import doctest

import pytest
import torch
from scipy.special import ive

import sphere_ops
from dinosae import toy
from dinosae.toy import VMFMixture, sliced_wasserstein


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_samples_follow_their_component() -> None:
    g = seeded()
    means = sphere_ops.random_uniform((3, 2), 6, generator=g, dtype=torch.float64)
    mixture = VMFMixture(means, torch.tensor([5.0, 20.0, 80.0]).unsqueeze(1), labels=torch.tensor([2, 0, 1]),
                         weights=torch.tensor([1.0, 2.0, 1.0]))
    x, y = mixture.sample(30_000, generator=g)
    assert x.shape == (30_000, 2, 6) and x.dtype == torch.float64 and mixture.num_classes == 3
    assert ((x.norm(dim=-1) - 1).abs() < 1e-12).all()
    freq = torch.bincount(y, minlength=3).double() / 30_000  # by label: component 1 (weight 2) has label 0
    torch.testing.assert_close(freq, torch.tensor([0.5, 0.25, 0.25], dtype=torch.float64), atol=0.015, rtol=0)
    for component, (label, kappa) in enumerate(zip([2, 0, 1], [5.0, 20.0, 80.0])):
        cos = (x[y == label] * means[component]).sum(-1)  # every token of a sample is near its mean token
        expected = ive(3, kappa) / ive(2, kappa)  # A_6(kappa) = I_3 / I_2
        assert abs(cos.mean().item() - expected) < 0.01


def test_a_generator_makes_sampling_reproducible() -> None:
    mixture = VMFMixture.random(4, tokens=3, dim=5, kappa=10.0, generator=seeded(1))
    a, b, c = (mixture.sample(50, generator=seeded(s)) for s in (2, 2, 3))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and not torch.equal(a[0], c[0])


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


def test_bad_inputs_raise_value_errors() -> None:
    means = sphere_ops.random_uniform((2, 3), 4)
    with pytest.raises(ValueError, match="unit tokens"):
        VMFMixture(2 * means, 1.0)
    with pytest.raises(ValueError, match=r"means must be a tensor \(K, N, D\)"):
        VMFMixture(means[0], 1.0)
    with pytest.raises(ValueError, match="kappa must be finite and >= 0"):
        VMFMixture(means, -1.0)
    with pytest.raises(ValueError, match="does not broadcast"):
        VMFMixture(means, torch.ones(5))
    with pytest.raises(ValueError, match="labels must be 2"):
        VMFMixture(means, 1.0, labels=torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="weights must be 2"):
        VMFMixture(means, 1.0, weights=torch.zeros(2))
    with pytest.raises(ValueError, match="same sample shape"):
        sliced_wasserstein(torch.zeros(5, 3), torch.zeros(5, 4))


def test_docstring_examples() -> None:
    result = doctest.testmod(toy, extraglobs={"torch": torch, "sphere_ops": sphere_ops})
    assert result.failed == 0 and result.attempted > 0
