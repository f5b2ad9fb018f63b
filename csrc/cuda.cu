// CUDA kernels: one warp per row. A lane holds S values of its row in registers,
// as S / CH chunks of CH consecutive columns (CH = 16 bytes / sizeof(T)), loaded
// and stored with 16-byte accesses when rows are aligned; the per-row math is
// the shared code of sphere_math.h with warp-shuffle reductions.
//
// Rows longer than 1024 and float64 would spill registers (and multiply the
// build time); the Python side sends those to Triton or the reference.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>
#include <type_traits>

#include "kernels.h"
#include "sphere_math.h"

namespace sphere_ops {
namespace cuda {
namespace {

constexpr int kWarp = 32;
constexpr int kWarpsPerBlock = 4;
constexpr int kMaxSlots = 32;  // per lane: D <= 32 * 32 = 1024 (ViT-S/B/L widths)

template <class T>
struct Acc {
  using type = float;
};

__device__ __forceinline__ float to_acc_f(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float to_acc_f(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_acc_f(float v) { return v; }

template <class T, class A>
__device__ __forceinline__ T from_acc(A v) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    return __float2bfloat16_rn(v);
  } else if constexpr (std::is_same_v<T, __half>) {
    return __float2half_rn(v);
  } else {
    return T(v);
  }
}

template <int CH, int S>
struct WarpRow {
  int lane;
  static constexpr __device__ __forceinline__ int slots() { return S; }
  __device__ __forceinline__ int index(int k) const { return (k / CH) * kWarp * CH + lane * CH + k % CH; }
  template <class A>
  __device__ __forceinline__ A sum(A s) const {
#pragma unroll
    for (int offset = kWarp / 2; offset > 0; offset /= 2) s += __shfl_xor_sync(0xffffffffu, s, offset);
    return s;
  }
  template <class A>
  __device__ __forceinline__ A partner(const A* a, int k) const {
    return a[k ^ 1];  // chunks are even-sized and start at even columns
  }
};

// Loads row r of base into the lane's slots; columns past d read as 0.
template <class T, int CH, int S, class A>
__device__ __forceinline__ void load_row(const void* base, int64_t r, int d, bool vec, int lane, A (&out)[S]) {
  const T* row = static_cast<const T*>(base) + r * d;
#pragma unroll
  for (int j = 0; j < S / CH; ++j) {
    const int i0 = j * kWarp * CH + lane * CH;
    if (vec && i0 + CH <= d) {
      const uint4 raw = *reinterpret_cast<const uint4*>(row + i0);
      const T* v = reinterpret_cast<const T*>(&raw);
#pragma unroll
      for (int c = 0; c < CH; ++c) out[j * CH + c] = to_acc_f(v[c]);
    } else {
#pragma unroll
      for (int c = 0; c < CH; ++c) out[j * CH + c] = i0 + c < d ? A(to_acc_f(row[i0 + c])) : A(0);
    }
  }
}

template <class T, int CH, int S, class A>
__device__ __forceinline__ void store_row(void* base, int64_t r, int d, bool vec, int lane, const A (&in)[S]) {
  T* row = static_cast<T*>(base) + r * d;
#pragma unroll
  for (int j = 0; j < S / CH; ++j) {
    const int i0 = j * kWarp * CH + lane * CH;
    if (vec && i0 + CH <= d) {
      uint4 raw;
      T* v = reinterpret_cast<T*>(&raw);
#pragma unroll
      for (int c = 0; c < CH; ++c) v[c] = from_acc<T>(in[j * CH + c]);
      *reinterpret_cast<uint4*>(row + i0) = raw;
    } else {
#pragma unroll
      for (int c = 0; c < CH; ++c)
        if (i0 + c < d) row[i0 + c] = from_acc<T>(in[j * CH + c]);
    }
  }
}

// Everything one lane needs to process its share of a row.
template <class T, int S>
struct Lane {
  using A = typename Acc<T>::type;
  static constexpr int CH = 16 / sizeof(T);
  using Row = WarpRow<CH, S>;
  Row row;
  int d;
  bool vec;
  __device__ __forceinline__ void load(const void* base, int64_t r, A (&out)[S]) const {
    load_row<T, CH, S>(base, r, d, vec, row.lane, out);
  }
  __device__ __forceinline__ void store(void* base, int64_t r, const A (&in)[S]) const {
    store_row<T, CH, S>(base, r, d, vec, row.lane, in);
  }
};

template <class T, int S, class Body>
__global__ void __launch_bounds__(kWarp* kWarpsPerBlock) rows_kernel(int64_t rows, int d, bool vec, Body body) {
  const int lane = threadIdx.x % kWarp;
  const int64_t warps = int64_t(gridDim.x) * kWarpsPerBlock;
  Lane<T, S> ln{{lane}, d, vec};
  for (int64_t r = int64_t(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarp; r < rows; r += warps)
    body(ln, r);
}

void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) throw std::runtime_error(std::string("sphere_ops CUDA ") + what + ": " + cudaGetErrorString(err));
}

// The smallest per-lane slot count (a multiple of CH) that holds a row of d values.
template <int CH, class F>
void with_slots(int d, F f) {
  const int need = (d + kWarp - 1) / kWarp;
  if (need <= 8) return f(std::integral_constant<int, 8>{});
  if (need <= 16) return f(std::integral_constant<int, 16>{});
  if (need <= 24) return f(std::integral_constant<int, 24>{});
  return f(std::integral_constant<int, kMaxSlots>{});
}

template <class F>
void dispatch(DType dtype, F f) {
  switch (dtype) {
    case DType::f32: return f(float{});
    case DType::f64: throw std::invalid_argument("sphere_ops CUDA kernels take no float64");
    case DType::bf16: return f(__nv_bfloat16{});
    case DType::f16: return f(__half{});
  }
}

template <class P>
bool aligned16(P p) {
  if constexpr (std::is_pointer_v<P>) {
    return reinterpret_cast<uintptr_t>(p) % 16 == 0;
  } else {
    return true;
  }
}

// Launches body(lane, row) over every row, with the slot count fitted to d;
// 16-byte accesses when every row of every pointer argument is 16-byte aligned.
template <class T, template <class, int> class Body, class... Args>
void launch(const Launch& l, Args... args) {
  if (l.rows == 0) return;
  constexpr int CH = 16 / sizeof(T);
  const bool vec = l.d % CH == 0 && (aligned16(args) && ...);
  const int64_t blocks_needed = (l.rows + kWarpsPerBlock - 1) / kWarpsPerBlock;
  const unsigned blocks = unsigned(blocks_needed < 65535 * 8 ? blocks_needed : 65535 * 8);
  with_slots<CH>(l.d, [&](auto slots) {
    constexpr int S = decltype(slots)::value;
    rows_kernel<T, S><<<blocks, kWarp * kWarpsPerBlock, 0, static_cast<cudaStream_t>(l.stream)>>>(
        l.rows, l.d, vec, Body<T, S>{args...});
  });
  check(cudaGetLastError(), "launch");
}

template <class T>
using AccT = typename Acc<T>::type;

// ------------------------------------------------------------------ op bodies
// Each body loads its row's inputs into registers, runs the shared math and
// stores its outputs.

template <class T, int S>
struct NormalizeFwd {
  const void *x;
  void* out;
  double eps;
  __device__ void operator()(const Lane<T, S>& ln, int64_t r) const {
    AccT<T> a[S], o[S];
    ln.load(x, r, a);
    math::normalize_fwd(ln.row, a, AccT<T>(eps), o);
    ln.store(out, r, o);
  }
};

template <class T, int S>
struct NormalizeBwd {
  const void *g, *x;
  void* gx;
  double eps;
  __device__ void operator()(const Lane<T, S>& ln, int64_t r) const {
    AccT<T> pg[S], a[S], o[S];
    ln.load(g, r, pg);
    ln.load(x, r, a);
    math::normalize_bwd(ln.row, pg, a, AccT<T>(eps), o);
    ln.store(gx, r, o);
  }
};

// Ops of the form f(a, b) -> out and their backward (g, a, b) -> (ga, gb); Math
// names the shared per-row functions.
template <class Math>
struct TwoInput {
  template <class T, int S>
  struct Fwd {
    const void *a, *b;
    void* out;
    __device__ void operator()(const Lane<T, S>& ln, int64_t r) const {
      AccT<T> pa[S], pb[S], o[S];
      ln.load(a, r, pa);
      ln.load(b, r, pb);
      Math::fwd(ln.row, pa, pb, o);
      ln.store(out, r, o);
    }
  };

  template <class T, int S>
  struct Bwd {
    const void *g, *a, *b;
    void *ga, *gb;
    __device__ void operator()(const Lane<T, S>& ln, int64_t r) const {
      AccT<T> pg[S], pa[S], pb[S], oa[S], ob[S];
      ln.load(g, r, pg);
      ln.load(a, r, pa);
      ln.load(b, r, pb);
      Math::bwd(ln.row, pg, pa, pb, oa, ob);
      ln.store(ga, r, oa);
      ln.store(gb, r, ob);
    }
  };
};

struct ProjuMath {
  template <class Row, class A>
  __device__ static void fwd(const Row& row, const A* x, const A* u, A* out) {
    math::proju_fwd(row, x, u, out);
  }
  template <class Row, class A>
  __device__ static void bwd(const Row& row, const A* g, const A* x, const A* u, A* gx, A* gu) {
    math::proju_bwd(row, g, x, u, gx, gu);
  }
};

struct ExpmapMath {
  template <class Row, class A>
  __device__ static void fwd(const Row& row, const A* x, const A* u, A* out) {
    math::expmap_fwd(row, x, u, out);
  }
  template <class Row, class A>
  __device__ static void bwd(const Row& row, const A* g, const A* x, const A* u, A* gx, A* gu) {
    math::expmap_bwd(row, g, x, u, gx, gu);
  }
};

template <class T, int S>
struct DistFwd {
  const void *x, *y;
  void* out;
  __device__ void operator()(const Lane<T, S>& ln, int64_t r) const {
    AccT<T> a[S], b[S];
    ln.load(x, r, a);
    ln.load(y, r, b);
    const AccT<T> theta = math::dist_fwd(ln.row, a, b);
    if (ln.row.lane == 0) static_cast<T*>(out)[r] = from_acc<T>(theta);
  }
};

template <class T, int S>
struct DistBwd {
  const void *g, *x, *y;
  void *gx, *gy;
  __device__ void operator()(const Lane<T, S>& ln, int64_t r) const {
    AccT<T> a[S], b[S], ga[S], gb[S];
    ln.load(x, r, a);
    ln.load(y, r, b);
    const AccT<T> gr = to_acc_f(static_cast<const T*>(g)[r]);
    math::dist_bwd(ln.row, gr, a, b, ga, gb);
    ln.store(gx, r, ga);
    ln.store(gy, r, gb);
  }
};

template <class T, int S>
struct LogmapFwd {
  const void *x, *y;
  void* out;
  int d;
  __device__ void operator()(const Lane<T, S>& ln, int64_t r) const {
    AccT<T> a[S], b[S], e[S], o[S];
    ln.load(x, r, a);
    ln.load(y, r, b);
    math::logmap_fwd(ln.row, d, a, b, e, o);
    ln.store(out, r, o);
  }
};

template <class T, int S>
struct LogmapBwd {
  const void *g, *x, *y;
  void *gx, *gy;
  int d;
  __device__ void operator()(const Lane<T, S>& ln, int64_t r) const {
    AccT<T> pg[S], a[S], b[S], scratch[2 * S], ga[S], gb[S];
    ln.load(g, r, pg);
    ln.load(x, r, a);
    ln.load(y, r, b);
    math::logmap_bwd(ln.row, d, pg, a, b, scratch, ga, gb);
    ln.store(gx, r, ga);
    ln.store(gy, r, gb);
  }
};

template <class T, int S>
struct GeodesicFwd {
  const void *x0, *x1, *t;
  void *xt, *ut;
  int d;
  __device__ void operator()(const Lane<T, S>& ln, int64_t r) const {
    AccT<T> a[S], b[S], scratch[2 * S], oxt[S], out[S];
    ln.load(x0, r, a);
    ln.load(x1, r, b);
    const AccT<T> tr = static_cast<const AccT<T>*>(t)[r];
    math::geodesic_velocity_fwd(ln.row, d, a, b, tr, scratch, oxt, ut ? out : nullptr);
    ln.store(xt, r, oxt);
    if (ut) ln.store(ut, r, out);
  }
};

template <class T, int S>
struct GeodesicBwd {
  const void *gxt, *gut, *x0, *x1, *t;
  void *gx0, *gx1, *gt;
  int d;
  __device__ void operator()(const Lane<T, S>& ln, int64_t r) const {
    AccT<T> pgx[S], pgu[S], a[S], b[S], scratch[5 * S], ga[S], gb[S];
    ln.load(gxt, r, pgx);
    if (gut) ln.load(gut, r, pgu);
    ln.load(x0, r, a);
    ln.load(x1, r, b);
    const AccT<T> tr = static_cast<const AccT<T>*>(t)[r];
    const AccT<T> g_t = math::geodesic_velocity_bwd(ln.row, d, pgx, gut ? pgu : nullptr, a, b, tr, scratch, ga, gb);
    ln.store(gx0, r, ga);
    ln.store(gx1, r, gb);
    if (ln.row.lane == 0) static_cast<AccT<T>*>(gt)[r] = g_t;
  }
};

template <class T, int S>
struct TranspFwd {
  const void *x, *y, *v;
  void* out;
  int d;
  __device__ void operator()(const Lane<T, S>& ln, int64_t r) const {
    AccT<T> a[S], b[S], c[S], e[S], o[S];
    ln.load(x, r, a);
    ln.load(y, r, b);
    ln.load(v, r, c);
    math::transp_fwd(ln.row, d, a, b, c, e, o);
    ln.store(out, r, o);
  }
};

template <class T, int S>
struct TranspBwd {
  const void *g, *x, *y, *v;
  void *gx, *gy, *gv;
  int d;
  __device__ void operator()(const Lane<T, S>& ln, int64_t r) const {
    AccT<T> pg[S], a[S], b[S], c[S], scratch[2 * S], ga[S], gb[S], gc[S];
    ln.load(g, r, pg);
    ln.load(x, r, a);
    ln.load(y, r, b);
    ln.load(v, r, c);
    math::transp_bwd(ln.row, d, pg, a, b, c, scratch, ga, gb, gc);
    ln.store(gx, r, ga);
    ln.store(gy, r, gb);
    ln.store(gv, r, gc);
  }
};

}  // namespace

int max_dim(DType dtype) { return dtype == DType::f64 ? 0 : kWarp * kMaxSlots; }

#define SO_RUN(Body, ...) dispatch(l.dtype, [&](auto tag) { launch<decltype(tag), Body>(l, __VA_ARGS__); })

void normalize(const Launch& l, const void* x, double eps, void* out) { SO_RUN(NormalizeFwd, x, out, eps); }
void normalize_bwd(const Launch& l, const void* g, const void* x, double eps, void* gx) {
  SO_RUN(NormalizeBwd, g, x, gx, eps);
}
void proju(const Launch& l, const void* x, const void* u, void* out) { SO_RUN(TwoInput<ProjuMath>::Fwd, x, u, out); }
void proju_bwd(const Launch& l, const void* g, const void* x, const void* u, void* gx, void* gu) {
  SO_RUN(TwoInput<ProjuMath>::Bwd, g, x, u, gx, gu);
}
void dist(const Launch& l, const void* x, const void* y, void* out) { SO_RUN(DistFwd, x, y, out); }
void dist_bwd(const Launch& l, const void* g, const void* x, const void* y, void* gx, void* gy) {
  SO_RUN(DistBwd, g, x, y, gx, gy);
}
void expmap(const Launch& l, const void* x, const void* u, void* out) { SO_RUN(TwoInput<ExpmapMath>::Fwd, x, u, out); }
void expmap_bwd(const Launch& l, const void* g, const void* x, const void* u, void* gx, void* gu) {
  SO_RUN(TwoInput<ExpmapMath>::Bwd, g, x, u, gx, gu);
}
void logmap(const Launch& l, const void* x, const void* y, void* out) { SO_RUN(LogmapFwd, x, y, out, l.d); }
void logmap_bwd(const Launch& l, const void* g, const void* x, const void* y, void* gx, void* gy) {
  SO_RUN(LogmapBwd, g, x, y, gx, gy, l.d);
}
void geodesic_velocity(const Launch& l, const void* x0, const void* x1, const void* t, void* xt, void* ut) {
  SO_RUN(GeodesicFwd, x0, x1, t, xt, ut, l.d);
}
void geodesic_velocity_bwd(const Launch& l, const void* gxt, const void* gut, const void* x0, const void* x1,
                           const void* t, void* gx0, void* gx1, void* gt) {
  SO_RUN(GeodesicBwd, gxt, gut, x0, x1, t, gx0, gx1, gt, l.d);
}
void transp(const Launch& l, const void* x, const void* y, const void* v, void* out) {
  SO_RUN(TranspFwd, x, y, v, out, l.d);
}
void transp_bwd(const Launch& l, const void* g, const void* x, const void* y, const void* v, void* gx, void* gy,
                void* gv) {
  SO_RUN(TranspBwd, g, x, y, v, gx, gy, gv, l.d);
}

}  // namespace cuda
}  // namespace sphere_ops
