"""The ``cpp`` backend: the compiled extension ``sphere_ops._C`` (CPU, and CUDA when built with it).

Tensors are flattened to contiguous ``(rows, D)`` and handed over as data
pointers; outputs are allocated here. CUDA launches go on the current stream.
The functions mirror :mod:`sphere_ops.reference` one for one.
"""

from __future__ import annotations

import os


import torch
from torch import Tensor

from . import _C
from .reference import compute_dtype

_DTYPE_CODES = {torch.float32: 0, torch.float64: 1, torch.bfloat16: 2, torch.float16: 3}


def supports(x: Tensor) -> bool:
    """Whether these kernels take x (CUDA: float32/bfloat16/float16 with D <= 1024)."""
    return not x.is_cuda or x.shape[-1] <= _C.cuda_max_dim(_DTYPE_CODES[x.dtype])


def _rows(x: Tensor) -> Tensor:
    x = x.reshape(-1, x.shape[-1])
    if not x.is_contiguous():
        x = x.contiguous()
    if x.is_cuda and x.data_ptr() % 16:
        x = x.clone()  # 16-byte vector loads need aligned rows
    return x


def _per_row(v: Tensor, dtype: torch.dtype) -> Tensor:
    """A per-row value (shape (..., 1) or (...)) as a contiguous (rows,) tensor."""
    return v.to(dtype).reshape(-1).contiguous()


def _call(name: str, rows: Tensor, *args: Tensor | float | None) -> None:
    """Run kernel ``name`` over ``rows`` (any (R, D) tensor of the launch)."""
    r, d = rows.shape
    if r == 0:
        return
    code = _DTYPE_CODES[rows.dtype]
    pointers = [a.data_ptr() if isinstance(a, Tensor) else (0 if a is None else a) for a in args]
    if not rows.is_cuda:
        getattr(_C, name)(False, 0, code, r, d, *pointers)
        return
    with torch.cuda.device(rows.device):
        stream = torch.cuda.current_stream(rows.device).cuda_stream
        getattr(_C, name)(True, stream, code, r, d, *pointers)


_HUGE_PAGE_BYTES = 1 << 22
# First-touch page faults on a fresh 50 MB output cost more than the kernel. Huge
# pages cut them about 3x when the kernel has free 2 MB pages, but when other
# code has fragmented memory (any training loop) they stall each call while
# the OS compacts it, often making things slower: opt in with SPHERE_OPS_HUGEPAGES=1.
_HUGE_PAGES = os.environ.get("SPHERE_OPS_HUGEPAGES", "0") == "1"


def _like(x: Tensor, n: int = 1) -> list[Tensor]:
    """Fresh outputs like x; large CPU ones are backed by huge pages before the kernel writes them."""
    outs = [torch.empty_like(x) for _ in range(n)]
    if _HUGE_PAGES and not x.is_cuda:
        for out in outs:
            nbytes = out.numel() * out.element_size()
            if nbytes >= _HUGE_PAGE_BYTES:
                _C.advise_hugepages(out.data_ptr(), nbytes)
    return outs


def normalize(x: Tensor, eps: float) -> Tensor:
    xr = _rows(x)
    (out,) = _like(xr)
    _call("normalize", xr, xr, eps, out)
    return out.view(x.shape)


def normalize_backward(grad: Tensor, x: Tensor, eps: float) -> Tensor:
    xr, gr = _rows(x), _rows(grad)
    (gx,) = _like(xr)
    _call("normalize_backward", xr, gr, xr, eps, gx)
    return gx.view(x.shape)


def _two_input(name: str, a: Tensor, b: Tensor) -> Tensor:
    ar, br = _rows(a), _rows(b)
    (out,) = _like(ar)
    _call(name, ar, ar, br, out)
    return out.view(a.shape)


def _two_input_backward(name: str, grad: Tensor, a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    ar, br, gr = _rows(a), _rows(b), _rows(grad)
    ga, gb = _like(ar, 2)
    _call(f"{name}_backward", ar, gr, ar, br, ga, gb)
    return ga.view(a.shape), gb.view(b.shape)


def proju(x: Tensor, u: Tensor) -> Tensor:
    return _two_input("proju", x, u)


def proju_backward(grad: Tensor, x: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
    return _two_input_backward("proju", grad, x, u)


def expmap(x: Tensor, u: Tensor) -> Tensor:
    return _two_input("expmap", x, u)


def expmap_backward(grad: Tensor, x: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
    return _two_input_backward("expmap", grad, x, u)


def logmap(x: Tensor, y: Tensor) -> Tensor:
    return _two_input("logmap", x, y)


def logmap_backward(grad: Tensor, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    return _two_input_backward("logmap", grad, x, y)


def dist(x: Tensor, y: Tensor) -> Tensor:
    xr, yr = _rows(x), _rows(y)
    out = xr.new_empty(xr.shape[0])
    _call("dist", xr, xr, yr, out)
    return out.view(x.shape[:-1])


def dist_backward(grad: Tensor, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    xr, yr = _rows(x), _rows(y)
    gx, gy = _like(xr, 2)
    _call("dist_backward", xr, _per_row(grad, x.dtype), xr, yr, gx, gy)
    return gx.view(x.shape), gy.view(y.shape)


def _geodesic(x0: Tensor, x1: Tensor, t: Tensor, with_velocity: bool) -> tuple[Tensor, Tensor | None]:
    x0r, x1r = _rows(x0), _rows(x1)
    xt, ut = _like(x0r, 2) if with_velocity else (_like(x0r)[0], None)
    _call("geodesic_velocity", x0r, x0r, x1r, _per_row(t, compute_dtype(x0.dtype)), xt, ut)
    return xt.view(x0.shape), None if ut is None else ut.view(x0.shape)


def geodesic(x0: Tensor, x1: Tensor, t: Tensor) -> Tensor:
    return _geodesic(x0, x1, t, with_velocity=False)[0]


def geodesic_velocity(x0: Tensor, x1: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    return _geodesic(x0, x1, t, with_velocity=True)


def geodesic_velocity_backward(
    grad_xt: Tensor, grad_ut: Tensor | None, x0: Tensor, x1: Tensor, t: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    x0r, x1r = _rows(x0), _rows(x1)
    gx0, gx1 = _like(x0r, 2)
    acc = compute_dtype(x0.dtype)
    gt = torch.empty(x0r.shape[0], dtype=acc, device=x0.device)
    gur = None if grad_ut is None else _rows(grad_ut)
    _call("geodesic_velocity_backward", x0r, _rows(grad_xt), gur, x0r, x1r, _per_row(t, acc), gx0, gx1, gt)
    return gx0.view(x0.shape), gx1.view(x1.shape), gt.view(t.shape).to(t.dtype)


def geodesic_backward(grad: Tensor, x0: Tensor, x1: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    return geodesic_velocity_backward(grad, None, x0, x1, t)


def transp(x: Tensor, y: Tensor, v: Tensor) -> Tensor:
    xr, yr, vr = _rows(x), _rows(y), _rows(v)
    (out,) = _like(vr)
    _call("transp", xr, xr, yr, vr, out)
    return out.view(v.shape)


def transp_backward(grad: Tensor, x: Tensor, y: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    xr, yr, vr = _rows(x), _rows(y), _rows(v)
    gx, gy, gv = _like(xr, 3)
    _call("transp_backward", xr, _rows(grad), xr, yr, vr, gx, gy, gv)
    return gx.view(x.shape), gy.view(y.shape), gv.view(v.shape)
