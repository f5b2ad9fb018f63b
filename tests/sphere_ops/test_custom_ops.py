"""The ops as torch.library custom ops: opcheck, and torch.compile(fullgraph=True) through them."""

import pytest
import torch

import sphere_ops
from sphere_ops._spec import SPECS

from helpers import BACKENDS, at_angle, tangent, unit

# The schemas users and saved graphs see; the spec table generates them.
SCHEMAS = {
    "normalize": "sphere_ops::normalize(Tensor x, float eps) -> Tensor",
    "normalize_backward": "sphere_ops::normalize_backward(Tensor grad, Tensor x, float eps, str backend) -> Tensor",
    "proju": "sphere_ops::proju(Tensor x, Tensor u) -> Tensor",
    "proju_backward": "sphere_ops::proju_backward(Tensor grad, Tensor x, Tensor u, str backend) -> (Tensor, Tensor)",
    "dist": "sphere_ops::dist(Tensor x, Tensor y) -> Tensor",
    "dist_backward": "sphere_ops::dist_backward(Tensor grad, Tensor x, Tensor y, str backend) -> (Tensor, Tensor)",
    "expmap": "sphere_ops::expmap(Tensor x, Tensor u) -> Tensor",
    "expmap_backward": "sphere_ops::expmap_backward(Tensor grad, Tensor x, Tensor u, str backend) -> (Tensor, Tensor)",
    "logmap": "sphere_ops::logmap(Tensor x, Tensor y) -> Tensor",
    "logmap_backward": "sphere_ops::logmap_backward(Tensor grad, Tensor x, Tensor y, str backend) -> (Tensor, Tensor)",
    "geodesic": "sphere_ops::geodesic(Tensor x0, Tensor x1, Tensor t) -> Tensor",
    "geodesic_backward": (
        "sphere_ops::geodesic_backward(Tensor grad, Tensor x0, Tensor x1, Tensor t, str backend)"
        " -> (Tensor, Tensor, Tensor)"
    ),
    "geodesic_velocity": "sphere_ops::geodesic_velocity(Tensor x0, Tensor x1, Tensor t) -> (Tensor, Tensor)",
    "geodesic_velocity_backward": (
        "sphere_ops::geodesic_velocity_backward(Tensor grad_xt, Tensor grad_ut, Tensor x0, Tensor x1, Tensor t,"
        " str backend) -> (Tensor, Tensor, Tensor)"
    ),
    "transp": "sphere_ops::transp(Tensor x, Tensor y, Tensor v) -> Tensor",
    "transp_backward": (
        "sphere_ops::transp_backward(Tensor grad, Tensor x, Tensor y, Tensor v, str backend)"
        " -> (Tensor, Tensor, Tensor)"
    ),
}


def test_every_op_in_the_spec_table_is_registered_with_its_schema() -> None:
    registered = {f"{name}{suffix}" for name in SPECS for suffix in ("", "_backward")}
    assert registered == set(SCHEMAS)
    for name, schema in SCHEMAS.items():
        assert str(getattr(torch.ops.sphere_ops, name).default._schema) == schema


def _strided(a: torch.Tensor) -> torch.Tensor:
    """The same values with the first two dims' strides swapped: not contiguous."""
    return a.transpose(0, 1).contiguous().transpose(0, 1)


def _args(op: str, layout: str) -> list:
    """Arguments of the custom op, by the names in its spec."""
    x = unit(3, 5, 6, dtype=torch.float32)
    v = torch.randn(3, 5, 6)
    samples = {
        "x": v if op == "normalize" else x,
        "y": at_angle(x, 1.2).float(),
        "u": tangent(x),
        "v": v,
        "x0": x,
        "x1": at_angle(x, 1.2).float(),
        "t": torch.rand(3, 5, 1),
        "eps": 1e-12,
    }
    args = [samples[arg.name] for arg in SPECS[op].args]
    return [_strided(a) if layout == "strided" and isinstance(a, torch.Tensor) else a for a in args]


@pytest.mark.parametrize("layout", ["contiguous", "strided"])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op", sorted(SPECS))
def test_opcheck(backend: str, op: str, layout: str) -> None:
    args = tuple(a.requires_grad_(True) if isinstance(a, torch.Tensor) else a for a in _args(op, layout))
    with sphere_ops.backend(backend):
        torch.library.opcheck(getattr(torch.ops.sphere_ops, op), args)


@pytest.mark.parametrize("layout", ["contiguous", "strided"])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op", sorted(SPECS))
def test_opcheck_backward(backend: str, op: str, layout: str) -> None:
    spec, args = SPECS[op], _args(op, layout)
    grads = [torch.randn(tuple(o.shape(a.shape))) for o, a in zip(spec.outputs, spec.likes(args))]
    torch.library.opcheck(getattr(torch.ops.sphere_ops, f"{op}_backward"), (*grads, *args, backend))


def _rfm_loss(x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
    xt, ut = sphere_ops.geodesic_velocity(x0, x1, t)
    v = sphere_ops.proju(xt, pred * xt.shape[-1] ** 0.5)
    step = sphere_ops.expmap(xt, 0.1 * v)
    return (v - ut).pow(2).mean() + sphere_ops.dist(step, x1).mean() + sphere_ops.logmap(xt, x1).sum()


@pytest.mark.parametrize("layout", ["contiguous", "strided"])
@pytest.mark.parametrize("backend", ["cpp", "torch"])
def test_compiles_with_fullgraph_and_matches_eager(backend: str, layout: str) -> None:
    # Strided inputs: the compiled graph checks each custom op's output strides against its fake.
    layout_of = _strided if layout == "strided" else (lambda a: a)
    x0 = layout_of(sphere_ops.random_uniform((2, 8), 16))
    x1 = layout_of(sphere_ops.random_uniform((2, 8), 16))
    t = torch.rand(2, 1, 1)
    pred = layout_of(torch.randn(2, 8, 16)).requires_grad_(True)
    compiled = torch.compile(_rfm_loss, fullgraph=True, backend="inductor")
    with sphere_ops.backend(backend):
        eager_loss = _rfm_loss(x0, x1, t, pred)
        (eager_grad,) = torch.autograd.grad(eager_loss, pred)
        loss = compiled(x0, x1, t, pred)
        (grad,) = torch.autograd.grad(loss, pred)
    torch.testing.assert_close(loss, eager_loss)
    torch.testing.assert_close(grad, eager_grad)
