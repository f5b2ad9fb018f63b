"""The specification of every sphere op, in plain torch.

Each op works row-wise on tensors ``(..., D)`` and computes in float32 for
float32/bfloat16/float16 inputs and in float64 for float64 inputs, returning
the input dtype. Every forward function has an explicit backward function (a
vector-Jacobian product written out by hand) so that the fused backends can be
checked against it term by term; the tests check these against torch autograd.

Formulas are chosen for accuracy in float32 (see DESIGN.md):

* the angle between ``x`` and ``y`` is ``2 * atan2(|y - x|, |y + x|)``, exact
  to a few ulps at every angle (``acos`` of a dot product loses half the
  digits near 0 and pi);
* the unnormalized direction of ``y`` seen from ``x`` (the tangent part of
  ``y``) starts from ``(y - x) + |y - x|^2 / 2 * x`` when ``y`` is nearer ``x``
  than ``-x``, and from ``(y + x) - |y + x|^2 / 2 * x`` otherwise: both equal
  ``y - <x, y> x`` on the sphere and each is free of cancellation in its half.
  What is left of ``x`` in it (the rounding of inputs that are unit only to an
  ulp, amplified by 1 / sin(angle)) is then projected out, so the direction is
  orthogonal to ``x`` to working precision at every angle.

Conventions at the singular points (finite, deterministic):

* ``x == y``: the direction is 0, ``logmap`` is 0, the geodesic is constant.
* ``y == -x``: the direction is ``normalize(J x)`` where ``J`` turns every
  coordinate pair ``(x[2i], x[2i+1])`` by 90 degrees (for odd ``D`` the last
  coordinate is left out, and ``x = +-e_last`` takes ``e_0``). So
  ``logmap(x, -x)`` has norm pi, and ``expmap``, ``geodesic`` and ``transp``
  follow that great circle. Gradients through the direction are 0 there.

``expmap`` and ``geodesic`` return the normalized point, so rounding never
drifts off the sphere; on unit inputs this is the textbook map.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

__all__ = [
    "supports",
    "normalize",
    "normalize_backward",
    "proju",
    "proju_backward",
    "dist",
    "dist_backward",
    "expmap",
    "expmap_backward",
    "logmap",
    "logmap_backward",
    "geodesic",
    "geodesic_backward",
    "geodesic_velocity",
    "geodesic_velocity_backward",
    "transp",
    "transp_backward",
]


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype ops compute in: float64 for float64, float32 otherwise."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _up(*tensors: Tensor) -> list[Tensor]:
    return [t.to(compute_dtype(t.dtype)) for t in tensors]


def _dot(x: Tensor, y: Tensor) -> Tensor:
    return (x * y).sum(-1, keepdim=True)


def _norm(x: Tensor) -> Tensor:
    """|x|, exactly 0 at 0 with derivative 0 there (autograd of a bare sqrt gives NaN)."""
    s = _dot(x, x)
    positive = s > 0
    return torch.where(positive, torch.where(positive, s, 1.0).sqrt(), 0.0)


def _div(num: Tensor, den: Tensor) -> Tensor:
    """num / den, and 0 where den == 0."""
    nonzero = den != 0
    return torch.where(nonzero, num / torch.where(nonzero, den, torch.ones_like(den)), 0.0)


def _sinc(x: Tensor) -> Tensor:
    """sin(x) / x (unnormalized); accurate everywhere because nothing cancels."""
    return torch.where(x == 0, 1.0, torch.sin(x) / torch.where(x == 0, 1.0, x))


# Taylor coefficients of (cos n - sin(n)/n) / n^2 = sum_k (-1)^k 2k n^(2k-2) / (2k+1)!
_Q_TAYLOR = (-1 / 3, 1 / 30, -1 / 840, 1 / 45360, -1 / 3991680, 1 / 518918400, -1 / 93405312000)
_Q_SWITCH = 0.5


def expmap_q(n: Tensor) -> Tensor:
    """(cos n - sinc n) / n^2, the derivative of sinc(n) divided by n.

    Direct evaluation cancels for small n, so below 0.5 a Taylor series is used
    (truncation error under 1e-17 there).
    """
    z = n * n
    series = torch.zeros_like(n)
    for c in reversed(_Q_TAYLOR):
        series = series * z + c
    safe = torch.where(n < _Q_SWITCH, torch.ones_like(n), n)
    direct = (torch.cos(safe) - torch.sin(safe) / safe) / (safe * safe)
    return torch.where(n < _Q_SWITCH, series, direct)


def antipodal_direction(x: Tensor) -> Tensor:
    """normalize(J x): the direction the geodesic from x to -x takes.

    J turns each coordinate pair (x[2i], x[2i+1]) by 90 degrees; for odd D the
    last coordinate has no pair, and a point with Jx == 0 (x = +-e_last) gets e_0.
    """
    d = x.shape[-1]
    pairs = d - d % 2
    jx = torch.zeros_like(x)
    jx[..., 0:pairs:2] = -x[..., 1:pairs:2]
    jx[..., 1:pairs:2] = x[..., 0:pairs:2]
    e0 = torch.zeros_like(x)
    e0[..., 0] = 1
    n = _norm(jx)
    return torch.where(n > 0, _div(jx, n), e0)


class Chord(NamedTuple):
    """The pair (x, y) seen from x: everything the direction and angle need."""

    d: Tensor  # y - x
    s: Tensor  # y + x
    a: Tensor  # |y - x|
    b: Tensor  # |y + x|
    theta: Tensor  # 2 atan2(a, b): the angle
    near: Tensor  # a <= b: y is nearer x than -x (which formula gives v)
    v: Tensor  # y plus a multiple of x, free of cancellation
    xx: Tensor  # |x|^2
    c: Tensor  # <v, x> / |x|^2
    w: Tensor  # v - c x: the part of y orthogonal to x (|w| = sin(theta) on the sphere)
    m: Tensor  # |w|
    e: Tensor  # unit direction w / m, with the conventions at m == 0
    r: Tensor  # theta / m: 1 at x == y, 0 at y == -x
    log: Tensor  # theta e, written r w so that autograd of it has the right limit at x == y


def chord(x: Tensor, y: Tensor) -> Chord:
    """Angle and unit direction from x toward y, stable at every angle.

    The direction is exactly orthogonal to x even when x and y are unit only to
    rounding, so tangency holds to working precision at every angle.
    """
    d = y - x
    s = y + x
    a = _norm(d)
    b = _norm(s)
    theta = 2 * torch.atan2(a, b)
    near = a <= b
    v = torch.where(near, d + 0.5 * a * a * x, s - 0.5 * b * b * x)
    xx = _dot(x, x)
    c = _div(_dot(v, x), xx)
    w = v - c * x
    m = _norm(w)
    antipodal = (m == 0) & ~near
    # The direction at an antipode is a convention: no gradient flows through it.
    e = torch.where(antipodal, antipodal_direction(x.detach()), _div(w, m))
    r = torch.where(m > 0, _div(theta, m), near.to(theta.dtype))
    log = torch.where(antipodal, theta * e, r * w)
    return Chord(d, s, a, b, theta, near, v, xx, c, w, m, e, r, log)


def chord_backward(x: Tensor, c: Chord, g_theta: Tensor, g_w: Tensor) -> tuple[Tensor, Tensor]:
    """Pull gradients of (theta, w) back to (x, y)."""
    # w = v - <v, x> x / |x|^2
    k = _div(_dot(g_w, x), c.xx)
    g_v = g_w - k * x
    g_x = (2 * c.c * k) * x - c.c * g_w - k * c.v
    # theta = 2 atan2(a, b) and v = (y -+ x) +- |y -+ x|^2 / 2 x; <g_v, x> = 0 drops the
    # terms through the coefficient of x in v.
    den = c.a * c.a + c.b * c.b
    g_d = torch.where(c.near, g_v, 0.0) + _div(2 * c.b * g_theta, den) * _div(c.d, c.a)
    g_s = torch.where(c.near, 0.0, g_v) - _div(2 * c.a * g_theta, den) * _div(c.s, c.b)
    g_x = g_x + torch.where(c.near, 0.5 * c.a * c.a, -0.5 * c.b * c.b) * g_v
    return g_x - g_d + g_s, g_d + g_s


def direction_backward(c: Chord, g_e_over_theta: Tensor) -> Tensor:
    """Gradient w.r.t. w of e = w / m, given (dL/de) / theta.

    Passing the gradient divided by theta keeps this finite as x -> y, where
    both it and m vanish and theta / m -> 1.
    """
    h = g_e_over_theta
    return c.r * (h - _dot(h, c.e) * c.e)


# --------------------------------------------------------------------------- ops


def supports(x: Tensor) -> bool:
    """The reference takes every tensor: it serves whatever the compiled kernels decline."""
    return True


def normalize(x: Tensor, eps: float = 1e-12) -> Tensor:
    (xc,) = _up(x)
    return (xc / _norm(xc).clamp_min(eps)).to(x.dtype)


def normalize_backward(grad: Tensor, x: Tensor, eps: float = 1e-12) -> Tensor:
    xc, g = _up(x, grad)
    n = _norm(xc)
    y = xc / n.clamp_min(eps)
    gx = torch.where(n > eps, (g - _dot(g, y) * y) / n.clamp_min(eps), g / eps)
    return gx.to(x.dtype)


def proju(x: Tensor, u: Tensor) -> Tensor:
    xc, uc = _up(x, u)
    return (uc - _dot(xc, uc) * xc).to(u.dtype)


def proju_backward(grad: Tensor, x: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
    xc, uc, g = _up(x, u, grad)
    xu, xg = _dot(xc, uc), _dot(xc, g)
    return (-(xu * g + xg * uc)).to(x.dtype), (g - xg * xc).to(u.dtype)


def dist(x: Tensor, y: Tensor) -> Tensor:
    xc, yc = _up(x, y)
    theta = 2 * torch.atan2(_norm(yc - xc), _norm(yc + xc))
    return theta.squeeze(-1).to(x.dtype)


def dist_backward(grad: Tensor, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    xc, yc, g = _up(x, y, grad)
    d, s = yc - xc, yc + xc
    a, b = _norm(d), _norm(s)
    # theta = 2 atan2(a, b): d theta = 2 (b da - a db) / (a^2 + b^2)
    den = a * a + b * b
    g_d = _div(2 * b * g.unsqueeze(-1), den) * _div(d, a)
    g_s = -_div(2 * a * g.unsqueeze(-1), den) * _div(s, b)
    return (g_s - g_d).to(x.dtype), (g_s + g_d).to(y.dtype)


def expmap(x: Tensor, u: Tensor) -> Tensor:
    xc, uc = _up(x, u)
    n = _norm(uc)
    w = torch.cos(n) * xc + _sinc(n) * uc
    return _div(w, _norm(w)).to(x.dtype)


def expmap_backward(grad: Tensor, x: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
    xc, uc, g = _up(x, u, grad)
    n = _norm(uc)
    cos_n, sinc_n = torch.cos(n), _sinc(n)
    w = cos_n * xc + sinc_n * uc
    nw = _norm(w)
    out = _div(w, nw)
    gw = _div(g - _dot(g, out) * out, nw)
    gx = cos_n * gw
    gu = sinc_n * gw + (expmap_q(n) * _dot(uc, gw) - sinc_n * _dot(xc, gw)) * uc
    return gx.to(x.dtype), gu.to(u.dtype)


def logmap(x: Tensor, y: Tensor) -> Tensor:
    xc, yc = _up(x, y)
    return chord(xc, yc).log.to(y.dtype)


def logmap_backward(grad: Tensor, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    xc, yc, g = _up(x, y, grad)
    c = chord(xc, yc)
    g_theta = _dot(g, c.e)
    g_w = c.r * (g - g_theta * c.e)
    gx, gy = chord_backward(xc, c, g_theta, g_w)
    return gx.to(x.dtype), gy.to(y.dtype)


class _Slerp(NamedTuple):
    c: Chord
    cos_p: Tensor  # cos(t theta)
    sin_p: Tensor  # sin(t theta)
    w: Tensor  # cos(t theta) x0 + sin(t theta) e
    nw: Tensor  # |w|
    xt: Tensor  # w / |w|
    wp: Tensor  # dw/dt = theta (-sin(t theta) x0 + cos(t theta) e)
    ut: Tensor  # d xt / dt


def _slerp(x0: Tensor, x1: Tensor, t: Tensor) -> _Slerp:
    c = chord(x0, x1)
    phi = t * c.theta
    cos_p, sin_p = torch.cos(phi), torch.sin(phi)
    # sin(phi) e = t sinc(phi) theta e: the same value, differentiable at x0 == x1
    w = cos_p * x0 + t * _sinc(phi) * c.log
    nw = _norm(w)
    xt = _div(w, nw)
    wp = cos_p * c.log - c.theta * sin_p * x0
    ut = _div(wp - _dot(wp, xt) * xt, nw)
    return _Slerp(c, cos_p, sin_p, w, nw, xt, wp, ut)


def geodesic_velocity(x0: Tensor, x1: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """Point x_t on the shortest arc and its velocity d x_t / dt.

    ``t`` has shape ``x0.shape[:-1] + (1,)``.
    """
    x0c, x1c, tc = _up(x0, x1, t)
    sl = _slerp(x0c, x1c, tc)
    return sl.xt.to(x0.dtype), sl.ut.to(x0.dtype)


def geodesic_velocity_backward(
    grad_xt: Tensor, grad_ut: Tensor | None, x0: Tensor, x1: Tensor, t: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients w.r.t. (x0, x1, t); ``grad_ut=None`` means the velocity is unused."""
    if grad_ut is None:
        grad_ut = torch.zeros_like(grad_xt)
    x0c, x1c, tc, gx, gu = _up(x0, x1, t, grad_xt, grad_ut)
    sl = _slerp(x0c, x1c, tc)
    c = sl.c
    # ut = (wp - <wp, xt> xt) / |w| and xt = w / |w|
    gu_xt = _dot(gu, sl.xt)
    g_wp = _div(gu - gu_xt * sl.xt, sl.nw)
    g_xt = gx - _div(_dot(sl.wp, sl.xt) * gu + gu_xt * sl.wp, sl.nw)
    g_nw = -_div(_dot(gu, sl.ut), sl.nw)
    g_w = _div(g_xt - _dot(g_xt, sl.xt) * sl.xt, sl.nw) + g_nw * sl.xt
    # w = cos(phi) x0 + sin(phi) e and wp = theta (cos(phi) e - sin(phi) x0)
    gwp_x0, gwp_e = _dot(g_wp, x0c), _dot(g_wp, c.e)
    g_cos = _dot(g_w, x0c) + c.theta * gwp_e
    g_sin = _dot(g_w, c.e) - c.theta * gwp_x0
    g_phi = sl.cos_p * g_sin - sl.sin_p * g_cos
    g_theta = sl.cos_p * gwp_e - sl.sin_p * gwp_x0 + tc * g_phi
    g_t = c.theta * g_phi
    g_e_over_theta = tc * _sinc(tc * c.theta) * g_w + sl.cos_p * g_wp
    g_dir = direction_backward(c, g_e_over_theta)
    g_x0, g_x1 = chord_backward(x0c, c, g_theta, g_dir)
    g_x0 = g_x0 + sl.cos_p * g_w - c.theta * sl.sin_p * g_wp
    return g_x0.to(x0.dtype), g_x1.to(x1.dtype), g_t.to(t.dtype)


def geodesic(x0: Tensor, x1: Tensor, t: Tensor) -> Tensor:
    return geodesic_velocity(x0, x1, t)[0]


def geodesic_backward(grad: Tensor, x0: Tensor, x1: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    return geodesic_velocity_backward(grad, None, x0, x1, t)


def transp(x: Tensor, y: Tensor, v: Tensor) -> Tensor:
    """Rotate v in the plane of x and y by the angle that carries x to y.

    On tangent vectors at x this is parallel transport along the geodesic; the
    rotation is orthogonal on all of R^D, so norms and inner products hold.
    """
    xc, yc, vc = _up(x, y, v)
    c = chord(xc, yc)
    # In terms of the log vector L = theta e (differentiable at x == y):
    # (p cm1 + q sin) e = (<v, L> cm1 / theta^2 + q sinc) L and p sin = <v, L> sinc.
    half = 0.5 * c.theta
    p_log, q = _dot(vc, c.log), _dot(vc, xc)
    sinc_t, cm1_t2 = _sinc(c.theta), -0.5 * _sinc(half) ** 2
    out = vc + (p_log * cm1_t2 + q * sinc_t) * c.log + (q * _cos_minus_one(c.theta) - p_log * sinc_t) * xc
    return out.to(v.dtype)


def _cos_minus_one(theta: Tensor) -> Tensor:
    h = torch.sin(0.5 * theta)
    return -2 * h * h


def transp_backward(grad: Tensor, x: Tensor, y: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    xc, yc, vc, g = _up(x, y, v, grad)
    c = chord(xc, yc)
    p, q = _dot(vc, c.e), _dot(vc, xc)
    half = 0.5 * c.theta
    cm1, sin_t, cos_t = _cos_minus_one(c.theta), torch.sin(c.theta), torch.cos(c.theta)
    beta = q * cm1 - p * sin_t
    g_alpha, g_beta = _dot(g, c.e), _dot(g, xc)
    g_p = g_alpha * cm1 - g_beta * sin_t
    g_q = g_alpha * sin_t + g_beta * cm1
    gv = g + g_p * c.e + g_q * xc
    g_theta = -sin_t * (g_alpha * p + g_beta * q) + cos_t * (g_alpha * q - g_beta * p)
    # dL/de = (p cm1 + q sin) g + g_p v; divided by theta with cm1 / theta = -sin(h) sinc(h)
    cm1_t, sin_t_t = -torch.sin(half) * _sinc(half), _sinc(c.theta)
    g_e_over_theta = (p * cm1_t + q * sin_t_t) * g + (g_alpha * cm1_t - g_beta * sin_t_t) * vc
    g_dir = direction_backward(c, g_e_over_theta)
    gx, gy = chord_backward(xc, c, g_theta, g_dir)
    gx = gx + beta * g + g_q * vc
    return gx.to(x.dtype), gy.to(y.dtype), gv.to(v.dtype)
