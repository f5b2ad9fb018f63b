"""random_vmf: exact von Mises-Fisher samples (moments against closed forms), reproducibility, errors."""

import pytest
import torch
from scipy.special import ive

import sphere_ops
import sphere_ops.vmf

from helpers import unit

N = 40_000


def mean_resultant_length(dim: int, kappa: float) -> float:
    """A_D(kappa) = I_{D/2}(kappa) / I_{D/2-1}(kappa), the closed form of E[<mu, x>]."""
    return float(ive(dim / 2, kappa) / ive(dim / 2 - 1, kappa))


def draw(dim: int, kappa: float, seed: int = 0, n: int = N) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    mu = unit(n, dim, generator=g)  # a different mean direction for every row
    return mu, sphere_ops.random_vmf(mu, kappa, generator=g)


@pytest.mark.parametrize(("dim", "kappa"), [(2, 0.7), (3, 5.0), (8, 20.0), (64, 3.0), (64, 200.0), (512, 2000.0)])
def test_cosine_moments_match_the_closed_forms(dim: int, kappa: float) -> None:
    """E[w] = A_D(kappa) and E[w^2] = 1 - (D - 1) A_D(kappa) / kappa, for w = <mu, x>."""
    mu, x = draw(dim, kappa)
    w = (x * mu).sum(-1)
    a = mean_resultant_length(dim, kappa)
    standard_error = w.std().item() / N**0.5
    assert abs(w.mean().item() - a) < 5 * standard_error
    second = 1 - (dim - 1) * a / kappa
    assert abs(w.pow(2).mean().item() - second) < 5 * w.pow(2).std().item() / N**0.5


@pytest.mark.parametrize("dim", [3, 16])
def test_the_tangent_part_is_isotropic(dim: int) -> None:
    """x - w mu is uniform in direction around mu: covariance (1 - E[w^2]) / (D - 1) (I - mu mu^T)."""
    g = torch.Generator().manual_seed(1)
    mu = unit(1, dim, generator=g).expand(N, dim).contiguous()
    x = sphere_ops.random_vmf(mu, 10.0, generator=g)
    w = (x * mu).sum(-1, keepdim=True)
    tangent = x - w * mu
    cov = tangent.T @ tangent / N
    m = mu[0]
    expected = (1 - w.pow(2).mean()) / (dim - 1) * (torch.eye(dim, dtype=torch.float64) - torch.outer(m, m))
    torch.testing.assert_close(cov, expected, atol=6e-3 / dim**0.5, rtol=0)


def test_the_mean_direction_converges_to_mu() -> None:
    g = torch.Generator().manual_seed(2)
    mu = unit(1, 32, generator=g)
    errors = []
    for n in (100, 10_000):
        x = sphere_ops.random_vmf(mu.expand(n, 32), 40.0, generator=g)
        errors.append(sphere_ops.dist(sphere_ops.normalize(x.mean(0, keepdim=True)), mu).item())
    assert errors[1] < errors[0] / 3 and errors[1] < 0.03


@pytest.mark.parametrize("kappa", [0.0, 1e-9])
def test_small_kappa_is_uniform(kappa: float) -> None:
    """Uniform on S^(D-1): mean 0 and covariance I / D."""
    dim = 5
    mu, x = draw(dim, kappa, seed=3)
    assert x.mean(0).abs().max() < 5 / (N * dim) ** 0.5
    torch.testing.assert_close(x.T @ x / N, torch.eye(dim, dtype=torch.float64) / dim, atol=5e-3, rtol=0)
    assert abs((x * mu).sum(-1).mean().item()) < 5 / (N * dim) ** 0.5


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_unit_rows_shape_and_dtype(dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(4)
    mu = unit(3, 7, 16, dtype=dtype, generator=g)
    kappa = torch.tensor([[0.0], [5.0], [1e6]]).expand(3, 7)  # one kappa per row, broadcast
    x = sphere_ops.random_vmf(mu, kappa, generator=g)
    assert x.shape == mu.shape and x.dtype == dtype
    assert ((x.double().norm(dim=-1) - 1).abs() <= 4e-7).all()
    cos = (x.double() * mu.double()).sum(-1)
    assert (cos[2] > 0.999).all()


def test_large_kappa_keeps_its_digits() -> None:
    """E[1 - w] = (D - 1) / (2 kappa) to first order: no cancellation at kappa = 1e8."""
    dim, kappa = 16, 1e8
    mu, x = draw(dim, kappa, seed=5, n=20_000)
    one_minus_w = sphere_ops.dist(x, mu).pow(2) / 2  # 1 - cos(angle), without subtracting near-equal numbers
    assert abs(one_minus_w.mean().item() / ((dim - 1) / (2 * kappa)) - 1) < 0.05


def test_generator_makes_it_reproducible() -> None:
    mu = unit(64, 10)
    a = sphere_ops.random_vmf(mu, 3.0, torch.Generator().manual_seed(7))
    b = sphere_ops.random_vmf(mu, 3.0, generator=torch.Generator().manual_seed(7))
    c = sphere_ops.random_vmf(mu, 3.0, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_bad_inputs_name_the_problem() -> None:
    mu = unit(4, 8)
    with pytest.raises(ValueError, match="unit rows"):
        sphere_ops.random_vmf(2 * mu, 1.0)
    with pytest.raises(ValueError, match="kappa must be finite and >= 0"):
        sphere_ops.random_vmf(mu, -1.0)
    with pytest.raises(ValueError, match="kappa must be finite"):
        sphere_ops.random_vmf(mu, float("inf"))
    with pytest.raises(ValueError, match="does not broadcast"):
        sphere_ops.random_vmf(mu, torch.ones(3))
    with pytest.raises(TypeError, match="float32 or float64"):
        sphere_ops.random_vmf(mu.half(), 1.0)
    with pytest.raises(ValueError, match="D >= 2"):
        sphere_ops.random_vmf(torch.ones(4, 1), 1.0)
