// White-pixel counts per tile: see tissue.hpp for the rule and for why this kernel is C++.
#include "tissue.hpp"

// GCC builds an AVX2 copy beside the baseline one and picks it at load time (no -march).
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define PF_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define PF_CLONES
#endif

namespace pf {
namespace {

// Pixels counted per block in 32 bits (then added to the 64-bit total), so that the loop
// vectorises; the block bound also tells the compiler that 3 * i cannot overflow.
constexpr std::ptrdiff_t kBlock = 8192;

PF_CLONES int64_t white_in_tile(const uint8_t* p, std::ptrdiff_t n, uint8_t lo, uint8_t spread) {
    int64_t total = 0;
    while (n > 0) {
        const std::ptrdiff_t m = n < kBlock ? n : kBlock;
        uint32_t c = 0;
        for (std::ptrdiff_t i = 0; i < m; ++i) {
            const uint8_t r = p[3 * i], g = p[3 * i + 1], b = p[3 * i + 2];
            uint8_t mn = r < g ? r : g;
            uint8_t mx = r > g ? r : g;
            mn = mn < b ? mn : b;
            mx = mx > b ? mx : b;
            c += static_cast<uint32_t>((mn >= lo) & (static_cast<uint8_t>(mx - mn) <= spread));
        }
        total += c;
        p += 3 * m;
        n -= m;
    }
    return total;
}

}  // namespace

void count_white(const uint8_t* tiles, std::ptrdiff_t n_tiles, std::ptrdiff_t pixels, uint8_t lo,
                 uint8_t spread, int64_t* out, int n_threads) {
    // dynamic: a thread slowed by other processes does not hold the others back.
    // Nothing in the loop can throw, so no exception can cross the parallel region.
#pragma omp parallel for schedule(dynamic, 4) num_threads(n_threads)
    for (std::ptrdiff_t t = 0; t < n_tiles; ++t)
        out[t] = white_in_tile(tiles + 3 * pixels * t, pixels, lo, spread);
}

}  // namespace pf
