"""The public sphere ops: ``torch.library`` custom ops with fused forward and backward.

Each op of :data:`sphere_ops._spec.SPECS` is registered as ``sphere_ops::<name>``
with a fake (meta) implementation, a vmap rule and an autograd formula whose
backward ``sphere_ops::<name>_backward`` is itself a custom op, so ops trace
under ``torch.compile(fullgraph=True)``, pass ``torch.library.opcheck`` and run
batched under ``torch.func.vmap`` as one fused call. The kernels that run are
chosen at call time (see :mod:`sphere_ops.backends`); the backward runs on the
backend that ran the forward. Outputs are contiguous whatever the backend, as
their fakes say.

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
from typing import Any

import torch
import torch.autograd.forward_ad as fwAD
from torch import Tensor

from . import backends, reference
from ._checks import check_pair, check_point_like, time_tensor
from ._spec import SPECS, OpSpec, pack
from .backends import SphereKernels

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

_COMPILED = {"triton": "sphere_ops._triton", "cpp": "sphere_ops._cpp"}


def _load(name: str) -> SphereKernels:
    return reference if name == "torch" else importlib.import_module(_COMPILED[name]).kernels


def _kernels(backend_name: str, x: Tensor) -> SphereKernels:
    """The kernels of the chosen backend, or the next one that takes x.

    Compiled kernels decline what they were not built for (float64 in Triton
    and CUDA, very long rows): ``auto`` then tries Triton, and every backend
    ends at the reference, which takes everything.
    """
    name = backends.resolve(backend_name, x.device)
    kernels = _load(name)
    if kernels.supports(x):
        return kernels
    if backend_name == "auto" and name == "cpp" and backends.available("triton", x.device):
        triton_kernels = _load("triton")
        if triton_kernels.supports(x):
            return triton_kernels
    return reference


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


def _contiguous(result: Tensor | tuple[Tensor, ...]) -> Tensor | tuple[Tensor, ...]:
    """The reference keeps its inputs' strides; the fakes, like the compiled kernels, promise contiguous."""
    return result.contiguous() if isinstance(result, Tensor) else tuple(t.contiguous() for t in result)


def _register(spec: OpSpec) -> torch.library.CustomOpDef:
    """``sphere_ops::<name>`` and its backward op, with their fakes, autograd and vmap rules."""
    name, n_grads, tensor_args = spec.name, len(spec.outputs), spec.tensor_positions

    def forward(*args: Any) -> Tensor | tuple[Tensor, ...]:
        return _contiguous(getattr(_kernels(backends.current(), args[0]), name)(*args))

    def backward(*args: Any) -> Tensor | tuple[Tensor, ...]:
        *args, backend = args
        return _contiguous(getattr(_kernels(backend, args[n_grads]), f"{name}_backward")(*args))

    def fake_forward(*args: Any) -> Tensor | tuple[Tensor, ...]:
        return pack([a.new_empty(o.shape(a.shape)) for o, a in zip(spec.outputs, spec.likes(args))])

    def fake_backward(*args: Any) -> Tensor | tuple[Tensor, ...]:
        tensors = [args[n_grads + i] for i in tensor_args]
        return pack([a.new_empty(a.shape) for a in tensors])

    def setup_context(ctx: Any, inputs: tuple, output: Any) -> None:
        ctx.save_for_backward(*(inputs[i] for i in tensor_args))
        ctx.scalars = [a for i, a in enumerate(inputs) if i not in tensor_args]
        ctx.backend = backends.current()

    def grad(ctx: Any, *grads: Tensor) -> tuple[Tensor | None, ...]:
        tensors, scalars = iter(ctx.saved_tensors), iter(ctx.scalars)
        args = [next(tensors) if arg.is_tensor else next(scalars) for arg in spec.args]
        if _differentiable_backward():
            result = getattr(reference, f"{name}_backward")(*grads, *args)
        else:
            result = bwd(*grads, *args, ctx.backend)
        grads_in = iter(result if isinstance(result, tuple) else (result,))
        return tuple(next(grads_in) if arg.is_tensor else None for arg in spec.args)

    def vmap_rule(info: Any, in_dims: tuple, *args: Any) -> tuple[Any, Any]:
        # Row-wise ops batch by taking the vmapped dim as one more leading dim: one fused call.
        def leading(a: Tensor, dim: int | None) -> Tensor:
            return a.movedim(dim, 0) if dim is not None else a.expand(info.batch_size, *a.shape)

        args = [leading(a, dim) if i in tensor_args else a for i, (a, dim) in enumerate(zip(args, in_dims))]
        return fwd(*args), (0,) * len(spec.outputs) if len(spec.outputs) > 1 else 0

    qualname = f"sphere_ops::{name}"
    fwd = torch.library.custom_op(qualname, forward, mutates_args=(), schema=spec.schema)
    bwd = torch.library.custom_op(f"{qualname}_backward", backward, mutates_args=(), schema=spec.backward_schema)
    fwd.register_fake(fake_forward)
    bwd.register_fake(fake_backward)
    fwd.register_autograd(grad, setup_context=setup_context)
    torch.library.register_vmap(fwd, vmap_rule)
    return fwd


_FUSED = {name: _register(spec) for name, spec in SPECS.items()}


def _call(name: str, *args: Tensor | float) -> Any:
    """Op ``name`` as its custom op, or in plain torch where a transform needs that."""
    if _needs_plain_torch(*(a for a in args if isinstance(a, Tensor))):
        return getattr(reference, name)(*args)
    return _FUSED[name](*args)


# ---------------------------------------------------------------- the public ops


def normalize(x: Tensor, eps: float = 1e-12) -> Tensor:
    """``x / max(|x|, eps)`` row-wise: project rows onto the unit sphere.

    Example:
        >>> x = torch.tensor([[3.0, 4.0]])
        >>> sphere_ops.normalize(x)
        tensor([[0.6000, 0.8000]])
    """
    check_point_like("x", x)
    return _call("normalize", x, float(eps))


def proju(x: Tensor, u: Tensor) -> Tensor:
    """Project ``u`` onto the tangent space at ``x``: ``u - <x, u> x``.

    Example:
        >>> x = torch.tensor([[1.0, 0.0, 0.0]])
        >>> sphere_ops.proju(x, torch.tensor([[2.0, 3.0, 4.0]]))
        tensor([[0., 3., 4.]])
    """
    return _call("proju", *check_pair(("x", "u"), x, u))


def dist(x: Tensor, y: Tensor) -> Tensor:
    """Geodesic distance (the angle) between rows, shape ``x.shape[:-1]``.

    Computed as ``2 atan2(|x - y|, |x + y|)``: accurate at every angle, 0 at x == y.

    Example:
        >>> x = torch.tensor([[1.0, 0.0]]); y = torch.tensor([[0.0, 1.0]])
        >>> sphere_ops.dist(x, y)
        tensor([1.5708])
    """
    return _call("dist", *check_pair(("x", "y"), x, y))


def expmap(x: Tensor, u: Tensor) -> Tensor:
    """Exponential map: follow the geodesic from ``x`` with initial velocity ``u``.

    ``cos|u| x + sinc|u| u``, normalized so that rounding never leaves the sphere.

    Example:
        >>> x = torch.tensor([[1.0, 0.0]]); u = torch.tensor([[0.0, 3.14159265 / 2]])
        >>> sphere_ops.expmap(x, u)
        tensor([[-4.3711e-08,  1.0000e+00]])
    """
    return _call("expmap", *check_pair(("x", "u"), x, u))


def logmap(x: Tensor, y: Tensor) -> Tensor:
    """Logarithmic map: the tangent vector at ``x`` pointing to ``y``, of norm ``dist(x, y)``.

    ``logmap(x, x)`` is 0; ``logmap(x, -x)`` has norm pi in a fixed direction
    (see :func:`sphere_ops.reference.antipodal_direction`).

    Example:
        >>> x = torch.tensor([[1.0, 0.0]]); y = torch.tensor([[0.0, 1.0]])
        >>> sphere_ops.logmap(x, y)
        tensor([[0.0000, 1.5708]])
    """
    return _call("logmap", *check_pair(("x", "y"), x, y))


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
    return _call("geodesic", *_geodesic_args(x0, x1, t))


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
    return _call("geodesic_velocity", *_geodesic_args(x0, x1, t))


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
    return _call("transp", *check_pair(("x", "y", "v"), x, y, v))
