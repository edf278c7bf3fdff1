// Painted-copy tile statistics: see label.hpp for the marking rule.
//
// Two implementations of the same rule, with identical results:
// * an SSE2 path (every x86-64 CPU has SSE2, so no -march flag is needed) that handles 16 pixels
//   (48 interleaved bytes, three 128-bit registers) per step: saturating subtractions give |a - b|
//   per byte, byte shifts across the three registers combine each pixel's three channel flags at
//   its first byte, and _mm_sad_epu8 sums the masked painted bytes into 64-bit lanes;
// * a scalar path for other CPUs and for the last pixels of a tile.
#include "label.hpp"

#include <algorithm>

#if defined(__SSE2__) || defined(_M_X64)
#include <emmintrin.h>
#define PF_LABEL_SSE2 1
#endif

namespace pf {
namespace {

constexpr int kMaxColours = 16;  // PaintedRule::n_colours <= this (the wrapper checks)

inline int absdiff(int a, int b) { return a > b ? a - b : b - a; }

inline int cheb(const uint8_t* a, const uint8_t* b) {
    return std::max(absdiff(a[0], b[0]), std::max(absdiff(a[1], b[1]), absdiff(a[2], b[2])));
}

struct Rule {
    int threshold, tol, n_colours;
    bool gate;
    const uint8_t* colours;  // (n_colours, 3)
};

// Pixels [start, stop) of one tile, one at a time.
void scalar_pixels(const uint8_t* o, const uint8_t* p, std::ptrdiff_t start, std::ptrdiff_t stop,
                   const Rule& rule, int64_t acc[4]) {
    for (std::ptrdiff_t i = start; i < stop; ++i) {
        const uint8_t* op = o + 3 * i;
        const uint8_t* pp = p + 3 * i;
        if (cheb(op, pp) <= rule.threshold) continue;
        if (rule.gate) {
            bool near = false;
            for (int k = 0; k < rule.n_colours && !near; ++k)
                near = cheb(pp, rule.colours + 3 * k) <= rule.tol;
            if (!near) continue;
        }
        acc[0] += 1;
        acc[1] += pp[0];
        acc[2] += pp[1];
        acc[3] += pp[2];
    }
}

#ifdef PF_LABEL_SSE2
// Bytes j+s of the 48-byte sequence v[0..2] (v[3] must be zero): a shift across registers.
inline __m128i shifted1(const __m128i* v, int k) {
    return _mm_or_si128(_mm_srli_si128(v[k], 1), _mm_slli_si128(v[k + 1], 15));
}
inline __m128i shifted2(const __m128i* v, int k) {
    return _mm_or_si128(_mm_srli_si128(v[k], 2), _mm_slli_si128(v[k + 1], 14));
}
inline __m128i absdiff_u8(__m128i a, __m128i b) {
    return _mm_or_si128(_mm_subs_epu8(a, b), _mm_subs_epu8(b, a));
}
inline int64_t hsum(__m128i v) {
    alignas(16) int64_t t[2];
    _mm_store_si128(reinterpret_cast<__m128i*>(t), v);
    return t[0] + t[1];
}

// Returns the number of pixels handled (a multiple of 16, leaving at least one pixel so that the
// loads at offsets +1 and +2 stay inside the tile).
std::ptrdiff_t sse2_pixels(const uint8_t* o, const uint8_t* p, std::ptrdiff_t pixels,
                           const Rule& rule, const __m128i* colpat, int64_t acc[4]) {
    const __m128i zero = _mm_setzero_si128();
    const __m128i ones = _mm_set1_epi8(1);
    const __m128i vthr = _mm_set1_epi8(static_cast<char>(rule.threshold));
    const __m128i vtol = _mm_set1_epi8(static_cast<char>(rule.tol));
    // 0xFF at the first byte of each pixel (byte j with j % 3 == 0) of the 48-byte step.
    const __m128i first[3] = {
        _mm_setr_epi8(-1, 0, 0, -1, 0, 0, -1, 0, 0, -1, 0, 0, -1, 0, 0, -1),
        _mm_setr_epi8(0, 0, -1, 0, 0, -1, 0, 0, -1, 0, 0, -1, 0, 0, -1, 0),
        _mm_setr_epi8(0, -1, 0, 0, -1, 0, 0, -1, 0, 0, -1, 0, 0, -1, 0, 0)};
    __m128i sr = zero, sg = zero, sb = zero, sc = zero;
    std::ptrdiff_t i = 0;
    for (; i + 17 <= pixels; i += 16) {
        const uint8_t* oo = o + 3 * i;
        const uint8_t* pp = p + 3 * i;
        __m128i P[3], quiet[4], near[4], e[4];
        for (int k = 0; k < 3; ++k) {
            const __m128i O = _mm_loadu_si128(reinterpret_cast<const __m128i*>(oo + 16 * k));
            P[k] = _mm_loadu_si128(reinterpret_cast<const __m128i*>(pp + 16 * k));
            // 0xFF where the channel difference is <= threshold
            quiet[k] = _mm_cmpeq_epi8(_mm_subs_epu8(absdiff_u8(O, P[k]), vthr), zero);
        }
        // Nothing edited in these 16 pixels: the common case, skipped early.
        if (_mm_movemask_epi8(_mm_and_si128(quiet[0], _mm_and_si128(quiet[1], quiet[2]))) ==
            0xFFFF)
            continue;
        quiet[3] = zero;
        near[0] = near[1] = near[2] = rule.gate ? zero : _mm_set1_epi8(-1);
        e[3] = zero;
        for (int c = 0; rule.gate && c < rule.n_colours; ++c) {
            for (int k = 0; k < 3; ++k)
                e[k] = _mm_cmpeq_epi8(
                    _mm_subs_epu8(absdiff_u8(P[k], colpat[3 * c + k]), vtol), zero);
            for (int k = 0; k < 3; ++k)
                near[k] = _mm_or_si128(
                    near[k], _mm_and_si128(e[k], _mm_and_si128(shifted1(e, k), shifted2(e, k))));
        }
        for (int k = 0; k < 3; ++k) {
            const __m128i all_quiet =
                _mm_and_si128(quiet[k], _mm_and_si128(shifted1(quiet, k), shifted2(quiet, k)));
            const __m128i mark = _mm_andnot_si128(all_quiet, _mm_and_si128(near[k], first[k]));
            const __m128i p1 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(pp + 16 * k + 1));
            const __m128i p2 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(pp + 16 * k + 2));
            sr = _mm_add_epi64(sr, _mm_sad_epu8(_mm_and_si128(mark, P[k]), zero));
            sg = _mm_add_epi64(sg, _mm_sad_epu8(_mm_and_si128(mark, p1), zero));
            sb = _mm_add_epi64(sb, _mm_sad_epu8(_mm_and_si128(mark, p2), zero));
            sc = _mm_add_epi64(sc, _mm_sad_epu8(_mm_and_si128(mark, ones), zero));
        }
    }
    acc[0] += hsum(sc);
    acc[1] += hsum(sr);
    acc[2] += hsum(sg);
    acc[3] += hsum(sb);
    return i;
}
#endif

}  // namespace

void painted_tile_stats(const uint8_t* original, const uint8_t* painted, std::ptrdiff_t n_tiles,
                        std::ptrdiff_t pixels, const PaintedRule& rule_in, int64_t* counts,
                        int64_t* sums, int n_threads) {
    Rule rule;
    rule.threshold = rule_in.threshold;
    rule.tol = rule_in.colour_tol;
    rule.n_colours = rule_in.n_colours;
    rule.gate = rule_in.colour_tol < 255 && rule.n_colours > 0;
    rule.colours = rule_in.colours;
#ifdef PF_LABEL_SSE2
    // Each colour repeated over a 48-byte step: R G B R G B ... in three registers.
    __m128i colpat[3 * kMaxColours];
    for (int c = 0; c < rule.n_colours; ++c) {
        alignas(16) uint8_t bytes[48];
        for (int j = 0; j < 48; ++j) bytes[j] = rule.colours[3 * c + j % 3];
        for (int k = 0; k < 3; ++k)
            colpat[3 * c + k] = _mm_load_si128(reinterpret_cast<const __m128i*>(bytes + 16 * k));
    }
#endif
    // Nothing in the loop can throw (arithmetic on buffers checked by the caller), so no
    // exception can cross the parallel region. Each tile is summed by one thread with integer
    // arithmetic, so the result is the same for any thread count.
#pragma omp parallel for schedule(dynamic, 4) num_threads(n_threads)
    for (std::ptrdiff_t t = 0; t < n_tiles; ++t) {
        const uint8_t* o = original + 3 * pixels * t;
        const uint8_t* p = painted + 3 * pixels * t;
        int64_t acc[4] = {0, 0, 0, 0};
        std::ptrdiff_t done = 0;
#ifdef PF_LABEL_SSE2
        done = sse2_pixels(o, p, pixels, rule, colpat, acc);
#endif
        scalar_pixels(o, p, done, pixels, rule, acc);
        counts[t] = acc[0];
        sums[3 * t] = acc[1];
        sums[3 * t + 1] = acc[2];
        sums[3 * t + 2] = acc[3];
    }
}

}  // namespace pf
