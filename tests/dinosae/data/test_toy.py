"""The vMF mixture on a product of spheres: its samples follow their components."""

import pytest
import torch
from scipy.special import ive

import sphere_ops
from dinosae.data.toy import VMFMixture


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


def test_a_class_of_several_components_draws_from_each_of_them_only() -> None:
    mixture = VMFMixture.random(6, tokens=2, dim=8, kappa=200.0, classes=2, generator=seeded(3))
    assert mixture.labels.tolist() == [0, 1, 0, 1, 0, 1] and mixture.num_classes == 2
    x = mixture.sample_labels(torch.ones(3000, dtype=torch.long), generator=seeded(4))
    nearest = torch.einsum("bnd,knd->bk", x, mixture.means).argmax(dim=1)  # the component each sample came from
    counts = torch.bincount(nearest, minlength=6)
    assert counts[0::2].sum() == 0 and (counts[1::2] > 900).all()  # class 1's three modes, a third each
    with pytest.raises(ValueError, match=r"classes must be in \[1, components = 6\], got 7"):
        VMFMixture.random(6, tokens=2, dim=8, kappa=1.0, classes=7)


def test_a_generator_makes_sampling_reproducible() -> None:
    mixture = VMFMixture.random(4, tokens=3, dim=5, kappa=10.0, generator=seeded(1))
    a, b, c = (mixture.sample(50, generator=seeded(s)) for s in (2, 2, 3))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and not torch.equal(a[0], c[0])


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
