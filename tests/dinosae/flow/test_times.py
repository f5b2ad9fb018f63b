"""Training-time samplers and the time shift."""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

from dinosae.flow import LogitNormalTime, ShiftedTime, UniformTime, dimension_shift, time_grid, time_shift


def test_time_samplers_have_their_distributions() -> None:
    """Kolmogorov-Smirnov against the exact laws (a fixed seed, so the test is deterministic)."""
    n, g = 20_000, torch.Generator().manual_seed(5)
    t = UniformTime()(n, generator=g, dtype=torch.float64)
    assert stats.kstest(t.numpy(), "uniform").pvalue > 1e-3
    t = LogitNormalTime(0.7, 1.3)(n, generator=g, dtype=torch.float64)
    assert ((t > 0) & (t < 1)).all()
    assert stats.kstest(torch.logit(t).numpy(), "norm", args=(0.7, 1.3)).pvalue > 1e-3
    shift = 4.0
    t = ShiftedTime(UniformTime(), shift)(n, generator=g, dtype=torch.float64)
    unshifted = shift * t / (1 + (shift - 1) * t)  # the inverse of time_shift
    assert stats.kstest(unshifted.numpy(), "uniform").pvalue > 1e-3
    assert t.mean() < 0.35  # towards noise


def test_dimension_shift() -> None:
    assert dimension_shift(4096) == 1.0
    assert math.isclose(dimension_shift(256 * 768), math.sqrt(48))
    assert math.isclose(dimension_shift(16 * 8, base_dim=32), 2.0)


@given(
    t=st.floats(0.0, 1.0),
    a=st.floats(0.05, 20.0),
    b=st.floats(0.05, 20.0),
)
def test_time_shift_is_a_group_of_warps(t: float, a: float, b: float) -> None:
    """Shifts fix 0 and 1, keep order, compose by multiplying, and shift 1 is the identity."""
    assert time_shift(0.0, a) == 0.0 and math.isclose(time_shift(1.0, a), 1.0)
    assert math.isclose(time_shift(t, 1.0), t)
    assert math.isclose(time_shift(time_shift(t, a), b), time_shift(t, a * b), rel_tol=1e-9, abs_tol=1e-12)
    assert (time_shift(t, a) <= t) == (a >= 1) or math.isclose(time_shift(t, a), t)


def test_time_grid() -> None:
    assert time_grid(4) == [0.0, 0.25, 0.5, 0.75, 1.0]
    for shift in (0.3, 1.0, 6.928):
        grid = time_grid(25, shift)
        assert grid[0] == 0.0 and grid[-1] == 1.0 and all(a < b for a, b in zip(grid, grid[1:]))
    steps = torch.tensor(time_grid(10, 3.0)).diff()
    assert (steps.diff() > 0).all()  # shift > 1: small steps near noise, large near data
    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        time_grid(0)


def test_bad_settings_raise_value_errors() -> None:
    with pytest.raises(ValueError, match="shift must be > 0"):
        ShiftedTime(UniformTime(), 0.0)
    with pytest.raises(ValueError, match="std must be > 0"):
        LogitNormalTime(0.0, -1.0)
