// Entry points of the extension: one per op and direction, for CPU and CUDA.
// Pointers are raw data pointers of row-major (rows, d) tensors; the time t and
// its gradient are per-row values in the accumulation type (float, or double
// for float64); `dist` values and their gradients are per-row values in the
// input dtype. A null `ut`/`gut` means the velocity is not produced/used.
#pragma once

#include <cstdint>

namespace sphere_ops {

enum class DType : int { f32 = 0, f64 = 1, bf16 = 2, f16 = 3 };

struct Launch {
  int64_t rows;
  int d;
  DType dtype;
  void* stream;  // cudaStream_t for CUDA launches, ignored on CPU
};

#define SO_DECLARE_KERNELS                                                                          \
  void normalize(const Launch&, const void* x, double eps, void* out);                              \
  void normalize_bwd(const Launch&, const void* g, const void* x, double eps, void* gx);            \
  void proju(const Launch&, const void* x, const void* u, void* out);                               \
  void proju_bwd(const Launch&, const void* g, const void* x, const void* u, void* gx, void* gu);   \
  void dist(const Launch&, const void* x, const void* y, void* out);                                \
  void dist_bwd(const Launch&, const void* g, const void* x, const void* y, void* gx, void* gy);    \
  void expmap(const Launch&, const void* x, const void* u, void* out);                              \
  void expmap_bwd(const Launch&, const void* g, const void* x, const void* u, void* gx, void* gu);  \
  void logmap(const Launch&, const void* x, const void* y, void* out);                              \
  void logmap_bwd(const Launch&, const void* g, const void* x, const void* y, void* gx, void* gy);  \
  void geodesic_velocity(const Launch&, const void* x0, const void* x1, const void* t, void* xt,    \
                         void* ut);                                                                 \
  void geodesic_velocity_bwd(const Launch&, const void* gxt, const void* gut, const void* x0,       \
                             const void* x1, const void* t, void* gx0, void* gx1, void* gt);        \
  void transp(const Launch&, const void* x, const void* y, const void* v, void* out);               \
  void transp_bwd(const Launch&, const void* g, const void* x, const void* y, const void* v,        \
                  void* gx, void* gy, void* gv);

// The CPU kernels, built once per instruction set; bindings.cpp picks one at run time.
namespace cpu_base {
SO_DECLARE_KERNELS
}  // namespace cpu_base

namespace cpu_avx2 {
SO_DECLARE_KERNELS
}  // namespace cpu_avx2

namespace cpu_avx512 {
SO_DECLARE_KERNELS
}  // namespace cpu_avx512

namespace cuda {
SO_DECLARE_KERNELS
int max_dim(DType dtype);  // the largest D the CUDA kernels take for dtype (0: none)
}  // namespace cuda

}  // namespace sphere_ops
