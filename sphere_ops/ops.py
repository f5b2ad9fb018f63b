"""The public sphere ops: ``torch.library`` custom ops with fused forward and backward.

Each op is registered as ``sphere_ops::<name>`` with a fake (meta) implementation,
a vmap rule and an autograd formula whose backward is itself a custom op, so ops
trace under ``torch.compile(fullgraph=True)``, pass ``torch.library.opcheck`` and
run batched under ``torch.func.vmap`` as one fused call. The kernels that run are
chosen at call time (see :mod:`sphere_ops.backends`); the backward runs on the
backend that ran the forward.

Custom ops carry reverse-mode gradients only: PyTorch drops forward-mode tangents
(``torch.func.jvp``, ``torch.autograd.forward_ad``) at them without a word, and
``torch.func.grad``/``vjp`` cannot enter them. Inputs under those transforms are
therefore computed with the reference formulas in plain torch, which every
transform differentiates, with the fused ops' derivatives at ``x == y`` and
``y == -x`` too. Likewise a backward that is itself differentiated
(``create_graph=True``) runs the reference's backward formulas.
"""

from __future__ import annotations

import importlib
from types import ModuleType

import torch
import torch.autograd.forward_ad as fwAD
from torch import Tensor

from . import backends, reference
from ._checks import check_pair, check_point_like, time_tensor

__all__ = [
    "normalize",
    "proju",
    "dist",
    "expmap",
    "logmap",
    "geodesic",
    "geodesic_velocity",
    "transp",
]

_MODULES = {"torch": "sphere_ops.reference", "triton": "sphere_ops._triton", "cpp": "sphere_ops._cpp"}


def _kernels(backend_name: str, x: Tensor) -> ModuleType:
    """The kernels of the chosen backend, or the next one that takes x.

    Compiled kernels decline what they were not built for (float64 in Triton
    and CUDA, very long rows): ``auto`` then tries Triton, and every backend
    ends at the reference, which takes everything.
    """
    name = backends.resolve(backend_name, x.device)
    kernels = importlib.import_module(_MODULES[name])
    if name == "torch" or kernels.supports(x):
        return kernels
    if backend_name == "auto" and name == "cpp" and backends.available("triton", x.device):
        triton_kernels = importlib.import_module(_MODULES["triton"])
        if triton_kernels.supports(x):
            return triton_kernels
    return reference


def _forward_kernels(x: Tensor) -> ModuleType:
    return _kernels(backends.current(), x)


def _save_backend(ctx: object) -> None:
    ctx.backend = backends.current()


def _differentiable_backward() -> bool:
    """Whether a backward is itself being differentiated (``create_graph=True``).

    The fused backward ops have no derivative; the reference's backward formulas,
    plain torch, do.
    """
    return torch.is_grad_enabled()


def _needs_plain_torch(*tensors: Tensor) -> bool:
    """Whether an input carries a forward-mode tangent or is inside a torch.func grad transform."""
    if torch.compiler.is_compiling():
        return False
    return any(
        torch._C._functorch.is_gradtrackingtensor(t) or fwAD.unpack_dual(t).tangent is not None for t in tensors
    )


def _register_rowwise_vmap(op, n_tensors: int) -> None:
    """Row-wise ops batch by taking the vmapped dim as one more leading dim: one fused call."""

    def rule(info, in_dims, *args):
        tensors = [
            t.movedim(dim, 0) if dim is not None else t.expand(info.batch_size, *t.shape)
            for t, dim in zip(args[:n_tensors], in_dims[:n_tensors])
        ]
        out = op(*tensors, *args[n_tensors:])
        return out, (0,) * len(out) if isinstance(out, tuple) else 0

    torch.library.register_vmap(op, rule)


# ---------------------------------------------------------------- normalize


@torch.library.custom_op("sphere_ops::normalize", mutates_args=())
def _normalize(x: Tensor, eps: float) -> Tensor:
    return _forward_kernels(x).normalize(x, eps)


@torch.library.custom_op("sphere_ops::normalize_backward", mutates_args=())
def _normalize_backward(grad: Tensor, x: Tensor, eps: float, backend: str) -> Tensor:
    return _kernels(backend, x).normalize_backward(grad, x, eps)


@_normalize.register_fake
def _(x: Tensor, eps: float) -> Tensor:
    return torch.empty_like(x)


@_normalize_backward.register_fake
def _(grad: Tensor, x: Tensor, eps: float, backend: str) -> Tensor:
    return torch.empty_like(x)


def _normalize_setup(ctx, inputs, output) -> None:
    ctx.save_for_backward(inputs[0])
    ctx.eps = inputs[1]
    _save_backend(ctx)


def _normalize_grad(ctx, grad):
    (x,) = ctx.saved_tensors
    if _differentiable_backward():
        return reference.normalize_backward(grad, x, ctx.eps), None
    return _normalize_backward(grad, x, ctx.eps, ctx.backend), None


_normalize.register_autograd(_normalize_grad, setup_context=_normalize_setup)
_register_rowwise_vmap(_normalize, 1)


def normalize(x: Tensor, eps: float = 1e-12) -> Tensor:
    """``x / max(|x|, eps)`` row-wise: project rows onto the unit sphere.

    Example:
        >>> x = torch.tensor([[3.0, 4.0]])
        >>> sphere_ops.normalize(x)
        tensor([[0.6000, 0.8000]])
    """
    check_point_like("x", x)
    if _needs_plain_torch(x):
        return reference.normalize(x, float(eps))
    return _normalize(x, float(eps))


# ---------------------------------------------------------------- two-point ops
# proju(x, u), dist(x, y), expmap(x, u), logmap(x, y) share one shape of op:
# two (..., D) inputs, one output, a backward returning two gradients.


def _two_input_op(name: str, out_shape) -> tuple:
    qualname = f"sphere_ops::{name}"

    @torch.library.custom_op(qualname, mutates_args=())
    def fwd(a: Tensor, b: Tensor) -> Tensor:
        return getattr(_forward_kernels(a), name)(a, b)

    @torch.library.custom_op(f"{qualname}_backward", mutates_args=())
    def bwd(grad: Tensor, a: Tensor, b: Tensor, backend: str) -> tuple[Tensor, Tensor]:
        return getattr(_kernels(backend, a), f"{name}_backward")(grad, a, b)

    @fwd.register_fake
    def _(a: Tensor, b: Tensor) -> Tensor:
        return a.new_empty(out_shape(a))

    @bwd.register_fake
    def _(grad: Tensor, a: Tensor, b: Tensor, backend: str) -> tuple[Tensor, Tensor]:
        return torch.empty_like(a), torch.empty_like(b)

    def setup(ctx, inputs, output) -> None:
        ctx.save_for_backward(*inputs)
        _save_backend(ctx)

    def grad_fn(ctx, grad):
        a, b = ctx.saved_tensors
        if _differentiable_backward():
            return getattr(reference, f"{name}_backward")(grad, a, b)
        return bwd(grad, a, b, ctx.backend)

    fwd.register_autograd(grad_fn, setup_context=setup)
    _register_rowwise_vmap(fwd, 2)
    return fwd, bwd


def _same_shape(x: Tensor) -> torch.Size:
    return x.shape


def _row_shape(x: Tensor) -> torch.Size:
    return x.shape[:-1]


_proju, _proju_backward = _two_input_op("proju", _same_shape)
_dist, _dist_backward = _two_input_op("dist", _row_shape)
_expmap, _expmap_backward = _two_input_op("expmap", _same_shape)
_logmap, _logmap_backward = _two_input_op("logmap", _same_shape)


def proju(x: Tensor, u: Tensor) -> Tensor:
    """Project ``u`` onto the tangent space at ``x``: ``u - <x, u> x``.

    Example:
        >>> x = torch.tensor([[1.0, 0.0, 0.0]])
        >>> sphere_ops.proju(x, torch.tensor([[2.0, 3.0, 4.0]]))
        tensor([[0., 3., 4.]])
    """
    x, u = check_pair(("x", "u"), x, u)
    if _needs_plain_torch(x, u):
        return reference.proju(x, u)
    return _proju(x, u)


def dist(x: Tensor, y: Tensor) -> Tensor:
    """Geodesic distance (the angle) between rows, shape ``x.shape[:-1]``.

    Computed as ``2 atan2(|x - y|, |x + y|)``: accurate at every angle, 0 at x == y.

    Example:
        >>> x = torch.tensor([[1.0, 0.0]]); y = torch.tensor([[0.0, 1.0]])
        >>> sphere_ops.dist(x, y)
        tensor([1.5708])
    """
    x, y = check_pair(("x", "y"), x, y)
    if _needs_plain_torch(x, y):
        return reference.dist(x, y)
    return _dist(x, y)


def expmap(x: Tensor, u: Tensor) -> Tensor:
    """Exponential map: follow the geodesic from ``x`` with initial velocity ``u``.

    ``cos|u| x + sinc|u| u``, normalized so that rounding never leaves the sphere.

    Example:
        >>> x = torch.tensor([[1.0, 0.0]]); u = torch.tensor([[0.0, 3.14159265 / 2]])
        >>> sphere_ops.expmap(x, u)
        tensor([[-4.3711e-08,  1.0000e+00]])
    """
    x, u = check_pair(("x", "u"), x, u)
    if _needs_plain_torch(x, u):
        return reference.expmap(x, u)
    return _expmap(x, u)


def logmap(x: Tensor, y: Tensor) -> Tensor:
    """Logarithmic map: the tangent vector at ``x`` pointing to ``y``, of norm ``dist(x, y)``.

    ``logmap(x, x)`` is 0; ``logmap(x, -x)`` has norm pi in a fixed direction
    (see :func:`sphere_ops.reference.antipodal_direction`).

    Example:
        >>> x = torch.tensor([[1.0, 0.0]]); y = torch.tensor([[0.0, 1.0]])
        >>> sphere_ops.logmap(x, y)
        tensor([[0.0000, 1.5708]])
    """
    x, y = check_pair(("x", "y"), x, y)
    if _needs_plain_torch(x, y):
        return reference.logmap(x, y)
    return _logmap(x, y)


# ---------------------------------------------------------------- geodesic


@torch.library.custom_op("sphere_ops::geodesic_velocity", mutates_args=())
def _geodesic_velocity(x0: Tensor, x1: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    return _forward_kernels(x0).geodesic_velocity(x0, x1, t)


@torch.library.custom_op("sphere_ops::geodesic_velocity_backward", mutates_args=())
def _geodesic_velocity_backward(
    grad_xt: Tensor, grad_ut: Tensor, x0: Tensor, x1: Tensor, t: Tensor, backend: str
) -> tuple[Tensor, Tensor, Tensor]:
    return _kernels(backend, x0).geodesic_velocity_backward(grad_xt, grad_ut, x0, x1, t)


@torch.library.custom_op("sphere_ops::geodesic", mutates_args=())
def _geodesic(x0: Tensor, x1: Tensor, t: Tensor) -> Tensor:
    return _forward_kernels(x0).geodesic(x0, x1, t)


@torch.library.custom_op("sphere_ops::geodesic_backward", mutates_args=())
def _geodesic_backward(
    grad: Tensor, x0: Tensor, x1: Tensor, t: Tensor, backend: str
) -> tuple[Tensor, Tensor, Tensor]:
    return _kernels(backend, x0).geodesic_backward(grad, x0, x1, t)


@_geodesic_velocity.register_fake
def _(x0: Tensor, x1: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    return torch.empty_like(x0), torch.empty_like(x0)


@_geodesic_velocity_backward.register_fake
def _(grad_xt, grad_ut, x0, x1, t, backend):
    return torch.empty_like(x0), torch.empty_like(x1), torch.empty_like(t, memory_format=torch.contiguous_format)


@_geodesic.register_fake
def _(x0: Tensor, x1: Tensor, t: Tensor) -> Tensor:
    return torch.empty_like(x0)


@_geodesic_backward.register_fake
def _(grad, x0, x1, t, backend):
    return torch.empty_like(x0), torch.empty_like(x1), torch.empty_like(t, memory_format=torch.contiguous_format)


def _save_three(ctx, inputs, output) -> None:
    ctx.save_for_backward(*inputs)
    _save_backend(ctx)


def _geodesic_velocity_grad(ctx, grad_xt, grad_ut):
    x0, x1, t = ctx.saved_tensors
    if _differentiable_backward():
        return reference.geodesic_velocity_backward(grad_xt, grad_ut, x0, x1, t)
    if grad_ut is None:
        return _geodesic_backward(grad_xt, x0, x1, t, ctx.backend)
    return _geodesic_velocity_backward(grad_xt, grad_ut, x0, x1, t, ctx.backend)


def _geodesic_grad(ctx, grad):
    x0, x1, t = ctx.saved_tensors
    if _differentiable_backward():
        return reference.geodesic_backward(grad, x0, x1, t)
    return _geodesic_backward(grad, x0, x1, t, ctx.backend)


_geodesic_velocity.register_autograd(_geodesic_velocity_grad, setup_context=_save_three)
_geodesic.register_autograd(_geodesic_grad, setup_context=_save_three)
_register_rowwise_vmap(_geodesic_velocity, 3)
_register_rowwise_vmap(_geodesic, 3)


def _geodesic_args(x0: Tensor, x1: Tensor, t: float | Tensor) -> tuple[Tensor, Tensor, Tensor]:
    x0, x1 = check_pair(("x0", "x1"), x0, x1)
    return x0, x1, time_tensor(t, x0, reference.compute_dtype(x0.dtype))


def geodesic(x0: Tensor, x1: Tensor, t: float | Tensor) -> Tensor:
    """The point at time ``t`` on the shortest arc from ``x0`` (t=0) to ``x1`` (t=1).

    ``t`` is a float or a tensor broadcastable to ``x0[..., :1]``.

    Example:
        >>> x0 = torch.tensor([[1.0, 0.0]]); x1 = torch.tensor([[0.0, 1.0]])
        >>> sphere_ops.geodesic(x0, x1, 0.5)
        tensor([[0.7071, 0.7071]])
    """
    args = _geodesic_args(x0, x1, t)
    if _needs_plain_torch(*args):
        return reference.geodesic(*args)
    return _geodesic(*args)


def geodesic_velocity(x0: Tensor, x1: Tensor, t: float | Tensor) -> tuple[Tensor, Tensor]:
    """``(x_t, d x_t / dt)`` on the shortest arc from ``x0`` to ``x1``, in one fused pass.

    The velocity is tangent at ``x_t`` with norm ``dist(x0, x1)``: the target of
    Riemannian flow matching.

    Example:
        >>> x0 = torch.tensor([[1.0, 0.0]]); x1 = torch.tensor([[0.0, 1.0]])
        >>> xt, ut = sphere_ops.geodesic_velocity(x0, x1, 0.0)
        >>> ut
        tensor([[0.0000, 1.5708]])
    """
    args = _geodesic_args(x0, x1, t)
    if _needs_plain_torch(*args):
        return reference.geodesic_velocity(*args)
    return _geodesic_velocity(*args)


# ---------------------------------------------------------------- transp


@torch.library.custom_op("sphere_ops::transp", mutates_args=())
def _transp(x: Tensor, y: Tensor, v: Tensor) -> Tensor:
    return _forward_kernels(x).transp(x, y, v)


@torch.library.custom_op("sphere_ops::transp_backward", mutates_args=())
def _transp_backward(
    grad: Tensor, x: Tensor, y: Tensor, v: Tensor, backend: str
) -> tuple[Tensor, Tensor, Tensor]:
    return _kernels(backend, x).transp_backward(grad, x, y, v)


@_transp.register_fake
def _(x: Tensor, y: Tensor, v: Tensor) -> Tensor:
    return torch.empty_like(v)


@_transp_backward.register_fake
def _(grad, x, y, v, backend):
    return torch.empty_like(x), torch.empty_like(y), torch.empty_like(v)


def _transp_grad(ctx, grad):
    x, y, v = ctx.saved_tensors
    if _differentiable_backward():
        return reference.transp_backward(grad, x, y, v)
    return _transp_backward(grad, x, y, v, ctx.backend)


_transp.register_autograd(_transp_grad, setup_context=_save_three)
_register_rowwise_vmap(_transp, 3)


def transp(x: Tensor, y: Tensor, v: Tensor) -> Tensor:
    """Parallel transport of ``v`` (tangent at ``x``) to ``y`` along the geodesic.

    Applied as the rotation in the plane of ``x`` and ``y`` that carries ``x``
    to ``y``, so norms and inner products are kept exactly and the result is
    tangent at ``y``.

    Example:
        >>> x = torch.tensor([[1.0, 0.0, 0.0]]); y = torch.tensor([[0.0, 1.0, 0.0]])
        >>> sphere_ops.transp(x, y, torch.tensor([[0.0, 1.0, 1.0]])).round(decimals=6)
        tensor([[-1.,  0.,  1.]])
    """
    x, y, v = check_pair(("x", "y", "v"), x, y, v)
    if _needs_plain_torch(x, y, v):
        return reference.transp(x, y, v)
    return _transp(x, y, v)
