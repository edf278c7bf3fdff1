// Shared helpers for prostate-fast's C++ kernels (namespace pf). No Python here.
//
// Conventions
// * Images are C-contiguous uint8, row-major, interleaved channels (H, W, C).
// * A kernel never validates: the Python wrapper checked shapes and dtypes before calling it.
// * Thread count: n_threads <= 0 means "all cores" (omp_get_num_procs, not omp_get_max_threads,
//   because importing MXNet lowers the latter to half the cores).
// * No exception may cross an OpenMP region: use ExceptionCapture inside the loop and rethrow after.
#pragma once

#include <cstddef>
#include <cstdint>
#include <exception>
#include <mutex>
#include <stdexcept>
#include <string>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace pf {

inline bool built_with_openmp() {
#ifdef _OPENMP
    return true;
#else
    return false;
#endif
}

inline int num_procs() {
#ifdef _OPENMP
    return omp_get_num_procs();
#else
    return 1;
#endif
}

// Resolve the user's n_threads (None/0/negative = all cores) to a positive count.
inline int resolve_threads(int n_threads) {
    if (n_threads > 0) return n_threads;
    const int n = num_procs();
    return n > 0 ? n : 1;
}

// A read-only view on a C-contiguous (rows, cols, channels) uint8 image.
struct ImageView {
    const uint8_t* data = nullptr;
    std::ptrdiff_t rows = 0, cols = 0, channels = 0;
    const uint8_t* px(std::ptrdiff_t r, std::ptrdiff_t c) const {
        return data + (r * cols + c) * channels;
    }
};

// Captures the first exception thrown inside an OpenMP parallel loop so it can be rethrown
// after the region ends (exceptions must not escape a parallel region).
class ExceptionCapture {
  public:
    template <class F>
    void run(F&& f) noexcept {
        try {
            f();
        } catch (...) {
            std::lock_guard<std::mutex> lock(mu_);
            if (!first_) first_ = std::current_exception();
        }
    }
    void rethrow() const {
        if (first_) std::rethrow_exception(first_);
    }

  private:
    std::exception_ptr first_;
    std::mutex mu_;
};

}  // namespace pf
