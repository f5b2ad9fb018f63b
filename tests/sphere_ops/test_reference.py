"""The reference's hand-written backward formulas against torch autograd of its forward."""

import pytest
import torch

from sphere_ops import reference as R

from helpers import at_angle, tangent, unit


def _inputs(op: str, rows: int, d: int) -> list[torch.Tensor]:
    x = unit(rows, d)
    if op == "normalize":
        return [torch.randn(rows, d, dtype=torch.float64) * 3]
    if op in ("proju", "expmap"):
        return [x, tangent(x, 0.8) + 0.05 * torch.randn(rows, d, dtype=torch.float64)]
    y = at_angle(x, torch.rand(rows, dtype=torch.float64) * 3.0 + 0.05)
    if op in ("dist", "logmap"):
        return [x, y]
    if op == "transp":
        return [x, y, torch.randn(rows, d, dtype=torch.float64)]
    return [x, y, torch.rand(rows, 1, dtype=torch.float64)]


FORWARD_BACKWARD = {
    "normalize": (lambda x: R.normalize(x, 1e-12), lambda g, x: (R.normalize_backward(g, x, 1e-12),)),
    "proju": (R.proju, R.proju_backward),
    "dist": (R.dist, R.dist_backward),
    "expmap": (R.expmap, R.expmap_backward),
    "logmap": (R.logmap, R.logmap_backward),
    "geodesic": (R.geodesic, R.geodesic_backward),
    "transp": (R.transp, R.transp_backward),
}


@pytest.mark.parametrize("op", sorted(FORWARD_BACKWARD))
@pytest.mark.parametrize("d", [2, 5, 64])
def test_backward_matches_autograd(op: str, d: int) -> None:
    forward, backward = FORWARD_BACKWARD[op]
    inputs = _inputs(op, 16, d)
    leaves = [t.clone().requires_grad_(True) for t in inputs]
    out = forward(*leaves)
    grad = torch.randn_like(out)
    expected = torch.autograd.grad(out, leaves, grad)
    got = backward(grad, *inputs)
    for e, g in zip(expected, got):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-12)


def test_geodesic_velocity_backward_matches_autograd() -> None:
    x0, x1, t = _inputs("geodesic_velocity", 16, 9)
    leaves = [v.clone().requires_grad_(True) for v in (x0, x1, t)]
    xt, ut = R.geodesic_velocity(*leaves)
    gx, gu = torch.randn_like(xt), torch.randn_like(ut)
    expected = torch.autograd.grad((xt, ut), leaves, (gx, gu))
    got = R.geodesic_velocity_backward(gx, gu, x0, x1, t)
    for e, g in zip(expected, got):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-12)


def test_expmap_q_series_meets_direct_formula() -> None:
    n = torch.tensor([0.1, 0.3, 0.499999, 0.5, 0.7, 2.0], dtype=torch.float64)
    direct = (torch.cos(n) - torch.sin(n) / n) / n**2
    torch.testing.assert_close(R.expmap_q(n), direct, rtol=1e-10, atol=0)


@pytest.mark.parametrize("d", [2, 3, 6, 7])
def test_antipodal_direction_is_unit_and_tangent(d: int) -> None:
    x = unit(32, d)
    e = R.antipodal_direction(x)
    torch.testing.assert_close(e.norm(dim=-1), torch.ones(32, dtype=torch.float64))
    torch.testing.assert_close((e * x).sum(-1), torch.zeros(32, dtype=torch.float64), atol=1e-15, rtol=0)


def test_antipodal_direction_of_last_axis_in_odd_dimension_is_first_axis() -> None:
    x = torch.zeros(2, 5, dtype=torch.float64)
    x[0, -1], x[1, -1] = 1, -1
    expected = torch.zeros(2, 5, dtype=torch.float64)
    expected[:, 0] = 1
    torch.testing.assert_close(R.antipodal_direction(x), expected)


@pytest.mark.parametrize("case", ["coincident", "antipodal"])
@pytest.mark.parametrize("op", ["logmap", "dist", "geodesic", "transp"])
def test_autograd_of_the_formulas_agrees_at_singular_points(op: str, case: str) -> None:
    """Under torch.func transforms the ops run these formulas: their derivatives must be the kernels'."""
    forward, backward = FORWARD_BACKWARD[op]
    x = unit(4, 6)
    y = x.clone() if case == "coincident" else -x
    extra = {"transp": [torch.randn(4, 6, dtype=torch.float64)], "geodesic": [torch.rand(4, 1, dtype=torch.float64)]}
    inputs = [x, y, *extra.get(op, [])]
    leaves = [t.clone().requires_grad_(True) for t in inputs]
    out = forward(*leaves)
    grad = torch.randn_like(out)
    for got, expected in zip(torch.autograd.grad(out, leaves, grad), backward(grad, *inputs)):
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
