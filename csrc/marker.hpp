// Marker-colour tally of a painted copy's changed pixels, per hue. No Python here.
//
// For every step-th row and column of each tile (original O, painted P), a pixel is kept when
//
//   max_c |O_c - P_c| > threshold            (changed)
//   and max_c P_c - min_c P_c >= min_saturation   (saturated like marker ink)
//
// Each kept pixel falls into one of 12 hue bins (30 degrees each, bin 0 centred on red), computed
// in float32 with the operations, in the order, of prostate_fast.label.marker._hue_bins (NumPy),
// so the bins agree bit for bit. Per bin: kept pixels, kept pixels within colour_tol (every
// channel) of some colour, and the sums of P's R, G, B over the kept pixels.
#pragma once

#include <cstddef>
#include <cstdint>

namespace pf {

constexpr int kMarkerHues = 12;

// Checked by the Python wrapper (prostate_fast.label.marker.MarkerTally.add), not here.
struct MarkerRule {
    int threshold = 60;          // per-channel |O - P| must exceed this somewhere
    int min_saturation = 100;    // max - min channel of P
    int colour_tol = 64;         // Chebyshev distance of P to a colour, inclusive
    const int32_t* colours = nullptr;  // (n_colours, 3) RGB
    int n_colours = 0;
    int step = 2;                // every step-th row and column (>= 1)
};

// original, painted: (n_tiles, h, w, 3) uint8, C-contiguous, same shape. count, matched: (12,)
// int64; sums: (12, 3) int64, all ADDED to (not overwritten). n_threads >= 1. Integer sums per
// thread, added at the end: the result does not depend on n_threads.
void marker_tally(const uint8_t* original, const uint8_t* painted, std::ptrdiff_t n_tiles,
                  std::ptrdiff_t h, std::ptrdiff_t w, const MarkerRule& rule, int64_t* count,
                  int64_t* matched, int64_t* sums, int n_threads);

}  // namespace pf
