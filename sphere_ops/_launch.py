"""What the compiled backends share: rows in, one kernel launch, shapes back.

An op's tensors go to the kernels flattened, points as contiguous ``(rows, D)``
and per-row values (``t``, ``dist``'s gradient) as contiguous ``(rows,)``;
outputs are allocated as the op's :mod:`spec <sphere_ops._spec>` says and take
the inputs' shapes again afterwards. A backend subclasses :class:`RowKernels`
with what is its own: which tensors it takes and how it launches a kernel.
"""

from __future__ import annotations

import abc

import torch
from torch import Tensor

from ._spec import SPECS, OpSpec, pack
from .reference import compute_dtype

Tensors = list[Tensor | None]  # None: a tensor the op skips


class RowKernels(abc.ABC):
    """A compiled backend as :class:`~sphere_ops.backends.SphereKernels`."""

    @abc.abstractmethod
    def supports(self, x: Tensor) -> bool:
        """Whether these kernels take x."""

    @abc.abstractmethod
    def launch(self, kernel: str, rows: Tensor, inputs: Tensors, scalars: list[float], outputs: Tensors) -> None:
        """Run ``kernel`` (``<op.kernel>`` or ``<op.kernel>_backward``) over the
        ``(R, D)`` tensor ``rows``, R > 0.

        ``inputs`` are the op's tensor arguments, after the gradients of its
        outputs for a backward; ``outputs`` its results, or for a backward one
        gradient per tensor argument. None stands for a tensor the op skips
        (geodesic's velocity, or its gradient).
        """

    def rows(self, x: Tensor) -> Tensor:
        """A point tensor as the kernels read it: contiguous ``(R, D)``."""
        return x.reshape(-1, x.shape[-1]).contiguous()

    def allocate(self, rows: Tensor, per_row: bool, dtype: torch.dtype) -> Tensor:
        """A fresh output in ``dtype``, every element of which the kernel writes: a row per
        row of ``rows``, or one value per row."""
        if per_row:
            return torch.empty(rows.shape[0], dtype=dtype, device=rows.device)
        return torch.empty_like(rows, dtype=dtype)

    # ---------------------------------------------------------------- the ops

    def normalize(self, x: Tensor, eps: float) -> Tensor:
        return self._forward("normalize", x, eps)

    def normalize_backward(self, grad: Tensor, x: Tensor, eps: float) -> Tensor:
        return self._backward("normalize", grad, x, eps)

    def proju(self, x: Tensor, u: Tensor) -> Tensor:
        return self._forward("proju", x, u)

    def proju_backward(self, grad: Tensor, x: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
        return self._backward("proju", grad, x, u)

    def dist(self, x: Tensor, y: Tensor) -> Tensor:
        return self._forward("dist", x, y)

    def dist_backward(self, grad: Tensor, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        return self._backward("dist", grad, x, y)

    def expmap(self, x: Tensor, u: Tensor) -> Tensor:
        return self._forward("expmap", x, u)

    def expmap_backward(self, grad: Tensor, x: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
        return self._backward("expmap", grad, x, u)

    def logmap(self, x: Tensor, y: Tensor) -> Tensor:
        return self._forward("logmap", x, y)

    def logmap_backward(self, grad: Tensor, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        return self._backward("logmap", grad, x, y)

    def geodesic(self, x0: Tensor, x1: Tensor, t: Tensor) -> Tensor:
        return self._forward("geodesic", x0, x1, t)

    def geodesic_backward(self, grad: Tensor, x0: Tensor, x1: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return self._backward("geodesic", grad, x0, x1, t)

    def geodesic_velocity(self, x0: Tensor, x1: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        return self._forward("geodesic_velocity", x0, x1, t)

    def geodesic_velocity_backward(
        self, grad_xt: Tensor, grad_ut: Tensor | None, x0: Tensor, x1: Tensor, t: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        return self._backward("geodesic_velocity", grad_xt, grad_ut, x0, x1, t)

    def transp(self, x: Tensor, y: Tensor, v: Tensor) -> Tensor:
        return self._forward("transp", x, y, v)

    def transp_backward(self, grad: Tensor, x: Tensor, y: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return self._backward("transp", grad, x, y, v)

    # ---------------------------------------------------------------- the shared half

    def _forward(self, name: str, *args: Tensor | float) -> Tensor | tuple[Tensor, ...]:
        spec = SPECS[name]
        inputs = self._inputs(spec, args)
        rows, likes = inputs[0], spec.likes(args)
        outs = [self.allocate(rows, o.per_row, like.dtype) for o, like in zip(spec.outputs, likes)]
        self._run(spec.kernel, rows, inputs, _scalars(spec, args), _pad(spec, outs))
        return pack([out.view(o.shape(like.shape)) for out, o, like in zip(outs, spec.outputs, likes)])

    def _backward(self, name: str, *grads_and_args: Tensor | float | None) -> Tensor | tuple[Tensor, ...]:
        spec = SPECS[name]
        grads, args = grads_and_args[: len(spec.outputs)], grads_and_args[len(spec.outputs) :]
        inputs = self._inputs(spec, args)
        rows = inputs[0]
        flat_grads = [
            None if g is None else _per_row(g, like.dtype) if o.per_row else self.rows(g)
            for g, o, like in zip(grads, spec.outputs, spec.likes(args))
        ]
        compute = compute_dtype(rows.dtype)
        tensors = [args[i] for i in spec.tensor_positions]
        times = [arg.kind == "time" for arg in spec.grad_args]
        outs = [self.allocate(rows, time, compute if time else a.dtype) for time, a in zip(times, tensors)]
        self._run(f"{spec.kernel}_backward", rows, _pad(spec, flat_grads) + inputs, _scalars(spec, args), outs)
        results = [out.view(a.shape) for out, a in zip(outs, tensors)]
        # The kernels write t's gradient in the compute dtype.
        return pack([r.to(a.dtype) if time else r for r, a, time in zip(results, tensors, times)])

    def _run(self, kernel: str, rows: Tensor, inputs: Tensors, scalars: list[float], outputs: Tensors) -> None:
        if rows.shape[0] > 0:
            self.launch(kernel, rows, inputs, scalars, outputs)

    def _inputs(self, spec: OpSpec, args: tuple) -> list[Tensor]:
        """The tensor arguments as the kernels read them: points as rows, t per row in the compute dtype."""
        compute = compute_dtype(args[0].dtype)
        return [
            _per_row(args[i], compute) if spec.args[i].kind == "time" else self.rows(args[i])
            for i in spec.tensor_positions
        ]


def _per_row(a: Tensor, dtype: torch.dtype) -> Tensor:
    """A per-row value (shape (..., 1) or (...)) as a contiguous (R,) tensor."""
    return a.to(dtype).reshape(-1).contiguous()


def _scalars(spec: OpSpec, args: tuple) -> list[float]:
    return [a for a, arg in zip(args, spec.args) if not arg.is_tensor]


def _pad(spec: OpSpec, per_output: Tensors) -> Tensors:
    """One tensor per output of the op's kernel: None for those the op skips."""
    return per_output + [None] * (len(SPECS[spec.kernel].outputs) - len(per_output))
