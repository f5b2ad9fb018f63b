// CPU kernels: OpenMP over rows; per row, the shared math of sphere_math.h on
// float (or double) arrays. float32/float64 rows are used in place; bfloat16 and
// float16 rows are converted into a per-thread buffer and back.
//
// This file is compiled once per instruction set (SO_CPU_NS = cpu_base,
// cpu_avx2, cpu_avx512); everything it defines is in that namespace or has
// internal linkage, and it uses no standard-library templates, so the linker
// never merges code built for one instruction set into another.
#include <cstring>
#include <new>
#include <type_traits>

#include "kernels.h"
#include "sphere_math.h"

#ifndef SO_CPU_NS
#define SO_CPU_NS cpu_base
#endif

namespace sphere_ops {
namespace SO_CPU_NS {
namespace {

namespace math = SO_MATH_NS;

// A heap array without std::vector (see above).
template <class A>
class Buffer {
 public:
  explicit Buffer(size_t n) : data_(n ? static_cast<A*>(::operator new[](n * sizeof(A))) : nullptr) {}
  ~Buffer() { ::operator delete[](data_); }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  A* data() { return data_; }

 private:
  A* data_;
};

struct BFloat16 {
  uint16_t bits;
};

inline float to_float(BFloat16 v) {
  const uint32_t u = uint32_t(v.bits) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

inline BFloat16 to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  if ((u & 0x7fffffffu) > 0x7f800000u) return {uint16_t((u >> 16) | 0x40)};  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest, ties to even
  return {uint16_t(u >> 16)};
}

template <class T>
struct Acc {
  using type = float;
};
template <>
struct Acc<double> {
  using type = double;
};

template <class T, class A>
inline A load(T v) {
  if constexpr (std::is_same_v<T, BFloat16>) {
    return to_float(v);
  } else {
    return A(v);
  }
}

template <class T, class A>
inline T store(A v) {
  if constexpr (std::is_same_v<T, BFloat16>) {
    return to_bf16(float(v));
  } else {
    return T(v);
  }
}

struct Row {
  int d;
  int slots() const { return d; }
  int index(int k) const { return k; }
  template <class A>
  A sum(A s) const {
    return s;
  }
  template <class A>
  A partner(const A* a, int k) const {
    return a[k ^ 1];
  }
};

// One thread's view of row r: inputs as A arrays, outputs written back at the end.
template <class T>
class RowIO {
 public:
  using A = typename Acc<T>::type;
  static constexpr bool kInPlace = std::is_same_v<T, A>;

  RowIO(int d, int scratch_arrays, int io_arrays)
      : d_(d), scratch_(size_t(d) * scratch_arrays), io_(kInPlace ? 0 : size_t(d) * io_arrays) {}
  RowIO(const RowIO&) = delete;
  RowIO& operator=(const RowIO&) = delete;

  const A* in(const void* base, int64_t r, int slot) {
    const T* src = static_cast<const T*>(base) + r * d_;
    if constexpr (kInPlace) {
      return src;
    } else {
      A* dst = io_.data() + size_t(slot) * d_;
      for (int k = 0; k < d_; ++k) dst[k] = load<T, A>(src[k]);
      return dst;
    }
  }

  A* out(void* base, int64_t r, int slot) {
    if (!base) return nullptr;
    if constexpr (kInPlace) {
      return static_cast<T*>(base) + r * d_;
    } else {
      return io_.data() + size_t(slot) * d_;
    }
  }

  void flush(void* base, int64_t r, int slot) {
    if constexpr (!kInPlace) {
      if (!base) return;
      T* dst = static_cast<T*>(base) + r * d_;
      const A* src = io_.data() + size_t(slot) * d_;
      for (int k = 0; k < d_; ++k) dst[k] = store<T, A>(src[k]);
    }
  }

  A* scratch() { return scratch_.data(); }

 private:
  int d_;
  Buffer<A> scratch_;
  Buffer<A> io_;
};

// Runs body(io, row, r) for every row, in parallel when the work is large enough.
template <class T, class Body>
void for_rows(const Launch& l, int scratch_arrays, int io_arrays, Body body) {
  const bool parallel = l.rows * int64_t(l.d) >= (int64_t(1) << 15);
#pragma omp parallel if (parallel)
  {
    RowIO<T> io(l.d, scratch_arrays, io_arrays);
    const Row row{l.d};
#pragma omp for schedule(static)
    for (int64_t r = 0; r < l.rows; ++r) body(io, row, r);
  }
}

template <class F>
void dispatch(DType dtype, F f) {
  switch (dtype) {
    case DType::f32: f(float{}); break;
    case DType::f64: f(double{}); break;
    case DType::bf16: f(BFloat16{}); break;
    case DType::f16: f(_Float16{}); break;
  }
}

template <class T>
using AccOf = typename Acc<T>::type;

}  // namespace

void normalize(const Launch& l, const void* x, double eps, void* out) {
  dispatch(l.dtype, [&](auto tag) {
    using T = decltype(tag);
    using A = AccOf<T>;
    for_rows<T>(l, 0, 2, [&](RowIO<T>& io, const Row& row, int64_t r) {
      math::normalize_fwd(row, io.in(x, r, 0), A(eps), io.out(out, r, 1));
      io.flush(out, r, 1);
    });
  });
}

void normalize_bwd(const Launch& l, const void* g, const void* x, double eps, void* gx) {
  dispatch(l.dtype, [&](auto tag) {
    using T = decltype(tag);
    using A = AccOf<T>;
    for_rows<T>(l, 0, 3, [&](RowIO<T>& io, const Row& row, int64_t r) {
      math::normalize_bwd(row, io.in(g, r, 0), io.in(x, r, 1), A(eps), io.out(gx, r, 2));
      io.flush(gx, r, 2);
    });
  });
}

// Ops of the form f(a, b) -> out, with `scratch` arrays of work space per thread.
template <class Fwd>
void two_input(const Launch& l, const void* a, const void* b, void* out, int scratch, Fwd fwd) {
  dispatch(l.dtype, [&](auto tag) {
    using T = decltype(tag);
    for_rows<T>(l, scratch, 3, [&](RowIO<T>& io, const Row& row, int64_t r) {
      fwd(row, io.in(a, r, 0), io.in(b, r, 1), io.scratch(), io.out(out, r, 2));
      io.flush(out, r, 2);
    });
  });
}

// Their backward: (g, a, b) -> (ga, gb).
template <class Bwd>
void two_input_bwd(const Launch& l, const void* g, const void* a, const void* b, void* ga, void* gb,
                   int scratch, Bwd bwd) {
  dispatch(l.dtype, [&](auto tag) {
    using T = decltype(tag);
    for_rows<T>(l, scratch, 5, [&](RowIO<T>& io, const Row& row, int64_t r) {
      bwd(row, io.in(g, r, 0), io.in(a, r, 1), io.in(b, r, 2), io.scratch(), io.out(ga, r, 3),
          io.out(gb, r, 4));
      io.flush(ga, r, 3);
      io.flush(gb, r, 4);
    });
  });
}

void proju(const Launch& l, const void* x, const void* u, void* out) {
  two_input(l, x, u, out, 0, [](const Row& row, auto* x, auto* u, auto*, auto* o) { math::proju_fwd(row, x, u, o); });
}

void proju_bwd(const Launch& l, const void* g, const void* x, const void* u, void* gx, void* gu) {
  two_input_bwd(l, g, x, u, gx, gu, 0, [](const Row& row, auto* g, auto* x, auto* u, auto*, auto* gx, auto* gu) {
    math::proju_bwd(row, g, x, u, gx, gu);
  });
}

void expmap(const Launch& l, const void* x, const void* u, void* out) {
  two_input(l, x, u, out, 0, [](const Row& row, auto* x, auto* u, auto*, auto* o) { math::expmap_fwd(row, x, u, o); });
}

void expmap_bwd(const Launch& l, const void* g, const void* x, const void* u, void* gx, void* gu) {
  two_input_bwd(l, g, x, u, gx, gu, 0, [](const Row& row, auto* g, auto* x, auto* u, auto*, auto* gx, auto* gu) {
    math::expmap_bwd(row, g, x, u, gx, gu);
  });
}

void logmap(const Launch& l, const void* x, const void* y, void* out) {
  two_input(l, x, y, out, 1, [&](const Row& row, auto* x, auto* y, auto* s, auto* o) {
    math::logmap_fwd(row, l.d, x, y, s, o);
  });
}

void logmap_bwd(const Launch& l, const void* g, const void* x, const void* y, void* gx, void* gy) {
  two_input_bwd(l, g, x, y, gx, gy, 2, [&](const Row& row, auto* g, auto* x, auto* y, auto* s, auto* gx, auto* gy) {
    math::logmap_bwd(row, l.d, g, x, y, s, gx, gy);
  });
}

void dist(const Launch& l, const void* x, const void* y, void* out) {
  dispatch(l.dtype, [&](auto tag) {
    using T = decltype(tag);
    T* o = static_cast<T*>(out);
    for_rows<T>(l, 0, 2, [&](RowIO<T>& io, const Row& row, int64_t r) {
      o[r] = store<T>(math::dist_fwd(row, io.in(x, r, 0), io.in(y, r, 1)));
    });
  });
}

void dist_bwd(const Launch& l, const void* g, const void* x, const void* y, void* gx, void* gy) {
  dispatch(l.dtype, [&](auto tag) {
    using T = decltype(tag);
    using A = AccOf<T>;
    const T* pg = static_cast<const T*>(g);
    for_rows<T>(l, 0, 4, [&](RowIO<T>& io, const Row& row, int64_t r) {
      math::dist_bwd(row, load<T, A>(pg[r]), io.in(x, r, 0), io.in(y, r, 1), io.out(gx, r, 2),
               io.out(gy, r, 3));
      io.flush(gx, r, 2);
      io.flush(gy, r, 3);
    });
  });
}

void geodesic_velocity(const Launch& l, const void* x0, const void* x1, const void* t, void* xt,
                       void* ut) {
  dispatch(l.dtype, [&](auto tag) {
    using T = decltype(tag);
    using A = AccOf<T>;
    const A* pt = static_cast<const A*>(t);
    for_rows<T>(l, 2, 4, [&](RowIO<T>& io, const Row& row, int64_t r) {
      math::geodesic_velocity_fwd(row, l.d, io.in(x0, r, 0), io.in(x1, r, 1), pt[r], io.scratch(),
                            io.out(xt, r, 2), io.out(ut, r, 3));
      io.flush(xt, r, 2);
      io.flush(ut, r, 3);
    });
  });
}

void geodesic_velocity_bwd(const Launch& l, const void* gxt, const void* gut, const void* x0,
                           const void* x1, const void* t, void* gx0, void* gx1, void* gt) {
  dispatch(l.dtype, [&](auto tag) {
    using T = decltype(tag);
    using A = AccOf<T>;
    const A* pt = static_cast<const A*>(t);
    A* pgt = static_cast<A*>(gt);
    for_rows<T>(l, 5, 6, [&](RowIO<T>& io, const Row& row, int64_t r) {
      const A* pgu = gut ? io.in(gut, r, 1) : nullptr;
      pgt[r] = math::geodesic_velocity_bwd(row, l.d, io.in(gxt, r, 0), pgu, io.in(x0, r, 2),
                                     io.in(x1, r, 3), pt[r], io.scratch(), io.out(gx0, r, 4),
                                     io.out(gx1, r, 5));
      io.flush(gx0, r, 4);
      io.flush(gx1, r, 5);
    });
  });
}

void transp(const Launch& l, const void* x, const void* y, const void* v, void* out) {
  dispatch(l.dtype, [&](auto tag) {
    using T = decltype(tag);
    for_rows<T>(l, 1, 4, [&](RowIO<T>& io, const Row& row, int64_t r) {
      math::transp_fwd(row, l.d, io.in(x, r, 0), io.in(y, r, 1), io.in(v, r, 2), io.scratch(),
                 io.out(out, r, 3));
      io.flush(out, r, 3);
    });
  });
}

void transp_bwd(const Launch& l, const void* g, const void* x, const void* y, const void* v,
                void* gx, void* gy, void* gv) {
  dispatch(l.dtype, [&](auto tag) {
    using T = decltype(tag);
    for_rows<T>(l, 2, 7, [&](RowIO<T>& io, const Row& row, int64_t r) {
      math::transp_bwd(row, l.d, io.in(g, r, 0), io.in(x, r, 1), io.in(y, r, 2), io.in(v, r, 3),
                 io.scratch(), io.out(gx, r, 4), io.out(gy, r, 5), io.out(gv, r, 6));
      io.flush(gx, r, 4);
      io.flush(gy, r, 5);
      io.flush(gv, r, 6);
    });
  });
}

}  // namespace SO_CPU_NS
}  // namespace sphere_ops
