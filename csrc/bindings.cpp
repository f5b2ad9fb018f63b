// Python bindings: every entry point takes (cuda, stream, dtype, rows, d) and raw
// data pointers as integers, so the extension never links against torch.
#include <pybind11/pybind11.h>

#include <stdexcept>

#include "kernels.h"

namespace py = pybind11;
using sphere_ops::DType;
using sphere_ops::Launch;

namespace {

using Ptr = uintptr_t;

const void* cp(Ptr p) { return reinterpret_cast<const void*>(p); }
void* mp(Ptr p) { return reinterpret_cast<void*>(p); }

Launch launch(bool cuda, Ptr stream, int dtype, int64_t rows, int d) {
  if (dtype < 0 || dtype > 3) throw std::invalid_argument("sphere_ops._C: unknown dtype code");
  if (cuda) {
#ifndef SPHERE_OPS_WITH_CUDA
    throw std::runtime_error("sphere_ops._C was built without CUDA");
#else
    if (d > sphere_ops::cuda::max_dim(DType(dtype)))
      throw std::invalid_argument("sphere_ops._C: D is larger than the CUDA kernels take");
#endif
  }
  return Launch{rows, d, DType(dtype), mp(stream)};
}

// Calls the CPU or the CUDA version of an entry point with the same arguments.
#ifdef SPHERE_OPS_WITH_CUDA
#define SO_CALL(name, ...) (cuda ? sphere_ops::cuda::name(__VA_ARGS__) : sphere_ops::cpu::name(__VA_ARGS__))
#else
#define SO_CALL(name, ...) sphere_ops::cpu::name(__VA_ARGS__)
#endif

#define SO_HEAD bool cuda, Ptr stream, int dtype, int64_t rows, int d
#define SO_LAUNCH launch(cuda, stream, dtype, rows, d)

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "Fused sphere kernels (CPU, and CUDA when built with it).";
  m.def("has_cuda", [] {
#ifdef SPHERE_OPS_WITH_CUDA
    return true;
#else
    return false;
#endif
  });
  m.def("cuda_max_dim", [](int dtype) {
#ifdef SPHERE_OPS_WITH_CUDA
    return sphere_ops::cuda::max_dim(DType(dtype));
#else
    (void)dtype;
    return 0;
#endif
  });

  m.def("normalize", [](SO_HEAD, Ptr x, double eps, Ptr out) {
    py::gil_scoped_release nogil;
    SO_CALL(normalize, SO_LAUNCH, cp(x), eps, mp(out));
  });
  m.def("normalize_backward", [](SO_HEAD, Ptr g, Ptr x, double eps, Ptr gx) {
    py::gil_scoped_release nogil;
    SO_CALL(normalize_bwd, SO_LAUNCH, cp(g), cp(x), eps, mp(gx));
  });
#define SO_BIND_TWO(name)                                                                        \
  m.def(#name, [](SO_HEAD, Ptr a, Ptr b, Ptr out) {                                              \
    py::gil_scoped_release nogil;                                                                \
    SO_CALL(name, SO_LAUNCH, cp(a), cp(b), mp(out));                                             \
  });                                                                                            \
  m.def(#name "_backward", [](SO_HEAD, Ptr g, Ptr a, Ptr b, Ptr ga, Ptr gb) {                    \
    py::gil_scoped_release nogil;                                                                \
    SO_CALL(name##_bwd, SO_LAUNCH, cp(g), cp(a), cp(b), mp(ga), mp(gb));                         \
  });
  SO_BIND_TWO(proju)
  SO_BIND_TWO(dist)
  SO_BIND_TWO(expmap)
  SO_BIND_TWO(logmap)
#undef SO_BIND_TWO
  m.def("geodesic_velocity", [](SO_HEAD, Ptr x0, Ptr x1, Ptr t, Ptr xt, Ptr ut) {
    py::gil_scoped_release nogil;
    SO_CALL(geodesic_velocity, SO_LAUNCH, cp(x0), cp(x1), cp(t), mp(xt), mp(ut));
  });
  m.def("geodesic_velocity_backward",
        [](SO_HEAD, Ptr gxt, Ptr gut, Ptr x0, Ptr x1, Ptr t, Ptr gx0, Ptr gx1, Ptr gt) {
          py::gil_scoped_release nogil;
          SO_CALL(geodesic_velocity_bwd, SO_LAUNCH, cp(gxt), cp(gut), cp(x0), cp(x1), cp(t), mp(gx0),
                  mp(gx1), mp(gt));
        });
  m.def("transp", [](SO_HEAD, Ptr x, Ptr y, Ptr v, Ptr out) {
    py::gil_scoped_release nogil;
    SO_CALL(transp, SO_LAUNCH, cp(x), cp(y), cp(v), mp(out));
  });
  m.def("transp_backward", [](SO_HEAD, Ptr g, Ptr x, Ptr y, Ptr v, Ptr gx, Ptr gy, Ptr gv) {
    py::gil_scoped_release nogil;
    SO_CALL(transp_bwd, SO_LAUNCH, cp(g), cp(x), cp(y), cp(v), mp(gx), mp(gy), mp(gv));
  });
}
