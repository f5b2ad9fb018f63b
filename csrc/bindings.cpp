// Python bindings: every entry point takes (cuda, stream, dtype, rows, d) and raw
// data pointers as integers, so the extension never links against torch.
#include <pybind11/pybind11.h>

#include <stdexcept>
#include <string>

#if defined(__linux__)
#include <sys/mman.h>
#endif

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

// The instruction set the CPU kernels run with: the best this CPU has, unless set.
enum class Isa { base, avx2, avx512 };

Isa detect_isa() {
#if defined(SPHERE_OPS_X86_VARIANTS)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("x86-64-v4")) return Isa::avx512;
  if (__builtin_cpu_supports("x86-64-v3")) return Isa::avx2;
#endif
  return Isa::base;
}

const Isa best_isa = detect_isa();
Isa cpu_isa = best_isa;

const char* isa_name(Isa isa) { return isa == Isa::avx512 ? "avx512" : isa == Isa::avx2 ? "avx2" : "base"; }

void set_cpu_isa(const std::string& name) {
  const Isa wanted = name == "avx512" ? Isa::avx512 : name == "avx2" ? Isa::avx2 : Isa::base;
  if (std::string(isa_name(wanted)) != name) throw std::invalid_argument("unknown instruction set " + name);
  if (int(wanted) > int(best_isa)) throw std::invalid_argument(name + " is not supported by this CPU");
  cpu_isa = wanted;
}

#if defined(SPHERE_OPS_X86_VARIANTS)
#define SO_CPU_CALL(name, ...)                                                           \
  (cpu_isa == Isa::avx512 ? sphere_ops::cpu_avx512::name(__VA_ARGS__)                     \
   : cpu_isa == Isa::avx2 ? sphere_ops::cpu_avx2::name(__VA_ARGS__)                       \
                          : sphere_ops::cpu_base::name(__VA_ARGS__))
#else
#define SO_CPU_CALL(name, ...) sphere_ops::cpu_base::name(__VA_ARGS__)
#endif

// Calls the CPU or the CUDA version of an entry point with the same arguments.
#ifdef SPHERE_OPS_WITH_CUDA
#define SO_CALL(name, ...) (cuda ? sphere_ops::cuda::name(__VA_ARGS__) : SO_CPU_CALL(name, __VA_ARGS__))
#else
#define SO_CALL(name, ...) SO_CPU_CALL(name, __VA_ARGS__)
#endif

// Asks the kernel to back a fresh buffer with huge pages before its first write:
// first-touch page faults otherwise cost more than the kernels on large outputs.
void advise_hugepages(Ptr p, size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHuge = uintptr_t(1) << 21;
  const uintptr_t start = (p + kHuge - 1) & ~(kHuge - 1);
  const uintptr_t end = (p + bytes) & ~(kHuge - 1);
  if (end > start) madvise(reinterpret_cast<void*>(start), end - start, MADV_HUGEPAGE);
#else
  (void)p;
  (void)bytes;
#endif
}

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
  m.def("cpu_isa", [] { return std::string(isa_name(cpu_isa)); }, "The instruction set the CPU kernels use.");
  m.def("best_cpu_isa", [] { return std::string(isa_name(best_isa)); });
  m.def("set_cpu_isa", &set_cpu_isa, "Use the base, avx2 or avx512 build of the CPU kernels.");
  m.def("advise_hugepages", &advise_hugepages);
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
