// The only pybind11 file: module prostate_fast._native. Each kernel family lives in its own
// csrc/<stage>.hpp/.cpp pair; this file converts arrays, releases the GIL and calls them.
#include <cstdint>

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include "common.hpp"

namespace py = pybind11;

PYBIND11_MODULE(_native, m) {
    m.doc() = "prostate-fast native kernels (C++ with OpenMP)";
    m.def("built_with_openmp", &pf::built_with_openmp,
          "True when this module was compiled with OpenMP.");
    m.def("resolve_threads", &pf::resolve_threads, py::arg("n_threads"),
          "Thread count the kernels use for n_threads (<= 0 means all cores).");
}
