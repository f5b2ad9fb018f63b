"""A convolution of a cheap parameter-free map (an activation, a nearest x2 upsampling) that saves
only the map's input for the backward pass.

Through plain autograd, ``conv(act(h))`` keeps both ``h`` (for the
activation's backward) and ``act(h)`` (for the convolution's weight gradient):
the same map twice. An upsampling before a convolution keeps a copy four
times its input. Here the map is recomputed from ``h`` in the backward pass,
which costs one elementwise pass; the arithmetic, and so the values and
gradients, are the ones autograd computes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import FunctionCtx, once_differentiable

aten = torch.ops.aten


@dataclass(frozen=True)
class Recomputable:
    """A parameter-free map and its backward: ``backward(grad_of_output, input) -> grad_of_input``."""

    forward: Callable[[torch.Tensor], torch.Tensor]
    backward: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _upsample(h: torch.Tensor) -> torch.Tensor:
    return F.interpolate(h, scale_factor=2.0, mode="nearest")


NEAREST_X2 = Recomputable(_upsample, lambda grad, h: aten.upsample_nearest2d_backward(
    grad, list(grad.shape[-2:]), list(h.shape), 2.0, 2.0))

# The backward ops that autograd itself calls for these activations, so gradients match bit for bit.
_ACTIVATION_BACKWARDS: dict[type, Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]] = {
    nn.SiLU: lambda act, grad, h: aten.silu_backward(grad, h),
    nn.ReLU: lambda act, grad, h: aten.threshold_backward(grad, h, 0),
    nn.ReLU6: lambda act, grad, h: aten.hardtanh_backward(grad, h, 0.0, 6.0),
    nn.Hardswish: lambda act, grad, h: aten.hardswish_backward(grad, h),
    nn.GELU: lambda act, grad, h: aten.gelu_backward(grad, h, approximate=act.approximate),
}


def recomputable(fn: nn.Module | Recomputable) -> Recomputable | None:
    """``fn`` as a ``Recomputable``, when its backward is known (``None`` otherwise).

    Example:
        >>> recomputable(nn.SiLU()) is not None, recomputable(nn.Tanh())
        (True, None)
    """
    if isinstance(fn, Recomputable):
        return fn
    backward = _ACTIVATION_BACKWARDS.get(type(fn))
    if backward is None or getattr(fn, "inplace", False):
        return None
    return Recomputable(fn, lambda grad, h: backward(fn, grad, h))


class _ConvOf(torch.autograd.Function):
    @staticmethod
    def forward(ctx: FunctionCtx, h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                fn: Recomputable, geometry: tuple) -> torch.Tensor:
        # Under autocast the convolution casts its inputs, as it would outside this function.
        out = F.conv2d(fn.forward(h), weight, bias, *geometry)
        ctx.save_for_backward(h, weight)
        ctx.fn, ctx.geometry, ctx.has_bias, ctx.dtype = fn, geometry, bias is not None, out.dtype
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad: torch.Tensor
                 ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None, None, None]:
        h, weight = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.geometry
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        mapped = ctx.fn.forward(h).to(ctx.dtype)
        grad_mapped, grad_w, grad_b = aten.convolution_backward(
            grad.to(ctx.dtype), mapped, weight.to(ctx.dtype), [weight.shape[0]] if ctx.has_bias else None,
            stride, padding, dilation, False, [0, 0], groups, [need_h, need_w, ctx.has_bias and need_b])
        grad_h = ctx.fn.backward(grad_mapped.to(h.dtype), h) if need_h else None
        # Autograd casts the weight's and bias's gradients to their dtypes, as after autocast's casts.
        return grad_h, grad_w, grad_b, None, None


def conv_of(conv: nn.Conv2d, fn: nn.Module | Recomputable, h: torch.Tensor) -> torch.Tensor:
    """``conv(fn(h))``, keeping only ``h`` (and the convolution's weight) for the backward pass.

    ``fn`` is an activation module (SiLU, ReLU, ReLU6, Hardswish, GELU) or a
    ``Recomputable`` such as ``NEAREST_X2``; other maps, and convolutions with
    non-zero padding modes, run through plain autograd.

    Example:
        >>> conv = nn.Conv2d(4, 4, 3, padding=1)
        >>> h = torch.randn(2, 4, 5, 5)
        >>> torch.equal(conv_of(conv, nn.SiLU(), h), conv(nn.SiLU()(h)))
        True
    """
    recompute = recomputable(fn)
    if recompute is None or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        return conv(fn.forward(h) if isinstance(fn, Recomputable) else fn(h))
    geometry = (conv.stride, conv.padding, conv.dilation, conv.groups)
    return _ConvOf.apply(h, conv.weight, conv.bias, recompute, geometry)
