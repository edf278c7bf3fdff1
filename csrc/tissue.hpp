// White-pixel counts per tile, for the tissue stage's white fraction. No Python here.
//
// A pixel is white when min(R, G, B) >= lo and max(R, G, B) - min(R, G, B) <= spread: integer
// comparisons on the uint8 channels, so the kernel, NumPy and the study's Python loop agree bit
// for bit (prostate_fast.tissue.white_fraction divides the counts).
//
// Why C++ and not Cython: the pixels are interleaved RGB, a stride-3 load that GCC vectorises only
// with AVX2 (SSE2 has no byte shuffle to deinterleave), and wheels are built without -march. The
// kernel is therefore compiled twice with GCC's target_clones (an AVX2 copy beside the baseline
// one, picked when the library loads); Cython cannot put that attribute on a function.
#pragma once

#include <cstddef>
#include <cstdint>

namespace pf {

// tiles: (n_tiles, pixels, 3) uint8, C-contiguous; out: (n_tiles,) int64. n_threads >= 1.
// out[t] = white pixels of tile t. Each tile is counted by one thread, so any thread count
// gives the same result. Nothing is checked: the Python wrapper did.
void count_white(const uint8_t* tiles, std::ptrdiff_t n_tiles, std::ptrdiff_t pixels, uint8_t lo,
                 uint8_t spread, int64_t* out, int n_threads);

}  // namespace pf
