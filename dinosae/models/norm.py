"""RMS normalization of NCHW maps that keeps only what its backward needs.

Autograd through the plain formula, under bf16 autocast, keeps two float32
copies of the input and a normalized copy: ten bytes per element where the
backward needs two (the bf16 input) plus one float32 statistic per pixel. This
function saves exactly that and recomputes the rest in the backward pass.
"""

from __future__ import annotations

import torch
from torch.autograd.function import FunctionCtx, once_differentiable

# Images per pass are chosen so that float32 working copies stay below this many elements (128 MiB):
# a whole batch's copies at full resolution would be the largest transient of a training step.
CHUNK_ELEMENTS = 1 << 25


def _spans(x: torch.Tensor) -> list[slice]:
    per_image = max(1, x[:1].numel())
    step = max(1, CHUNK_ELEMENTS // per_image)
    return [slice(start, start + step) for start in range(0, x.shape[0], step)]


def _view(parameter: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return parameter.to(dtype).view(1, -1, 1, 1)


class _RMSNorm2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx: FunctionCtx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                dims: tuple[int, ...], eps: float) -> torch.Tensor:
        compute = torch.promote_types(x.dtype, torch.float32)
        stat_shape = [x.shape[0]] + [1 if d in dims else x.shape[d] for d in range(1, 4)]
        rstd = torch.empty(stat_shape, dtype=compute, device=x.device)
        out = torch.empty_like(x)
        w = _view(weight, compute)
        for span in _spans(x):
            chunk = x[span].to(compute)
            scale = torch.rsqrt(chunk.pow(2).mean(dim=dims, keepdim=True).add_(eps))
            rstd[span] = scale
            # The same operations in the same order as the formula (x * scale) * weight + bias.
            y = (chunk * scale).mul_(w)
            if bias is not None:
                y.add_(_view(bias, compute))
            out[span] = y
        ctx.save_for_backward(x, rstd, weight)
        ctx.dims, ctx.has_bias = dims, bias is not None
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad: torch.Tensor
                 ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None, None, None]:
        x, rstd, weight = ctx.saved_tensors
        dims, compute = ctx.dims, rstd.dtype
        w = _view(weight, compute)
        grad_x = torch.empty_like(x) if ctx.needs_input_grad[0] else None
        grad_w = torch.zeros(weight.shape, dtype=compute, device=x.device)
        grad_b = torch.zeros(weight.shape, dtype=compute, device=x.device)
        for span in _spans(x):
            g, scale = grad[span], rstd[span]
            normalized = x[span] * scale
            grad_b += g.sum(dim=(0, 2, 3), dtype=compute)
            grad_w += (g * normalized).sum(dim=(0, 2, 3))
            if grad_x is not None:
                # d/dx of x r with r = (mean(x^2) + eps)^(-1/2): r (g_hat - x_hat mean(g_hat x_hat)), g_hat = g w
                g_hat = g * w
                dot = (g_hat * normalized).mean(dim=dims, keepdim=True)
                grad_x[span] = g_hat.sub_(normalized.mul_(dot)).mul_(scale)
        return (grad_x, grad_w.to(weight.dtype) if ctx.needs_input_grad[1] else None,
                grad_b.to(weight.dtype) if ctx.has_bias and ctx.needs_input_grad[2] else None, None, None)


def rms_norm_2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, over: str = "pixel",
                eps: float = 1e-5) -> torch.Tensor:
    """``x / rms * weight + bias`` of an NCHW map, the RMS per pixel over channels (``"pixel"``) or per
    image over (C, H, W) (``"image"``); the result has x's dtype and memory format.

    The arithmetic runs in float32 at least (float64 stays float64). For the
    backward it saves ``x`` as it is (bf16 under autocast) and the reciprocal
    RMS in float32, (N, 1, H, W) or (N, 1, 1, 1); large batches are processed
    a few images at a time, so float32 working copies stay small.

    Example:
        >>> x = torch.randn(2, 4, 3, 3, dtype=torch.bfloat16)
        >>> y = rms_norm_2d(x, torch.ones(4), torch.zeros(4))
        >>> y.dtype, bool(torch.allclose(y.float().pow(2).mean(1), torch.ones(2, 3, 3), atol=2e-2))
        (torch.bfloat16, True)
    """
    if over not in ("pixel", "image"):
        raise ValueError(f"rms_norm_2d normalizes over 'pixel' or 'image', not {over!r}")
    if x.dim() != 4:
        raise ValueError(f"expected an NCHW map, got shape {tuple(x.shape)}")
    return _RMSNorm2d.apply(x, weight, bias, (1,) if over == "pixel" else (1, 2, 3), eps)
