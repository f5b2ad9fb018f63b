"""Argument validation shared by the public ops: clear errors that name the argument."""

from __future__ import annotations

import torch
from torch import Tensor

FLOAT_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


def check_point_like(name: str, x: object) -> Tensor:
    """x must be a floating tensor with a last dimension D >= 2."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"{name} must be float32, float64, bfloat16 or float16, got {x.dtype}"
        )
    if x.dim() == 0 or x.shape[-1] < 2:
        raise ValueError(
            f"{name} must have shape (..., D) with D >= 2 (points on S^(D-1)), got {tuple(x.shape)}"
        )
    return x


def check_pair(names: tuple[str, ...], *tensors: object) -> tuple[Tensor, ...]:
    """Every tensor valid, and all of one shape, dtype and device."""
    checked = tuple(check_point_like(n, t) for n, t in zip(names, tensors))
    first_name, first = names[0], checked[0]
    for name, t in zip(names[1:], checked[1:]):
        if t.shape != first.shape:
            raise ValueError(
                f"{name} has shape {tuple(t.shape)} but {first_name} has shape {tuple(first.shape)};"
                " they must match"
            )
        if t.device != first.device:
            raise ValueError(f"{name} is on {t.device} but {first_name} is on {first.device}")
        if t.dtype != first.dtype:
            raise TypeError(f"{name} is {t.dtype} but {first_name} is {first.dtype}; they must match")
    return checked


def time_tensor(t: object, x: Tensor, compute_dtype: torch.dtype) -> Tensor:
    """t as a tensor of shape x[..., :1] (an expanded view) in the compute dtype."""
    target = x.shape[:-1] + (1,)
    if isinstance(t, (int, float)) and not isinstance(t, bool):
        # torch.full fills on the device; torch.tensor would copy from the host and synchronize.
        return torch.full((), float(t), dtype=compute_dtype, device=x.device).expand(target)
    if not isinstance(t, Tensor):
        raise TypeError(f"t must be a float or a tensor, got {type(t).__name__}")
    if not t.dtype.is_floating_point:
        raise TypeError(f"t must be a floating tensor, got {t.dtype}")
    if t.device != x.device:
        if t.dim() == 0 and t.device.type == "cpu":
            t = t.to(x.device)
        else:
            raise ValueError(f"t is on {t.device} but the points are on {x.device}")
    try:
        broadcast = torch.broadcast_shapes(t.shape, target)
    except RuntimeError:
        broadcast = None
    if broadcast != target:
        raise ValueError(
            f"t of shape {tuple(t.shape)} does not broadcast to x[..., :1] of shape {tuple(target)}"
        )
    return t.to(compute_dtype).expand(target)
