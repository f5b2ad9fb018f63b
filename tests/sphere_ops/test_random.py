"""random_uniform: shapes, unit rows, reproducibility and uniformity."""

import torch

import sphere_ops


def test_shape_dtype_and_unit_rows() -> None:
    z = sphere_ops.random_uniform((2, 256), 64, dtype=torch.bfloat16)
    assert z.shape == (2, 256, 64) and z.dtype == torch.bfloat16
    z = sphere_ops.random_uniform(5, 3, dtype=torch.float64)
    torch.testing.assert_close(z.norm(dim=-1), torch.ones(5, dtype=torch.float64))


def test_generator_makes_it_reproducible() -> None:
    a = sphere_ops.random_uniform((4,), 8, generator=torch.Generator().manual_seed(3))
    b = sphere_ops.random_uniform((4,), 8, generator=torch.Generator().manual_seed(3))
    c = sphere_ops.random_uniform((4,), 8, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_moments_of_the_uniform_distribution() -> None:
    """Uniform on S^(D-1): mean 0, covariance I / D, and <x, e_0> has variance 1 / D."""
    n, d = 200_000, 5
    z = sphere_ops.random_uniform((n,), d, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert z.mean(0).abs().max() < 4 / (n * d) ** 0.5 * 2
    cov = z.T @ z / n
    torch.testing.assert_close(cov, torch.eye(d, dtype=torch.float64) / d, atol=3e-3, rtol=0)
