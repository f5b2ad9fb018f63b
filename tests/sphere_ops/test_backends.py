"""Every backend against the float64 reference: outputs, gradients, layouts, poisoned outputs."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import pytest
import torch

import sphere_ops
from sphere_ops import reference as R
from sphere_ops._spec import SPECS

from helpers import BACKENDS, at_angle, max_rel, tangent, tolerance, unit

DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]


def _case(op: str, shape: tuple[int, ...], dtype: torch.dtype) -> tuple[Callable, list[torch.Tensor]]:
    """The public op as a function of tensors, and random float64 inputs for it."""
    d = shape[-1]
    x = unit(*shape)
    y = at_angle(x, torch.rand(shape[:-1], dtype=torch.float64) * 2.9 + 0.1)
    if op == "normalize":
        return sphere_ops.normalize, [torch.randn(*shape, dtype=torch.float64) * 2]
    if op == "proju":
        return sphere_ops.proju, [x, torch.randn(*shape, dtype=torch.float64)]
    if op == "expmap":
        return sphere_ops.expmap, [x, tangent(x, 1.5 / d**0.5)]
    if op in ("dist", "logmap"):
        return getattr(sphere_ops, op), [x, y]
    if op == "transp":
        return sphere_ops.transp, [x, y, torch.randn(*shape, dtype=torch.float64)]
    t = torch.rand(*shape[:-1], 1, dtype=torch.float64)
    if op == "geodesic":
        return sphere_ops.geodesic, [x, y, t]
    if op == "geodesic_velocity":
        return (lambda a, b, s: sphere_ops.geodesic_velocity(a, b, s)), [x, y, t]
    raise KeyError(f"no test case for {op}")


OPS = list(SPECS)


def _run(fn: Callable, inputs: list[torch.Tensor], seed: int = 1) -> tuple[list, list]:
    leaves = [v.clone().requires_grad_(True) for v in inputs]
    out = fn(*leaves)
    outs = list(out) if isinstance(out, tuple) else [out]
    g = torch.Generator().manual_seed(seed)
    grads = [torch.randn(o.shape, generator=g, dtype=torch.float64).to(o.dtype) for o in outs]
    torch.autograd.backward(outs, grads)
    return [o.detach() for o in outs], [v.grad for v in leaves]


def _cast(inputs: list[torch.Tensor], dtype: torch.dtype) -> list[torch.Tensor]:
    # t stays in the compute dtype (what ops convert it to anyway).
    return [v.to(dtype) if v.shape[-1] != 1 else v.to(R.compute_dtype(dtype)) for v in inputs]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("op", OPS)
def test_backend_matches_reference(backend: str, dtype: torch.dtype, op: str) -> None:
    fn, inputs = _case(op, (3, 5, 37), dtype)
    inputs = _cast(inputs, dtype)
    with sphere_ops.backend("torch"):
        ref_out, ref_grad = _run(fn, [v.double() for v in inputs])
    with sphere_ops.backend(backend):
        out, grad = _run(fn, inputs)
    tol = tolerance(dtype)
    for o, r in zip(out, ref_out):
        assert o.dtype == dtype
        assert max_rel(o, r) <= tol, f"{op} output off by {max_rel(o, r):.2e}"
    for g, r in zip(grad, ref_grad):
        assert max_rel(g, r) <= 2 * tol, f"{op} gradient off by {max_rel(g, r):.2e}"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("d", [2, 3, 17, 128, 1100])
def test_dimensions_that_fill_no_block(backend: str, d: int) -> None:
    x = unit(7, d, dtype=torch.float32)
    y = at_angle(x, 1.3).float()
    t = torch.rand(7, 1)
    with sphere_ops.backend(backend):
        xt, ut = sphere_ops.geodesic_velocity(x, y, t)
    ref_xt, ref_ut = R.geodesic_velocity(x.double(), y.double(), t.double())
    assert max_rel(xt, ref_xt) < 2e-6
    assert max_rel(ut, ref_ut) < 2e-6


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op", ["logmap", "geodesic_velocity", "transp", "expmap"])
def test_float64_gradcheck(backend: str, op: str) -> None:
    fn, inputs = _case(op, (2, 3, 6), torch.float64)
    leaves = [v.clone().requires_grad_(True) for v in inputs]
    with sphere_ops.backend(backend):
        assert torch.autograd.gradcheck(fn, leaves, eps=1e-6, atol=1e-7)


@contextlib.contextmanager
def _poisoned_allocations() -> Iterator[None]:
    """Every tensor the backends allocate starts as NaN (or the integer's maximum)."""
    originals = {name: getattr(torch, name) for name in ("empty_like", "empty")}
    original_new_empty = torch.Tensor.new_empty

    def poison(t: torch.Tensor) -> torch.Tensor:
        return t.fill_(float("nan")) if t.dtype.is_floating_point else t

    def empty_like(*args, **kwargs):
        return poison(originals["empty_like"](*args, **kwargs))

    def empty(*args, **kwargs):
        return poison(originals["empty"](*args, **kwargs))

    def new_empty(self, *args, **kwargs):
        return poison(original_new_empty(self, *args, **kwargs))

    torch.empty_like, torch.empty = empty_like, empty
    torch.Tensor.new_empty = new_empty
    try:
        yield
    finally:
        torch.empty_like, torch.empty = originals["empty_like"], originals["empty"]
        torch.Tensor.new_empty = original_new_empty


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op", OPS)
def test_every_output_element_is_written(backend: str, op: str) -> None:
    fn, inputs = _case(op, (4, 45), torch.float32)
    inputs = _cast(inputs, torch.float32)
    with sphere_ops.backend(backend), _poisoned_allocations():
        out, grad = _run(fn, inputs)
    for tensor in out + grad:
        assert torch.isfinite(tensor).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_non_contiguous_inputs(backend: str) -> None:
    x = unit(33, 6, dtype=torch.float32).t().contiguous().t()  # (33, 6), column-major
    y = at_angle(x, 0.7).float().t().contiguous().t()
    assert not x.is_contiguous() and not y.is_contiguous()
    x_slice = unit(6, 66, dtype=torch.float32)[:, ::2]  # a strided slice
    with sphere_ops.backend(backend):
        got = [
            sphere_ops.logmap(x, y),
            sphere_ops.dist(x, y),
            sphere_ops.transp(x, y, y),
            sphere_ops.normalize(x_slice),
            sphere_ops.geodesic(x, y, 0.3),
        ]
        want = [
            sphere_ops.logmap(x.contiguous(), y.contiguous()),
            sphere_ops.dist(x.contiguous(), y.contiguous()),
            sphere_ops.transp(x.contiguous(), y.contiguous(), y.contiguous()),
            sphere_ops.normalize(x_slice.contiguous()),
            sphere_ops.geodesic(x.contiguous(), y.contiguous(), 0.3),
        ]
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=2e-6, atol=4e-7)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", [(0, 8), (3, 0, 8)])
def test_empty_tensors(backend: str, shape: tuple[int, ...]) -> None:
    x = torch.randn(shape, requires_grad=True)
    y = torch.randn(shape)
    with sphere_ops.backend(backend):
        out = sphere_ops.logmap(x, y)
        d = sphere_ops.dist(x, y)
        xt, ut = sphere_ops.geodesic_velocity(x, y, 0.5)
        (out.sum() + d.sum() + xt.sum() + ut.sum()).backward()
    assert out.shape == shape and d.shape == shape[:-1] and xt.shape == shape
    assert x.grad.shape == shape


@pytest.mark.parametrize("backend", BACKENDS)
def test_time_tensor_broadcasts_and_gets_its_gradient(backend: str) -> None:
    x0 = unit(4, 16, 8, dtype=torch.float32)
    x1 = at_angle(x0, 1.0).float()
    t = torch.rand(4, 1, 1, requires_grad=True)
    with sphere_ops.backend(backend):
        xt, ut = sphere_ops.geodesic_velocity(x0, x1, t)
        (xt * ut).sum().backward()
    t_ref = t.detach().double().requires_grad_(True)
    with sphere_ops.backend("torch"):
        xr, ur = sphere_ops.geodesic_velocity(x0.double(), x1.double(), t_ref)
        (xr * ur).sum().backward()
    assert t.grad.shape == (4, 1, 1)
    torch.testing.assert_close(t.grad.double(), t_ref.grad, rtol=1e-5, atol=1e-5)


def _cpu_isas() -> list[str]:
    from sphere_ops import _C

    order = ["base", "avx2", "avx512"]
    return order[: order.index(_C.best_cpu_isa()) + 1]


@pytest.fixture(params=_cpu_isas() if "cpp" in BACKENDS else [])
def cpu_isa(request: pytest.FixtureRequest) -> Iterator[str]:
    from sphere_ops import _C

    previous = _C.cpu_isa()
    _C.set_cpu_isa(request.param)
    yield request.param
    _C.set_cpu_isa(previous)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("op", OPS)
def test_every_cpu_instruction_set_build_matches_reference(cpu_isa: str, dtype: torch.dtype, op: str) -> None:
    fn, inputs = _case(op, (5, 131), dtype)
    inputs = _cast(inputs, dtype)
    with sphere_ops.backend("torch"):
        ref_out, ref_grad = _run(fn, [v.double() for v in inputs])
    with sphere_ops.backend("cpp"):
        out, grad = _run(fn, inputs)
    for got, want in zip(out + grad, ref_out + ref_grad):
        assert max_rel(got, want) <= 2 * tolerance(dtype), f"{cpu_isa} {op}"
