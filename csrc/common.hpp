// Shared conventions and helpers for prostate-fast's C++ kernels (namespace pf). No Python here.
//
// Cython or C++? (the rule setup.py states too)
// * Cython (prostate_fast/**/_<stage>_cy.pyx) for plain loops over typed memoryviews, with
//   nogil/prange: what the compiler vectorises at the baseline ISA without help.
// * C++ (csrc/, linked into the one pybind11 module prostate_fast._native) when a kernel needs
//   intrinsics or per-ISA code (SSE2 in label.cpp, target_clones in tissue.cpp), classes (the
//   MXNet predictor), or a C API loaded at run time (MXNet's C predict API, dlopen).
// No C code in verbatim blocks of .pyx files beyond the OpenMP probe.
//
// Conventions
// * One file pair per kernel family (csrc/<stage>.hpp/.cpp); bindings.cpp is the only file that
//   includes pybind11: it converts arrays, releases the GIL and calls the kernel.
// * Images are C-contiguous uint8, row-major, interleaved channels (H, W, C).
// * Validation happens once, in the Python wrapper (the public function): neither a binding nor
//   a kernel re-checks shapes, dtypes, ranges or thread counts. The wrapper also resolves the
//   thread count (prostate_fast._util.resolve_threads): kernels take n_threads >= 1.
// * No exception may cross an OpenMP region: kernels do plain arithmetic on buffers the wrapper
//   checked, so nothing in a parallel loop can throw.
#pragma once

namespace pf {

inline bool built_with_openmp() {
#ifdef _OPENMP
    return true;
#else
    return false;
#endif
}

}  // namespace pf
