// Per-row sphere math shared by the CPU and CUDA kernels.
//
// Every function works on one row of D values, written against a Row policy:
//   row.slots()       number of slots this thread holds (CPU: D; CUDA: a lane's share)
//   row.index(k)      the column index of slot k
//   row.sum(s)        the sum of s over every thread that holds part of the row
//   row.partner(a, k) the value at column index(k) ^ 1 (slots pair up within a thread)
// Arrays are per-slot values in the accumulation type A (float, or double for
// float64 inputs); unused slots past D hold zeros, which every formula here
// maps to zeros. The formulas mirror sphere_ops/reference.py line by line.
#pragma once

#include <cmath>

#if defined(__CUDACC__)
#define SO_HD __device__ __forceinline__
#else
#define SO_HD inline
#endif

// Each CPU build variant (baseline, AVX2, AVX-512) puts this code in a namespace
// of its own, so no inline function compiled for one ISA is shared with another.
#ifndef SO_MATH_NS
#define SO_MATH_NS math
#endif

#define SO_PRAGMA(x) _Pragma(#x)
#if defined(__CUDA_ARCH__)
#define SO_LOOP SO_PRAGMA(unroll)
#define SO_SUM(...) SO_PRAGMA(unroll)
#else
#define SO_LOOP SO_PRAGMA(omp simd)
#define SO_SUM(...) SO_PRAGMA(omp simd reduction(+ : __VA_ARGS__))
#endif

namespace sphere_ops {
namespace SO_MATH_NS {

SO_HD float so_sqrt(float x) { return sqrtf(x); }
SO_HD double so_sqrt(double x) { return sqrt(x); }
SO_HD float so_sin(float x) { return sinf(x); }
SO_HD double so_sin(double x) { return sin(x); }
SO_HD float so_cos(float x) { return cosf(x); }
SO_HD double so_cos(double x) { return cos(x); }
SO_HD float so_atan2(float y, float x) { return atan2f(y, x); }
SO_HD double so_atan2(double y, double x) { return atan2(y, x); }

// a / b, and 0 where b == 0 (the reference's `_div`).
template <class A>
SO_HD A safe_div(A a, A b) { return b != A(0) ? a / b : A(0); }

// sin(x) / x: nothing cancels, so the direct quotient is accurate.
template <class A>
SO_HD A sinc(A x) { return x == A(0) ? A(1) : so_sin(x) / x; }

// (cos n - sinc n) / n^2; a Taylor series below 0.5 where the difference cancels.
template <class A>
SO_HD A expmap_q(A n) {
  if (n < A(0.5)) {
    const A z = n * n;
    A s = A(-1.0 / 93405312000.0);
    s = s * z + A(1.0 / 518918400.0);
    s = s * z + A(-1.0 / 3991680.0);
    s = s * z + A(1.0 / 45360.0);
    s = s * z + A(-1.0 / 840.0);
    s = s * z + A(1.0 / 30.0);
    return s * z + A(-1.0 / 3.0);
  }
  return (so_cos(n) - so_sin(n) / n) / (n * n);
}

template <class Row, class A>
SO_HD A dot(const Row& row, const A* x, const A* y) {
  A s = 0;
  const int n = row.slots();
  SO_SUM(s)
  for (int k = 0; k < n; ++k) s += x[k] * y[k];
  return row.sum(s);
}

// The angle and unit direction from x toward y (the reference's `chord`).
template <class A>
struct Chord {
  A a, b;      // |y - x|, |y + x|
  A theta;     // 2 atan2(a, b)
  bool near;   // a <= b: v = (y - x) + a^2/2 x, else v = (y + x) - b^2/2 x
  A hx;        // the coefficient of x in that formula
  A xx;        // |x|^2
  A c;         // <v, x> / |x|^2: w = v - c x is the part of y orthogonal to x
  A m;         // |w|
  A r;         // theta / m, 1 at x == y, 0 at y == -x
};

// normalize(J x), J turning each coordinate pair by 90 degrees; e_0 where J x == 0.
template <class Row, class A>
SO_HD void antipodal_direction(const Row& row, int d, const A* x, A* e) {
  const int pairs = d - d % 2;
  const int n = row.slots();
  A nn = 0;
  SO_SUM(nn)
  for (int k = 0; k < n; ++k) {
    const int i = row.index(k);
    const A p = i < pairs ? row.partner(x, k) : A(0);
    e[k] = (i & 1) ? p : -p;
    nn += e[k] * e[k];
  }
  nn = row.sum(nn);
  const A inv = nn > A(0) ? A(1) / so_sqrt(nn) : A(0);
  SO_LOOP
  for (int k = 0; k < n; ++k) e[k] = nn > A(0) ? e[k] * inv : A(row.index(k) == 0);
}

// The dot products of a row: the Gram matrix of (x0, z) and, for the backward,
// the products of the output gradients with x0 and z.
template <class A>
struct RowSums {
  A dd, ss, dx, sx, xx;         // |d|^2, |s|^2, <d,x0>, <s,x0>, |x0|^2 (d = x1 - x0, s = x1 + x0)
  A gx_x = 0, gx_d = 0, gx_s = 0;  // <gxt, x0>, <gxt, d>, <gxt, s>
  A gu_x = 0, gu_d = 0, gu_s = 0;  // <gut, x0>, <gut, d>, <gut, s>
};

// The sums of a row; with_gx / with_gu say whether the gradients exist, as
// template arguments so that each case compiles to its own vectorized loop.
template <bool with_gx, bool with_gu, class Row, class A>
SO_HD RowSums<A> row_sums(const Row& row, const A* x0, const A* x1, const A* gx, const A* gu) {
  const int n = row.slots();
  A dd = 0, ss = 0, dx = 0, sx = 0, xx = 0, gxx = 0, gxd = 0, gxs = 0, gux = 0, gud = 0, gus = 0;
  SO_SUM(dd, ss, dx, sx, xx, gxx, gxd, gxs, gux, gud, gus)
  for (int k = 0; k < n; ++k) {
    const A dk = x1[k] - x0[k], sk = x1[k] + x0[k];
    dd += dk * dk;
    ss += sk * sk;
    dx += dk * x0[k];
    sx += sk * x0[k];
    xx += x0[k] * x0[k];
    if constexpr (with_gx) {
      gxx += gx[k] * x0[k];
      gxd += gx[k] * dk;
      gxs += gx[k] * sk;
    }
    if constexpr (with_gu) {
      gux += gu[k] * x0[k];
      gud += gu[k] * dk;
      gus += gu[k] * sk;
    }
  }
  RowSums<A> r = {row.sum(dd), row.sum(ss), row.sum(dx), row.sum(sx), row.sum(xx)};
  if constexpr (with_gx) {
    r.gx_x = row.sum(gxx);
    r.gx_d = row.sum(gxd);
    r.gx_s = row.sum(gxs);
  }
  if constexpr (with_gu) {
    r.gu_x = row.sum(gux);
    r.gu_d = row.sum(gud);
    r.gu_s = row.sum(gus);
  }
  return r;
}

// v = (y -+ x) + hx x, the cancellation-free form of y plus a multiple of x.
template <class A>
SO_HD A chord_v(const Chord<A>& c, A x, A y) {
  return (c.near ? y - x : y + x) + c.hx * x;
}

// Writes the unit direction into e and returns the scalars of the pair.
template <class Row, class A>
SO_HD Chord<A> chord(const Row& row, int d, const A* x, const A* y, A* e) {
  const int n = row.slots();
  const RowSums<A> sums = row_sums<false, false>(row, x, y, x, x);
  Chord<A> c;
  c.xx = sums.xx;
  c.a = so_sqrt(sums.dd);
  c.b = so_sqrt(sums.ss);
  c.theta = A(2) * so_atan2(c.a, c.b);
  c.near = c.a <= c.b;
  c.hx = c.near ? A(0.5) * sums.dd : A(-0.5) * sums.ss;
  // <v, x> from the sums: v = (y -+ x) + hx x
  c.c = safe_div((c.near ? sums.dx : sums.sx) + c.hx * c.xx, c.xx);
  A ww = 0;
  SO_SUM(ww)
  for (int k = 0; k < n; ++k) {
    e[k] = chord_v(c, x[k], y[k]) - c.c * x[k];
    ww += e[k] * e[k];
  }
  c.m = so_sqrt(row.sum(ww));
  c.r = c.m > A(0) ? c.theta / c.m : A(c.near ? 1 : 0);
  if (c.m == A(0) && !c.near) {
    antipodal_direction(row, d, x, e);
    return c;
  }
  const A inv = safe_div(A(1), c.m);
  SO_LOOP
  for (int k = 0; k < n; ++k) e[k] *= inv;
  return c;
}

// Adds the gradients of (theta, w) to gx and gy (the reference's `chord_backward`).
// gw may be null (no gradient through the direction).
template <class Row, class A>
SO_HD void chord_backward(const Row& row, const Chord<A>& c, const A* x, const A* y, A g_theta,
                          const A* gw, A* gx, A* gy) {
  const int n = row.slots();
  const A den = c.a * c.a + c.b * c.b;
  const A kd = safe_div(safe_div(A(2) * c.b * g_theta, den), c.a);
  const A ks = safe_div(safe_div(A(-2) * c.a * g_theta, den), c.b);
  // w = v - <v, x> x / |x|^2; g_v = gw - k x is orthogonal to x
  const A k = gw ? safe_div(dot(row, gw, x), c.xx) : A(0);
  SO_LOOP
  for (int j = 0; j < n; ++j) {
    const A dk = y[j] - x[j], sk = y[j] + x[j];
    const A gwj = gw ? gw[j] : A(0);
    const A g_v = gwj - k * x[j];
    const A gd = kd * dk + (c.near ? g_v : A(0));
    const A gs = ks * sk + (c.near ? A(0) : g_v);
    const A g_x = (A(2) * c.c * k) * x[j] - c.c * gwj - k * chord_v(c, x[j], y[j]) + c.hx * g_v;
    gx[j] += g_x - gd + gs;
    gy[j] += gd + gs;
  }
}

// Gradient w.r.t. w of e = w / m, given (dL/de) / theta in h; written into gv.
template <class Row, class A>
SO_HD void direction_backward(const Row& row, const Chord<A>& c, const A* e, A h_dot_e, const A* h,
                              A* gv) {
  const int n = row.slots();
  SO_LOOP
  for (int k = 0; k < n; ++k) gv[k] = c.r * (h[k] - h_dot_e * e[k]);
}

// ---------------------------------------------------------------- ops

template <class Row, class A>
SO_HD void normalize_fwd(const Row& row, const A* x, A eps, A* out) {
  const A nx = so_sqrt(dot(row, x, x));
  const A inv = A(1) / (nx > eps ? nx : eps);
  const int n = row.slots();
  SO_LOOP
  for (int k = 0; k < n; ++k) out[k] = x[k] * inv;
}

template <class Row, class A>
SO_HD void normalize_bwd(const Row& row, const A* g, const A* x, A eps, A* gx) {
  const int n = row.slots();
  A xx = 0, gxd = 0;
  SO_SUM(xx, gxd)
  for (int k = 0; k < n; ++k) {
    xx += x[k] * x[k];
    gxd += g[k] * x[k];
  }
  const A nx = so_sqrt(row.sum(xx));
  gxd = row.sum(gxd);
  if (nx > eps) {
    const A inv = A(1) / nx;
    const A gy = gxd * inv;  // <g, y> with y = x / |x|
    SO_LOOP
    for (int k = 0; k < n; ++k) gx[k] = (g[k] - gy * x[k] * inv) * inv;
  } else {
    const A inv = A(1) / eps;
    SO_LOOP
    for (int k = 0; k < n; ++k) gx[k] = g[k] * inv;
  }
}

template <class Row, class A>
SO_HD void proju_fwd(const Row& row, const A* x, const A* u, A* out) {
  const A xu = dot(row, x, u);
  const int n = row.slots();
  SO_LOOP
  for (int k = 0; k < n; ++k) out[k] = u[k] - xu * x[k];
}

template <class Row, class A>
SO_HD void proju_bwd(const Row& row, const A* g, const A* x, const A* u, A* gx, A* gu) {
  const int n = row.slots();
  A xu = 0, xg = 0;
  SO_SUM(xu, xg)
  for (int k = 0; k < n; ++k) {
    xu += x[k] * u[k];
    xg += x[k] * g[k];
  }
  xu = row.sum(xu);
  xg = row.sum(xg);
  SO_LOOP
  for (int k = 0; k < n; ++k) {
    gx[k] = -(xu * g[k] + xg * u[k]);
    gu[k] = g[k] - xg * x[k];
  }
}

template <class Row, class A>
SO_HD A dist_fwd(const Row& row, const A* x, const A* y) {
  const int n = row.slots();
  A dd = 0, ss = 0;
  SO_SUM(dd, ss)
  for (int k = 0; k < n; ++k) {
    const A dk = y[k] - x[k], sk = y[k] + x[k];
    dd += dk * dk;
    ss += sk * sk;
  }
  return A(2) * so_atan2(so_sqrt(row.sum(dd)), so_sqrt(row.sum(ss)));
}

template <class Row, class A>
SO_HD void dist_bwd(const Row& row, A g, const A* x, const A* y, A* gx, A* gy) {
  const int n = row.slots();
  A dd = 0, ss = 0;
  SO_SUM(dd, ss)
  for (int k = 0; k < n; ++k) {
    const A dk = y[k] - x[k], sk = y[k] + x[k];
    dd += dk * dk;
    ss += sk * sk;
  }
  dd = row.sum(dd);
  ss = row.sum(ss);
  const A a = so_sqrt(dd), b = so_sqrt(ss), den = dd + ss;
  const A kd = safe_div(safe_div(A(2) * b * g, den), a);
  const A ks = safe_div(safe_div(A(-2) * a * g, den), b);
  SO_LOOP
  for (int k = 0; k < n; ++k) {
    const A gd = kd * (y[k] - x[k]), gs = ks * (y[k] + x[k]);
    gx[k] = gs - gd;
    gy[k] = gs + gd;
  }
}

template <class A>
struct ExpScalars {
  A cos_n, sinc_n, nw;
};

template <class Row, class A>
SO_HD ExpScalars<A> exp_scalars(const Row& row, const A* x, const A* u, A* xu_out, A* uu_out, A* xx_out) {
  const int n = row.slots();
  A xx = 0, xu = 0, uu = 0;
  SO_SUM(xx, xu, uu)
  for (int k = 0; k < n; ++k) {
    xx += x[k] * x[k];
    xu += x[k] * u[k];
    uu += u[k] * u[k];
  }
  xx = row.sum(xx);
  xu = row.sum(xu);
  uu = row.sum(uu);
  const A nu = so_sqrt(uu);
  ExpScalars<A> s;
  s.cos_n = so_cos(nu);
  s.sinc_n = sinc(nu);
  // |cos x + sinc u|^2 expanded: on the sphere the cross term is ~0, nothing cancels.
  const A w2 = s.cos_n * s.cos_n * xx + A(2) * s.cos_n * s.sinc_n * xu + s.sinc_n * s.sinc_n * uu;
  s.nw = w2 > A(0) ? so_sqrt(w2) : A(0);
  *xu_out = xu;
  *uu_out = uu;
  *xx_out = xx;
  return s;
}

template <class Row, class A>
SO_HD void expmap_fwd(const Row& row, const A* x, const A* u, A* out) {
  A xu, uu, xx;
  const ExpScalars<A> s = exp_scalars(row, x, u, &xu, &uu, &xx);
  const A inv = safe_div(A(1), s.nw);
  const A cx = s.cos_n * inv, cu = s.sinc_n * inv;
  const int n = row.slots();
  SO_LOOP
  for (int k = 0; k < n; ++k) out[k] = cx * x[k] + cu * u[k];
}

template <class Row, class A>
SO_HD void expmap_bwd(const Row& row, const A* g, const A* x, const A* u, A* gx, A* gu) {
  A xu, uu, xx;
  const ExpScalars<A> s = exp_scalars(row, x, u, &xu, &uu, &xx);
  const int n = row.slots();
  A gxd = 0, gud = 0;
  SO_SUM(gxd, gud)
  for (int k = 0; k < n; ++k) {
    gxd += g[k] * x[k];
    gud += g[k] * u[k];
  }
  gxd = row.sum(gxd);
  gud = row.sum(gud);
  const A inv = safe_div(A(1), s.nw);
  const A cx = s.cos_n * inv, cu = s.sinc_n * inv;  // out = cx x + cu u
  const A g_out = cx * gxd + cu * gud;
  // gw = (g - <g, out> out) / |w|; its products with x and u follow from the sums.
  const A x_gw = (gxd - g_out * (cx * xx + cu * xu)) * inv;
  const A u_gw = (gud - g_out * (cx * xu + cu * uu)) * inv;
  const A ku = expmap_q(so_sqrt(uu)) * u_gw - s.sinc_n * x_gw;
  SO_LOOP
  for (int k = 0; k < n; ++k) {
    const A gw = (g[k] - g_out * (cx * x[k] + cu * u[k])) * inv;
    gx[k] = s.cos_n * gw;
    gu[k] = s.sinc_n * gw + ku * u[k];
  }
}

template <class Row, class A>
SO_HD void logmap_fwd(const Row& row, int d, const A* x, const A* y, A* e, A* out) {
  const Chord<A> c = chord(row, d, x, y, e);
  const int n = row.slots();
  SO_LOOP
  for (int k = 0; k < n; ++k) out[k] = c.theta * e[k];
}

// scratch: 2 arrays of slots.
template <class Row, class A>
SO_HD void logmap_bwd(const Row& row, int d, const A* g, const A* x, const A* y, A* scratch, A* gx,
                      A* gy) {
  const int n = row.slots();
  A* e = scratch;
  A* gv = scratch + n;
  const Chord<A> c = chord(row, d, x, y, e);
  const A g_theta = dot(row, g, e);
  direction_backward(row, c, e, g_theta, g, gv);
  SO_LOOP
  for (int k = 0; k < n; ++k) gx[k] = gy[k] = A(0);
  chord_backward(row, c, x, y, g_theta, gv, gx, gy);
}

// The slerp state at time t (the reference's `_slerp`), with xt and wp in arrays.
template <class A>
struct Slerp {
  Chord<A> c;
  A t, cos_p, sin_p, nw, alpha;  // alpha = <wp, xt>
};

template <class Row, class A>
SO_HD Slerp<A> slerp(const Row& row, int d, const A* x0, const A* x1, A t, A* e, A* xt, A* wp) {
  Slerp<A> s;
  s.c = chord(row, d, x0, x1, e);
  s.t = t;
  const A phi = t * s.c.theta;
  s.cos_p = so_cos(phi);
  s.sin_p = so_sin(phi);
  const A th = s.c.theta;
  const int n = row.slots();
  A ww = 0, pw = 0;
  SO_SUM(ww, pw)
  for (int k = 0; k < n; ++k) {
    const A w = s.cos_p * x0[k] + s.sin_p * e[k];
    const A p = th * (s.cos_p * e[k] - s.sin_p * x0[k]);
    xt[k] = w;
    wp[k] = p;
    ww += w * w;
    pw += p * w;
  }
  s.nw = so_sqrt(row.sum(ww));
  const A inv = safe_div(A(1), s.nw);
  s.alpha = row.sum(pw) * inv;
  SO_LOOP
  for (int k = 0; k < n; ++k) xt[k] *= inv;
  return s;
}

// The array form, for any row (the coefficient form below does not take antipodes).
// ut may be null (geodesic without its velocity). scratch: 2 arrays.
template <class Row, class A>
SO_HD void geodesic_velocity_fwd_arrays(const Row& row, int d, const A* x0, const A* x1, A t, A* scratch,
                                        A* xt, A* ut) {
  const int n = row.slots();
  A* e = scratch;
  A* wp = scratch + n;
  const Slerp<A> s = slerp(row, d, x0, x1, t, e, xt, wp);
  if (!ut) return;
  const A inv = safe_div(A(1), s.nw);
  SO_LOOP
  for (int k = 0; k < n; ++k) ut[k] = (wp[k] - s.alpha * xt[k]) * inv;
}

// The array form of the backward. gu may be null (only x_t was used).
// scratch: 5 arrays. Returns dL/dt.
template <class Row, class A>
SO_HD A geodesic_velocity_bwd_arrays(const Row& row, int d, const A* gx, const A* gu, const A* x0,
                                     const A* x1, A t, A* scratch, A* gx0, A* gx1) {
  const int n = row.slots();
  A* e = scratch;
  A* xt = scratch + n;
  A* wp = scratch + 2 * n;
  A* g_w = scratch + 3 * n;
  A* g_wp = scratch + 4 * n;
  const Slerp<A> s = slerp(row, d, x0, x1, t, e, xt, wp);
  const Chord<A>& c = s.c;
  const A inv = safe_div(A(1), s.nw);
  // ut = (wp - alpha xt) / |w|, xt = w / |w|
  A gu_xt = 0, gu_ut = 0;
  if (gu) {
    SO_SUM(gu_xt, gu_ut)
    for (int k = 0; k < n; ++k) {
      gu_xt += gu[k] * xt[k];
      gu_ut += gu[k] * (wp[k] - s.alpha * xt[k]);
    }
    gu_xt = row.sum(gu_xt);
    gu_ut = row.sum(gu_ut) * inv;
  }
  const A g_nw = -gu_ut * inv;
  A gxt_xt = 0;
  SO_SUM(gxt_xt)
  for (int k = 0; k < n; ++k) {
    const A guk = gu ? gu[k] : A(0);
    g_wp[k] = (guk - gu_xt * xt[k]) * inv;
    g_w[k] = gx[k] - (s.alpha * guk + gu_xt * wp[k]) * inv;  // g_xt for now
    gxt_xt += g_w[k] * xt[k];
  }
  gxt_xt = row.sum(gxt_xt);
  A gw_x0 = 0, gw_e = 0, gwp_x0 = 0, gwp_e = 0;
  SO_SUM(gw_x0, gw_e, gwp_x0, gwp_e)
  for (int k = 0; k < n; ++k) {
    g_w[k] = (g_w[k] - gxt_xt * xt[k]) * inv + g_nw * xt[k];
    gw_x0 += g_w[k] * x0[k];
    gw_e += g_w[k] * e[k];
    gwp_x0 += g_wp[k] * x0[k];
    gwp_e += g_wp[k] * e[k];
  }
  gw_x0 = row.sum(gw_x0);
  gw_e = row.sum(gw_e);
  gwp_x0 = row.sum(gwp_x0);
  gwp_e = row.sum(gwp_e);
  // w = cos(phi) x0 + sin(phi) e, wp = theta (cos(phi) e - sin(phi) x0), phi = t theta
  const A th = c.theta;
  const A g_cos = gw_x0 + th * gwp_e;
  const A g_sin = gw_e - th * gwp_x0;
  const A g_phi = s.cos_p * g_sin - s.sin_p * g_cos;
  const A g_theta = s.cos_p * gwp_e - s.sin_p * gwp_x0 + t * g_phi;
  const A g_t = th * g_phi;
  // dL/de / theta = t sinc(t theta) g_w + cos(phi) g_wp; its products follow from the sums.
  const A kw = t * sinc(t * th), kp = s.cos_p;
  const A h_e = kw * gw_e + kp * gwp_e;
  A* gv = xt;  // xt is no longer needed
  SO_LOOP
  for (int k = 0; k < n; ++k) gv[k] = c.r * (kw * g_w[k] + kp * g_wp[k] - h_e * e[k]);
  SO_LOOP
  for (int k = 0; k < n; ++k) {
    gx0[k] = s.cos_p * g_w[k] - th * s.sin_p * g_wp[k];
    gx1[k] = A(0);
  }
  chord_backward(row, c, x0, x1, g_theta, gv, gx0, gx1);
  return g_t;
}

// ---------------------------------------------------------------- coefficient form
// Every vector of the geodesic, its velocity and their gradients lies in the span of
// x0, z and the two output gradients, where z = x1 - x0 when x1 is nearer x0 than
// -x0 and z = x1 + x0 otherwise (free of cancellation either way). So a row needs
// one pass of dot products and one pass that writes combinations of its inputs.
// Rows with x1 == -x0 exactly leave that span (their direction is J x0) and take
// the array form.

// a x0 + b z
template <class A>
struct Vec2 {
  A x, z;
};

// a x0 + b z + c gxt + d gut
template <class A>
struct Vec4 {
  A x, z, g, u;
  SO_HD Vec4 operator+(const Vec4& o) const { return {x + o.x, z + o.z, g + o.g, u + o.u}; }
  SO_HD Vec4 operator-(const Vec4& o) const { return {x - o.x, z - o.z, g - o.g, u - o.u}; }
  SO_HD Vec4 operator*(A k) const { return {x * k, z * k, g * k, u * k}; }
};

template <class A>
SO_HD Vec4<A> lift(Vec2<A> v) {
  return {v.x, v.z, A(0), A(0)};
}

// The slerp of one row in coefficients of (x0, z).
template <class A>
struct SlerpCoef {
  bool near, antipodal;
  A a, b, theta;
  A xx, zx, zz;  // Gram of (x0, z)
  A q;           // <z, x0> / |x0|^2: w = z - q x0 is the part of x1 orthogonal to x0
  A m, r;        // |w|, theta / m (1 at x0 == x1)
  Vec2<A> e;     // w / m
  A t, cos_p, sin_p;
  Vec2<A> w;     // cos(phi) x0 + sin(phi) e, phi = t theta
  A nw;          // |w|
  Vec2<A> wp;    // dw/dt = theta (cos(phi) e - sin(phi) x0)
  A alpha;       // <wp, w> / |w|
};

template <class A>
SO_HD A gram_dot(const SlerpCoef<A>& s, Vec2<A> u, Vec2<A> v) {
  return u.x * v.x * s.xx + (u.x * v.z + u.z * v.x) * s.zx + u.z * v.z * s.zz;
}

template <class A>
SO_HD SlerpCoef<A> slerp_coefficients(const RowSums<A>& r, A t) {
  SlerpCoef<A> s;
  s.a = so_sqrt(r.dd);
  s.b = so_sqrt(r.ss);
  s.theta = A(2) * so_atan2(s.a, s.b);
  s.near = s.a <= s.b;
  s.xx = r.xx;
  s.zx = s.near ? r.dx : r.sx;
  s.zz = s.near ? r.dd : r.ss;
  s.q = safe_div(s.zx, s.xx);
  const A m2 = s.zz - s.q * s.zx;
  s.m = m2 > A(0) ? so_sqrt(m2) : A(0);
  s.antipodal = s.m == A(0) && !s.near;
  s.r = s.m > A(0) ? s.theta / s.m : A(s.near ? 1 : 0);
  const A inv_m = safe_div(A(1), s.m);
  s.e = {-s.q * inv_m, inv_m};
  s.t = t;
  s.cos_p = so_cos(t * s.theta);
  s.sin_p = so_sin(t * s.theta);
  s.w = {s.cos_p + s.sin_p * s.e.x, s.sin_p * s.e.z};
  s.nw = so_sqrt(gram_dot(s, s.w, s.w));
  s.wp = {s.theta * (s.cos_p * s.e.x - s.sin_p), s.theta * s.cos_p * s.e.z};
  s.alpha = safe_div(gram_dot(s, s.wp, s.w), s.nw);
  return s;
}

// Writes x0 c.x + z c.z (and the same with u) for every slot of a row.
template <class Row, class A>
SO_HD void write_combination(const Row& row, bool near, const A* x0, const A* x1, Vec2<A> cx, A* out,
                             Vec2<A> cu, A* out_u) {
  const int n = row.slots();
  const A sign = near ? A(-1) : A(1);
  if (out_u) {
    SO_LOOP
    for (int k = 0; k < n; ++k) {
      const A zk = x1[k] + sign * x0[k];
      out[k] = cx.x * x0[k] + cx.z * zk;
      out_u[k] = cu.x * x0[k] + cu.z * zk;
    }
  } else {
    SO_LOOP
    for (int k = 0; k < n; ++k) out[k] = cx.x * x0[k] + cx.z * (x1[k] + sign * x0[k]);
  }
}

// ut may be null (geodesic without its velocity). scratch: 2 arrays (antipodal rows only).
template <class Row, class A>
SO_HD void geodesic_velocity_fwd(const Row& row, int d, const A* x0, const A* x1, A t, A* scratch, A* xt,
                                 A* ut) {
  const RowSums<A> sums = row_sums<false, false>(row, x0, x1, x0, x0);
  const SlerpCoef<A> s = slerp_coefficients(sums, t);
  if (s.antipodal) return geodesic_velocity_fwd_arrays(row, d, x0, x1, t, scratch, xt, ut);
  const A inv = safe_div(A(1), s.nw);
  const Vec2<A> cx = {s.w.x * inv, s.w.z * inv};
  const Vec2<A> cu = {(s.wp.x - s.alpha * cx.x) * inv, (s.wp.z - s.alpha * cx.z) * inv};
  write_combination(row, s.near, x0, x1, cx, xt, cu, ut);
}

// The products of a Vec4 with a vector of span(x0, z).
template <class A>
struct GradDot {
  const SlerpCoef<A>& s;
  A gx_x, gx_z, gu_x, gu_z;
  SO_HD A operator()(const Vec4<A>& u, Vec2<A> v) const {
    return gram_dot(s, {u.x, u.z}, v) + u.g * (v.x * gx_x + v.z * gx_z) + u.u * (v.x * gu_x + v.z * gu_z);
  }
};

// gu may be null (only x_t was used). scratch: 5 arrays (antipodal rows only). Returns dL/dt.
template <class Row, class A>
SO_HD A geodesic_velocity_bwd(const Row& row, int d, const A* gx, const A* gu, const A* x0, const A* x1, A t,
                              A* scratch, A* gx0, A* gx1) {
  const RowSums<A> r = gu ? row_sums<true, true>(row, x0, x1, gx, gu) : row_sums<true, false>(row, x0, x1, gx, gx);
  const SlerpCoef<A> s = slerp_coefficients(r, t);
  if (s.antipodal) return geodesic_velocity_bwd_arrays(row, d, gx, gu, x0, x1, t, scratch, gx0, gx1);
  const GradDot<A> dot4{s, r.gx_x, s.near ? r.gx_d : r.gx_s, r.gu_x, s.near ? r.gu_d : r.gu_s};
  const Vec2<A> x_ = {A(1), A(0)}, z_ = {A(0), A(1)};
  const Vec4<A> gxt = {A(0), A(0), A(1), A(0)}, gut = {A(0), A(0), A(0), A(1)};
  const A inv = safe_div(A(1), s.nw);
  const Vec2<A> xt = {s.w.x * inv, s.w.z * inv};
  // ut = (wp - alpha xt) / |w| and xt = w / |w|
  const A gu_xt = dot4(gut, xt), gu_wp = dot4(gut, s.wp), gx_xt = dot4(gxt, xt);
  const Vec4<A> g_wp = (gut - lift(xt) * gu_xt) * inv;
  const A g_nw = -(gu_wp - s.alpha * gu_xt) * inv * inv;
  const Vec4<A> g_xt = gxt - (gut * s.alpha + lift(s.wp) * gu_xt) * inv;
  const A gxt_xt = gx_xt - A(2) * s.alpha * gu_xt * inv;
  const Vec4<A> g_w = (g_xt - lift(xt) * gxt_xt) * inv + lift(xt) * g_nw;
  // w = cos(phi) x0 + sin(phi) e and wp = theta (cos(phi) e - sin(phi) x0), phi = t theta
  const A gw_x0 = dot4(g_w, x_), gw_e = dot4(g_w, s.e), gwp_x0 = dot4(g_wp, x_), gwp_e = dot4(g_wp, s.e);
  const A th = s.theta;
  const A g_cos = gw_x0 + th * gwp_e;
  const A g_sin = gw_e - th * gwp_x0;
  const A g_phi = s.cos_p * g_sin - s.sin_p * g_cos;
  const A g_theta = s.cos_p * gwp_e - s.sin_p * gwp_x0 + t * g_phi;
  // The gradient w.r.t. w = z - q x0 of e = w / m, kept finite as x1 -> x0.
  const A kw = t * sinc(t * th);
  const A h_e = kw * gw_e + s.cos_p * gwp_e;
  const Vec4<A> g_dir = (g_w * kw + g_wp * s.cos_p - lift(s.e) * h_e) * s.r;
  const A k = safe_div(dot4(g_dir, x_), s.xx);
  const Vec4<A> g_z = g_dir - lift(x_) * k;
  Vec4<A> g_x0 = lift(x_) * (A(2) * s.q * k) - g_dir * s.q - lift(z_) * k;
  // theta = 2 atan2(|d|, |s|), with d = z (near) or z - 2 x0, s = z + 2 x0 (near) or z
  const A den = r.dd + r.ss;
  const A kd = safe_div(safe_div(A(2) * s.b * g_theta, den), s.a);
  const A ks = safe_div(safe_div(A(-2) * s.a * g_theta, den), s.b);
  Vec4<A> g_d, g_s;
  if (s.near) {
    g_d = g_z + lift(z_) * kd;
    g_s = lift(Vec2<A>{A(2) * ks, ks});
  } else {
    g_s = g_z + lift(z_) * ks;
    g_d = lift(Vec2<A>{A(-2) * kd, kd});
  }
  g_x0 = g_x0 - g_d + g_s + g_w * s.cos_p - g_wp * (th * s.sin_p);
  const Vec4<A> g_x1 = g_d + g_s;
  const int n = row.slots();
  const A sign = s.near ? A(-1) : A(1);
  if (gu) {
    SO_LOOP
    for (int j = 0; j < n; ++j) {
      const A zj = x1[j] + sign * x0[j];
      gx0[j] = g_x0.x * x0[j] + g_x0.z * zj + g_x0.g * gx[j] + g_x0.u * gu[j];
      gx1[j] = g_x1.x * x0[j] + g_x1.z * zj + g_x1.g * gx[j] + g_x1.u * gu[j];
    }
  } else {
    SO_LOOP
    for (int j = 0; j < n; ++j) {
      const A zj = x1[j] + sign * x0[j];
      gx0[j] = g_x0.x * x0[j] + g_x0.z * zj + g_x0.g * gx[j];
      gx1[j] = g_x1.x * x0[j] + g_x1.z * zj + g_x1.g * gx[j];
    }
  }
  return th * g_phi;
}

// scratch: 1 array (e).
template <class Row, class A>
SO_HD void transp_fwd(const Row& row, int d, const A* x, const A* y, const A* v, A* scratch, A* out) {
  const int n = row.slots();
  A* e = scratch;
  const Chord<A> c = chord(row, d, x, y, e);
  A p = 0, q = 0;
  SO_SUM(p, q)
  for (int k = 0; k < n; ++k) {
    p += v[k] * e[k];
    q += v[k] * x[k];
  }
  p = row.sum(p);
  q = row.sum(q);
  const A h = so_sin(A(0.5) * c.theta);
  const A cm1 = A(-2) * h * h, sin_t = so_sin(c.theta);
  const A alpha = p * cm1 + q * sin_t, beta = q * cm1 - p * sin_t;
  SO_LOOP
  for (int k = 0; k < n; ++k) out[k] = v[k] + alpha * e[k] + beta * x[k];
}

// scratch: 2 arrays.
template <class Row, class A>
SO_HD void transp_bwd(const Row& row, int d, const A* g, const A* x, const A* y, const A* v,
                      A* scratch, A* gx, A* gy, A* gvec) {
  const int n = row.slots();
  A* e = scratch;
  A* gdir = scratch + n;
  const Chord<A> c = chord(row, d, x, y, e);
  A p = 0, q = 0, g_alpha = 0, g_beta = 0;
  SO_SUM(p, q, g_alpha, g_beta)
  for (int k = 0; k < n; ++k) {
    p += v[k] * e[k];
    q += v[k] * x[k];
    g_alpha += g[k] * e[k];
    g_beta += g[k] * x[k];
  }
  p = row.sum(p);
  q = row.sum(q);
  g_alpha = row.sum(g_alpha);
  g_beta = row.sum(g_beta);
  const A half = A(0.5) * c.theta;
  const A sh = so_sin(half);
  const A cm1 = A(-2) * sh * sh, sin_t = so_sin(c.theta), cos_t = so_cos(c.theta);
  const A beta = q * cm1 - p * sin_t;
  const A g_p = g_alpha * cm1 - g_beta * sin_t;
  const A g_q = g_alpha * sin_t + g_beta * cm1;
  const A g_theta = -sin_t * (g_alpha * p + g_beta * q) + cos_t * (g_alpha * q - g_beta * p);
  // dL/de / theta with cm1 / theta = -sin(h) sinc(h) and sin(theta) / theta = sinc(theta)
  const A cm1_t = -sh * sinc(half), sin_t_t = sinc(c.theta);
  const A kg = p * cm1_t + q * sin_t_t, kv = g_alpha * cm1_t - g_beta * sin_t_t;
  const A h_e = kg * g_alpha + kv * p;
  SO_LOOP
  for (int k = 0; k < n; ++k) {
    gdir[k] = c.r * (kg * g[k] + kv * v[k] - h_e * e[k]);
    gvec[k] = g[k] + g_p * e[k] + g_q * x[k];
    gx[k] = beta * g[k] + g_q * v[k];
    gy[k] = A(0);
  }
  chord_backward(row, c, x, y, g_theta, gdir, gx, gy);
}

}  // namespace SO_MATH_NS
}  // namespace sphere_ops
