// Marker-colour tally per hue: see marker.hpp for the rule.
//
// The hue must land in the same bin as NumPy's float32 formula, so every float operation below
// is one of NumPy's, in its order, in float32 (no double, no fused multiply-add: contraction is
// switched off for this file, and each operation is its own statement for compilers that only
// contract within an expression).
#include "marker.hpp"

#include <algorithm>
#include <cstdlib>

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=off")
#endif

namespace pf {
namespace {

inline int absdiff(int a, int b) { return a > b ? a - b : b - a; }

// NumPy's float32 remainder (npy_divmodf: fmod, then moved into [0, 6)) for |a| <= 1, where
// fmod(a, 6) is a itself: a, or a + 6 when negative (rounded to float32 like NumPy's mod + b).
inline float remainder6(float a) { return a < 0.0f ? a + 6.0f : a; }

// _hue_bins: h = (g-b)/d % 6 | (b-r)/d + 2 | (r-g)/d + 4; bin = floor((h*60 + 15) / 30) % 12.
inline int hue_bin(const uint8_t* px) {
    const float r = px[0], g = px[1], b = px[2];
    const float mx = std::max(std::max(r, g), b);
    const float mn = std::min(std::min(r, g), b);
    const float d = std::max(mx - mn, static_cast<float>(1e-6));
    float h;
    if (mx == r) {
        const float q = (g - b) / d;  // |g - b| <= d: |q| <= 1
        h = remainder6(q);
    } else if (mx == g) {
        const float q = (b - r) / d;
        h = q + 2.0f;
    } else {
        const float q = (r - g) / d;
        h = q + 4.0f;
    }
    float t = h * 60.0f;
    t = t + 15.0f;
    t = t / 30.0f;
    // h >= 0, so t >= 0.5: truncation is floor (and no libm call)
    const auto k = static_cast<int>(t);
    return k % kMarkerHues;
}

struct Acc {
    int64_t count[kMarkerHues] = {};
    int64_t matched[kMarkerHues] = {};
    int64_t sums[kMarkerHues * 3] = {};
};

inline bool near_colour(const uint8_t* p, const MarkerRule& rule) {
    for (int k = 0; k < rule.n_colours; ++k) {
        const int32_t* c = rule.colours + 3 * k;
        if (std::abs(p[0] - c[0]) <= rule.colour_tol && std::abs(p[1] - c[1]) <= rule.colour_tol &&
            std::abs(p[2] - c[2]) <= rule.colour_tol)
            return true;
    }
    return false;
}

// One sampled pixel: tallied when changed and saturated.
inline void tally_pixel(const uint8_t* op, const uint8_t* pp, const MarkerRule& rule, Acc& acc) {
    const int diff =
        std::max(absdiff(op[0], pp[0]), std::max(absdiff(op[1], pp[1]), absdiff(op[2], pp[2])));
    if (diff <= rule.threshold) return;
    const int hi = std::max(pp[0], std::max(pp[1], pp[2]));
    const int lo = std::min(pp[0], std::min(pp[1], pp[2]));
    if (hi - lo < rule.min_saturation) return;
    const int bin = hue_bin(pp);
    acc.count[bin] += 1;
    acc.matched[bin] += near_colour(pp, rule) ? 1 : 0;
    acc.sums[3 * bin] += pp[0];
    acc.sums[3 * bin + 1] += pp[1];
    acc.sums[3 * bin + 2] += pp[2];
}

constexpr std::ptrdiff_t kBlock = 16;  // pixels whose 48 bytes are tested at once

// Whether some byte of the 48 differs by more than thr (0..254): a loop the compiler vectorises
// at the baseline ISA (SSE2: saturating subtractions and a compare), so the common case, an
// unpainted stretch of row, costs a few instructions per 16 pixels.
inline bool block_changed(const uint8_t* o, const uint8_t* p, uint8_t thr) {
    unsigned any = 0;
    for (int j = 0; j < 3 * kBlock; ++j) {
        const uint8_t d = static_cast<uint8_t>(o[j] > p[j] ? o[j] - p[j] : p[j] - o[j]);
        any |= d > thr ? 1u : 0u;
    }
    return any != 0;
}

// One row of a tile: pixels 0, step, 2 step ... < w. Blocks of 16 pixels with no changed byte
// are skipped whole (when step divides 16 and 0 <= threshold <= 254); the result is the same.
inline void tally_row(const uint8_t* o, const uint8_t* p, std::ptrdiff_t w, const MarkerRule& rule,
                      Acc& acc) {
    const std::ptrdiff_t step = rule.step;
    std::ptrdiff_t x = 0;
    if (kBlock % step == 0 && rule.threshold >= 0 && rule.threshold <= 254) {
        const auto thr = static_cast<uint8_t>(rule.threshold);
        for (; x + kBlock <= w; x += kBlock) {
            if (!block_changed(o + 3 * x, p + 3 * x, thr)) continue;
            for (std::ptrdiff_t i = x; i < x + kBlock; i += step)
                tally_pixel(o + 3 * i, p + 3 * i, rule, acc);
        }
    }
    for (; x < w; x += step) tally_pixel(o + 3 * x, p + 3 * x, rule, acc);
}

}  // namespace

void marker_tally(const uint8_t* original, const uint8_t* painted, std::ptrdiff_t n_tiles,
                  std::ptrdiff_t h, std::ptrdiff_t w, const MarkerRule& rule, int64_t* count,
                  int64_t* matched, int64_t* sums, int n_threads) {
    const std::ptrdiff_t row = 3 * w, tile = row * h;
    // Nothing in the loop can throw (arithmetic on buffers checked by the caller). Integer sums
    // per thread, added once at the end: any thread count gives the same result.
    if (rule.threshold >= 255) return;  // no channel can differ by more
#pragma omp parallel num_threads(n_threads)
    {
        Acc acc;
#pragma omp for schedule(dynamic, 16) nowait
        for (std::ptrdiff_t t = 0; t < n_tiles; ++t) {
            for (std::ptrdiff_t y = 0; y < h; y += rule.step) {
                const std::ptrdiff_t off = tile * t + row * y;
                tally_row(original + off, painted + off, w, rule, acc);
            }
        }
#pragma omp critical(pf_marker_tally)
        {
            for (int k = 0; k < kMarkerHues; ++k) {
                count[k] += acc.count[k];
                matched[k] += acc.matched[k];
            }
            for (int k = 0; k < 3 * kMarkerHues; ++k) sums[k] += acc.sums[k];
        }
    }
}

}  // namespace pf
