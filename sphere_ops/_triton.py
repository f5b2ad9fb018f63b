"""The ``triton`` backend: fused kernels on a 2-D block of ROWS rows x BLOCK_D columns.

Each program owns many rows; reductions run along the row in float32. The same
kernels run on CPU under ``TRITON_INTERPRET=1``. Triton's portable math has no
atan2, so :func:`_atan2` evaluates its own polynomial (relative error under
2e-7 in float32). Divisions and square roots use the IEEE-rounded forms.
The math mirrors :mod:`sphere_ops.reference` and ``csrc/sphere_math.h``.
float64 inputs and rows longer than MAX_DIM never reach these kernels (see
``kernels.supports``): the reference serves them. :mod:`sphere_ops._launch`
flattens the tensors to rows and allocates the outputs.
"""

from __future__ import annotations

import contextlib
import os

import torch
import triton
import triton.language as tl
from torch import Tensor

from ._launch import RowKernels, Tensors

# Kernel constants are constexpr: Triton 3.6 and newer refuse plain module globals in kernels.
_PI = tl.constexpr(3.141592653589793)
_TAN_PI_8 = tl.constexpr(0.41421356237309503)
# atan(w) = w + w^3 P(w^2) on |w| <= tan(pi/8); P fitted (minimax, float32) for this project.
_ATAN_P0 = tl.constexpr(-0.3333331346511841)
_ATAN_P1 = tl.constexpr(0.19998423755168915)
_ATAN_P2 = tl.constexpr(-0.14242742955684662)
_ATAN_P3 = tl.constexpr(0.10588563978672028)
_ATAN_P4 = tl.constexpr(-0.0606604628264904)

_INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
MAX_DIM = 16384


# ----------------------------------------------------------------- helpers


@triton.jit
def _div(a, b):
    """a / b rounded to nearest, and 0 where b == 0."""
    nz = b != 0.0
    return tl.where(nz, tl.div_rn(a, tl.where(nz, b, 1.0)), 0.0)


@triton.jit
def _sqrt(a):
    return tl.sqrt_rn(tl.maximum(a, 0.0))


@triton.jit
def _dot(a, b):
    return tl.sum(a * b, axis=1, keep_dims=True)


@triton.jit
def _sinc(x):
    return tl.where(x == 0.0, 1.0, _div(tl.sin(x), x))


@triton.jit
def _atan2(a, b):
    """atan2(a, b) for a, b >= 0."""
    lo = tl.minimum(a, b)
    hi = tl.maximum(a, b)
    z = _div(lo, hi)
    big = z > _TAN_PI_8
    w = tl.where(big, tl.div_rn(z - 1.0, z + 1.0), z)
    w2 = w * w
    p = (((_ATAN_P4 * w2 + _ATAN_P3) * w2 + _ATAN_P2) * w2 + _ATAN_P1) * w2 + _ATAN_P0
    at = w + w * w2 * p
    at = tl.where(big, _PI / 4 + at, at)
    return tl.where(a > b, _PI / 2 - at, at)


@triton.jit
def _expmap_q(n):
    """(cos n - sinc n) / n^2, by its Taylor series below 0.5."""
    z = n * n
    s = (((1.0 / 45360.0) * z - 1.0 / 840.0) * z + 1.0 / 30.0) * z - 1.0 / 3.0
    safe = tl.where(n < 0.5, 1.0, n)
    direct = tl.div_rn(tl.cos(safe) - tl.div_rn(tl.sin(safe), safe), safe * safe)
    return tl.where(n < 0.5, s, direct)


@triton.jit
def _block(n_rows, D, ROWS: tl.constexpr, BLOCK_D: tl.constexpr):
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    cols = tl.arange(0, BLOCK_D)
    row_mask = rows < n_rows
    mask = row_mask[:, None] & (cols[None, :] < D)
    offs = rows[:, None].to(tl.int64) * D + cols[None, :]
    return rows, cols, row_mask, mask, offs


@triton.jit
def _load(ptr, offs, mask):
    return tl.load(ptr + offs, mask=mask, other=0.0).to(tl.float32)


@triton.jit
def _store(ptr, offs, mask, value):
    tl.store(ptr + offs, value.to(ptr.dtype.element_ty), mask=mask)


@triton.jit
def _antipodal_direction(x, cols, D, ROWS: tl.constexpr, BLOCK_D: tl.constexpr):
    """normalize(J x) (J turns coordinate pairs by 90 degrees), e_0 where J x == 0."""
    pairs = tl.reshape(x, (ROWS, BLOCK_D // 2, 2))
    even, odd = tl.split(pairs)
    jx = tl.reshape(tl.join(-odd, even), (ROWS, BLOCK_D))
    jx = tl.where(cols[None, :] < D - D % 2, jx, 0.0)
    nn = _dot(jx, jx)
    e0 = tl.where(cols[None, :] == 0, 1.0, 0.0)
    return tl.where(nn > 0.0, jx * _div(1.0, _sqrt(nn)), e0)


@triton.jit
def _chord(x, y, cols, D, ROWS: tl.constexpr, BLOCK_D: tl.constexpr):
    """Angle, unit direction e from x toward y, and the scalars the backward needs."""
    d = y - x
    s = y + x
    dd = _dot(d, d)
    ss = _dot(s, s)
    xx = _dot(x, x)
    a = _sqrt(dd)
    b = _sqrt(ss)
    theta = 2.0 * _atan2(a, b)
    near = a <= b
    hx = tl.where(near, 0.5 * dd, -0.5 * ss)
    v = tl.where(near, d, s) + hx * x
    c = _div(_dot(v, x), xx)
    w = v - c * x
    m = _sqrt(_dot(w, w))
    r = tl.where(m > 0.0, _div(theta, m), tl.where(near, 1.0, 0.0))
    e = w * _div(1.0, m)
    antipodal = (m == 0.0) & (~near)
    e = tl.where(antipodal, _antipodal_direction(x, cols, D, ROWS, BLOCK_D), e)
    return a, b, theta, near, v, xx, c, hx, r, e


@triton.jit
def _chord_backward(x, y, a, b, near, cv, xx, c, hx, g_theta, gw):
    """Gradients of (theta, w) pulled back to (x, y)."""
    d = y - x
    s = y + x
    den = a * a + b * b
    kd = _div(_div(2.0 * b * g_theta, den), a)
    ks = _div(_div(-2.0 * a * g_theta, den), b)
    k = _div(_dot(gw, x), xx)
    g_v = gw - k * x
    gd = kd * d + tl.where(near, g_v, 0.0)
    gs = ks * s + tl.where(near, 0.0, g_v)
    g_x = (2.0 * c * k) * x - c * gw - k * cv + hx * g_v
    return g_x - gd + gs, gd + gs


# ----------------------------------------------------------------- kernels


@triton.jit
def _normalize_fwd(X, OUT, n_rows, D, eps, ROWS: tl.constexpr, BLOCK_D: tl.constexpr):
    _, _, _, mask, offs = _block(n_rows, D, ROWS, BLOCK_D)
    x = _load(X, offs, mask)
    n = _sqrt(_dot(x, x))
    _store(OUT, offs, mask, x * tl.div_rn(1.0, tl.maximum(n, eps)))


@triton.jit
def _normalize_bwd(G, X, GX, n_rows, D, eps, ROWS: tl.constexpr, BLOCK_D: tl.constexpr):
    _, _, _, mask, offs = _block(n_rows, D, ROWS, BLOCK_D)
    g = _load(G, offs, mask)
    x = _load(X, offs, mask)
    n = _sqrt(_dot(x, x))
    inv = tl.div_rn(1.0, tl.maximum(n, eps))
    gy = _dot(g, x) * inv
    gx = tl.where(n > eps, (g - gy * x * inv) * inv, g * inv)
    _store(GX, offs, mask, gx)


@triton.jit
def _proju_fwd(X, U, OUT, n_rows, D, ROWS: tl.constexpr, BLOCK_D: tl.constexpr):
    _, _, _, mask, offs = _block(n_rows, D, ROWS, BLOCK_D)
    x = _load(X, offs, mask)
    u = _load(U, offs, mask)
    _store(OUT, offs, mask, u - _dot(x, u) * x)


@triton.jit
def _proju_bwd(G, X, U, GX, GU, n_rows, D, ROWS: tl.constexpr, BLOCK_D: tl.constexpr):
    _, _, _, mask, offs = _block(n_rows, D, ROWS, BLOCK_D)
    g = _load(G, offs, mask)
    x = _load(X, offs, mask)
    u = _load(U, offs, mask)
    xu = _dot(x, u)
    xg = _dot(x, g)
    _store(GX, offs, mask, -(xu * g + xg * u))
    _store(GU, offs, mask, g - xg * x)


@triton.jit
def _dist_fwd(X, Y, OUT, n_rows, D, ROWS: tl.constexpr, BLOCK_D: tl.constexpr):
    rows, _, row_mask, mask, offs = _block(n_rows, D, ROWS, BLOCK_D)
    x = _load(X, offs, mask)
    y = _load(Y, offs, mask)
    d = y - x
    s = y + x
    theta = 2.0 * _atan2(_sqrt(tl.sum(d * d, axis=1)), _sqrt(tl.sum(s * s, axis=1)))
    tl.store(OUT + rows, theta.to(OUT.dtype.element_ty), mask=row_mask)


@triton.jit
def _dist_bwd(G, X, Y, GX, GY, n_rows, D, ROWS: tl.constexpr, BLOCK_D: tl.constexpr):
    rows, _, row_mask, mask, offs = _block(n_rows, D, ROWS, BLOCK_D)
    g = tl.load(G + rows, mask=row_mask, other=0.0).to(tl.float32)[:, None]
    x = _load(X, offs, mask)
    y = _load(Y, offs, mask)
    d = y - x
    s = y + x
    dd = _dot(d, d)
    ss = _dot(s, s)
    a = _sqrt(dd)
    b = _sqrt(ss)
    gd = _div(_div(2.0 * b * g, dd + ss), a) * d
    gs = _div(_div(-2.0 * a * g, dd + ss), b) * s
    _store(GX, offs, mask, gs - gd)
    _store(GY, offs, mask, gs + gd)


@triton.jit
def _expmap_fwd(X, U, OUT, n_rows, D, ROWS: tl.constexpr, BLOCK_D: tl.constexpr):
    _, _, _, mask, offs = _block(n_rows, D, ROWS, BLOCK_D)
    x = _load(X, offs, mask)
    u = _load(U, offs, mask)
    n = _sqrt(_dot(u, u))
    w = tl.cos(n) * x + _sinc(n) * u
    _store(OUT, offs, mask, w * _div(1.0, _sqrt(_dot(w, w))))


@triton.jit
def _expmap_bwd(G, X, U, GX, GU, n_rows, D, ROWS: tl.constexpr, BLOCK_D: tl.constexpr):
    _, _, _, mask, offs = _block(n_rows, D, ROWS, BLOCK_D)
    g = _load(G, offs, mask)
    x = _load(X, offs, mask)
    u = _load(U, offs, mask)
    n = _sqrt(_dot(u, u))
    cos_n = tl.cos(n)
    sinc_n = _sinc(n)
    w = cos_n * x + sinc_n * u
    inv = _div(1.0, _sqrt(_dot(w, w)))
    out = w * inv
    gw = (g - _dot(g, out) * out) * inv
    _store(GX, offs, mask, cos_n * gw)
    _store(GU, offs, mask, sinc_n * gw + (_expmap_q(n) * _dot(u, gw) - sinc_n * _dot(x, gw)) * u)


@triton.jit
def _logmap_fwd(X, Y, OUT, n_rows, D, ROWS: tl.constexpr, BLOCK_D: tl.constexpr):
    _, cols, _, mask, offs = _block(n_rows, D, ROWS, BLOCK_D)
    x = _load(X, offs, mask)
    y = _load(Y, offs, mask)
    _, _, theta, _, _, _, _, _, _, e = _chord(x, y, cols, D, ROWS, BLOCK_D)
    _store(OUT, offs, mask, theta * e)


@triton.jit
def _logmap_bwd(G, X, Y, GX, GY, n_rows, D, ROWS: tl.constexpr, BLOCK_D: tl.constexpr):
    _, cols, _, mask, offs = _block(n_rows, D, ROWS, BLOCK_D)
    g = _load(G, offs, mask)
    x = _load(X, offs, mask)
    y = _load(Y, offs, mask)
    a, b, theta, near, cv, xx, c, hx, r, e = _chord(x, y, cols, D, ROWS, BLOCK_D)
    g_theta = _dot(g, e)
    gv = r * (g - g_theta * e)
    gx, gy = _chord_backward(x, y, a, b, near, cv, xx, c, hx, g_theta, gv)
    _store(GX, offs, mask, gx)
    _store(GY, offs, mask, gy)


@triton.jit
def _slerp(x0, x1, t, cols, D, ROWS: tl.constexpr, BLOCK_D: tl.constexpr):
    a, b, theta, near, cv, xx, c, hx, r, e = _chord(x0, x1, cols, D, ROWS, BLOCK_D)
    phi = t * theta
    cos_p = tl.cos(phi)
    sin_p = tl.sin(phi)
    w = cos_p * x0 + sin_p * e
    wp = theta * (cos_p * e - sin_p * x0)
    inv = _div(1.0, _sqrt(_dot(w, w)))
    xt = w * inv
    alpha = _dot(wp, xt)
    return a, b, theta, near, cv, xx, c, hx, r, e, cos_p, sin_p, inv, xt, wp, alpha


@triton.jit
def _geodesic_fwd(X0, X1, T, XT, UT, n_rows, D, WITH_VELOCITY: tl.constexpr, ROWS: tl.constexpr,
                  BLOCK_D: tl.constexpr):
    rows, cols, row_mask, mask, offs = _block(n_rows, D, ROWS, BLOCK_D)
    x0 = _load(X0, offs, mask)
    x1 = _load(X1, offs, mask)
    t = tl.load(T + rows, mask=row_mask, other=0.0)[:, None]
    _, _, _, _, _, _, _, _, _, _, _, _, inv, xt, wp, alpha = _slerp(x0, x1, t, cols, D, ROWS, BLOCK_D)
    _store(XT, offs, mask, xt)
    if WITH_VELOCITY:
        _store(UT, offs, mask, (wp - alpha * xt) * inv)


@triton.jit
def _geodesic_bwd(GXT, GUT, X0, X1, T, GX0, GX1, GT, n_rows, D, WITH_VELOCITY: tl.constexpr,
                  ROWS: tl.constexpr, BLOCK_D: tl.constexpr):
    rows, cols, row_mask, mask, offs = _block(n_rows, D, ROWS, BLOCK_D)
    gx = _load(GXT, offs, mask)
    x0 = _load(X0, offs, mask)
    x1 = _load(X1, offs, mask)
    t = tl.load(T + rows, mask=row_mask, other=0.0)[:, None]
    a, b, theta, near, cv, xx, c, hx, r, e, cos_p, sin_p, inv, xt, wp, alpha = _slerp(
        x0, x1, t, cols, D, ROWS, BLOCK_D
    )
    if WITH_VELOCITY:
        gu = _load(GUT, offs, mask)
    else:
        gu = tl.zeros_like(gx)
    # ut = (wp - alpha xt) / |w| and xt = w / |w|
    gu_xt = _dot(gu, xt)
    g_wp = (gu - gu_xt * xt) * inv
    g_nw = -_dot(gu, wp - alpha * xt) * inv * inv
    g_xt = gx - (alpha * gu + gu_xt * wp) * inv
    g_w = (g_xt - _dot(g_xt, xt) * xt) * inv + g_nw * xt
    # w = cos(phi) x0 + sin(phi) e and wp = theta (cos(phi) e - sin(phi) x0), phi = t theta
    gw_x0 = _dot(g_w, x0)
    gw_e = _dot(g_w, e)
    gwp_x0 = _dot(g_wp, x0)
    gwp_e = _dot(g_wp, e)
    g_cos = gw_x0 + theta * gwp_e
    g_sin = gw_e - theta * gwp_x0
    g_phi = cos_p * g_sin - sin_p * g_cos
    g_theta = cos_p * gwp_e - sin_p * gwp_x0 + t * g_phi
    kw = t * _sinc(t * theta)
    h = kw * g_w + cos_p * g_wp
    gv = r * (h - (kw * gw_e + cos_p * gwp_e) * e)
    gx0, gx1 = _chord_backward(x0, x1, a, b, near, cv, xx, c, hx, g_theta, gv)
    gx0 += cos_p * g_w - theta * sin_p * g_wp
    _store(GX0, offs, mask, gx0)
    _store(GX1, offs, mask, gx1)
    tl.store(GT + rows, tl.sum(theta * g_phi, axis=1), mask=row_mask)


@triton.jit
def _transp_fwd(X, Y, V, OUT, n_rows, D, ROWS: tl.constexpr, BLOCK_D: tl.constexpr):
    _, cols, _, mask, offs = _block(n_rows, D, ROWS, BLOCK_D)
    x = _load(X, offs, mask)
    y = _load(Y, offs, mask)
    v = _load(V, offs, mask)
    _, _, theta, _, _, _, _, _, _, e = _chord(x, y, cols, D, ROWS, BLOCK_D)
    p = _dot(v, e)
    q = _dot(v, x)
    h = tl.sin(0.5 * theta)
    cm1 = -2.0 * h * h
    sin_t = tl.sin(theta)
    _store(OUT, offs, mask, v + (p * cm1 + q * sin_t) * e + (q * cm1 - p * sin_t) * x)


@triton.jit
def _transp_bwd(G, X, Y, V, GX, GY, GV, n_rows, D, ROWS: tl.constexpr, BLOCK_D: tl.constexpr):
    _, cols, _, mask, offs = _block(n_rows, D, ROWS, BLOCK_D)
    g = _load(G, offs, mask)
    x = _load(X, offs, mask)
    y = _load(Y, offs, mask)
    v = _load(V, offs, mask)
    a, b, theta, near, cv, xx, c, hx, r, e = _chord(x, y, cols, D, ROWS, BLOCK_D)
    p = _dot(v, e)
    q = _dot(v, x)
    g_alpha = _dot(g, e)
    g_beta = _dot(g, x)
    half = 0.5 * theta
    sh = tl.sin(half)
    cm1 = -2.0 * sh * sh
    sin_t = tl.sin(theta)
    cos_t = tl.cos(theta)
    beta = q * cm1 - p * sin_t
    g_p = g_alpha * cm1 - g_beta * sin_t
    g_q = g_alpha * sin_t + g_beta * cm1
    g_theta = -sin_t * (g_alpha * p + g_beta * q) + cos_t * (g_alpha * q - g_beta * p)
    # dL/de / theta with cm1 / theta = -sin(h) sinc(h) and sin(theta) / theta = sinc(theta)
    cm1_t = -sh * _sinc(half)
    sin_t_t = _sinc(theta)
    kg = p * cm1_t + q * sin_t_t
    kv = g_alpha * cm1_t - g_beta * sin_t_t
    gdir = r * (kg * g + kv * v - (kg * g_alpha + kv * p) * e)
    gx, gy = _chord_backward(x, y, a, b, near, cv, xx, c, hx, g_theta, gdir)
    _store(GX, offs, mask, gx + beta * g + g_q * v)
    _store(GY, offs, mask, gy)
    _store(GV, offs, mask, g + g_p * e + g_q * x)


# ----------------------------------------------------------------- launchers

_KERNELS = {
    "normalize": _normalize_fwd,
    "normalize_backward": _normalize_bwd,
    "proju": _proju_fwd,
    "proju_backward": _proju_bwd,
    "dist": _dist_fwd,
    "dist_backward": _dist_bwd,
    "expmap": _expmap_fwd,
    "expmap_backward": _expmap_bwd,
    "logmap": _logmap_fwd,
    "logmap_backward": _logmap_bwd,
    "geodesic_velocity": _geodesic_fwd,
    "geodesic_velocity_backward": _geodesic_bwd,
    "transp": _transp_fwd,
    "transp_backward": _transp_bwd,
}


class _TritonKernels(RowKernels):
    def supports(self, x: Tensor) -> bool:
        """Whether these kernels take x (float32/bfloat16/float16 with D <= MAX_DIM)."""
        return x.dtype != torch.float64 and x.shape[-1] <= MAX_DIM

    def launch(self, kernel: str, rows: Tensor, inputs: Tensors, scalars: list[float], outputs: Tensors) -> None:
        """Run ``kernel(*inputs, *outputs, n_rows, D, *scalars)`` on blocks of rows."""
        fn = _KERNELS[kernel]
        tensors = inputs + outputs
        flags = {}
        if "WITH_VELOCITY" in fn.arg_names:
            # The velocity, or its gradient, may be skipped: then a stand-in pointer,
            # never read or written, takes its place.
            flags["WITH_VELOCITY"] = all(t is not None for t in tensors)
            tensors = [rows if t is None else t for t in tensors]
        n_rows, d = rows.shape
        block_d = triton.next_power_of_2(d)
        # Interpreted programs cost about 1 ms each however small: give each many rows.
        per_program = 1 << 16 if _INTERPRETED else 4096
        block_rows = max(1, min(triton.next_power_of_2(n_rows), per_program // block_d))
        num_warps = 4 if block_rows * block_d <= 4096 else 8
        grid = (triton.cdiv(n_rows, block_rows),)
        with torch.cuda.device(rows.device) if rows.is_cuda else contextlib.nullcontext():
            fn[grid](*tensors, n_rows, d, *scalars, **flags, ROWS=block_rows, BLOCK_D=block_d, num_warps=num_warps)


kernels = _TritonKernels()
