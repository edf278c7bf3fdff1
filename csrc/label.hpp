// Tile labels from a painted copy of the slide (the 2018 study's way). No Python here.
//
// For every tile, one pass over the pixels of the original tile O and the painted tile P:
//
//   a pixel is *marked* when  max_c |O_c - P_c| > threshold                    (the edit)
//                       and  max_c |P_c - K_c| <= colour_tol for some K in colours (marker ink)
//
// The second condition (skipped when colour_tol >= 255 or there are no colours) keeps JPEG noise,
// re-compression halos and anything else that is not the marker colour from creating marks.
// Per tile the kernel returns the number of marked pixels and the sums of P's R, G, B over them;
// the caller turns these into a mean colour and a class.
#pragma once

#include <cstddef>
#include <cstdint>

namespace pf {

// Checked by the Python wrapper (prostate_fast.label.painted_tile_stats), not here.
struct PaintedRule {
    int threshold = 60;         // 0..255: per-channel |O - P| must exceed this somewhere
    int colour_tol = 64;        // 0..255: Chebyshev distance of P to a marker colour, inclusive
    const uint8_t* colours = nullptr;  // (n_colours, 3) RGB
    int n_colours = 0;          // 0..16
};

// original, painted: (n_tiles, pixels, 3) uint8, C-contiguous, same shape.
// counts: (n_tiles,) int64; sums: (n_tiles, 3) int64. Thread count must be resolved (>= 1).
// Results do not depend on n_threads (each tile is summed by one thread, in pixel order).
void painted_tile_stats(const uint8_t* original, const uint8_t* painted, std::ptrdiff_t n_tiles,
                        std::ptrdiff_t pixels, const PaintedRule& rule, int64_t* counts,
                        int64_t* sums, int n_threads);

}  // namespace pf
