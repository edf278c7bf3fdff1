// Tile overlay blend: see blend.hpp for the pixel-to-cell rule and the formula.
//
// Per strip the columns are first cut into runs of constant (cell column, border flag); each row
// then walks the runs, so the per-pixel work is one multiply-add per channel with constants
// hoisted out of the loop. Rows are independent: OpenMP splits them, and integer arithmetic keeps
// the bytes identical for any thread count.
#include "blend.hpp"

#include <vector>

namespace pf {
namespace {

struct Run {
    std::ptrdiff_t start, stop;  // columns [start, stop) of the strip
    int64_t cell_col;            // grid column, >= 0
    bool border;                 // within outline_width of the cell's visible edge (x axis)
};

// For coordinates [v0, v0 + n): cell index per position and whether it lies on a border.
void axis_lookup(int64_t v0, std::ptrdiff_t n, const BlendTable& t, int64_t count,
                 std::vector<int64_t>& cell, std::vector<uint8_t>& border) {
    cell.resize(static_cast<std::size_t>(n));
    border.resize(static_cast<std::size_t>(n));
    const int64_t ow = t.outline_width;
    for (std::ptrdiff_t i = 0; i < n; ++i) {
        const int64_t v = v0 + i;
        const int64_t c = blend_axis_cell(v, t.tile, t.stride, count);
        cell[i] = c;
        border[i] = (c >= 0 && ow > 0 &&
                     (blend_axis_cell(v - ow, t.tile, t.stride, count) != c ||
                      blend_axis_cell(v + ow, t.tile, t.stride, count) != c))
                        ? 1
                        : 0;
    }
}

inline void blend_run(uint8_t* p, std::ptrdiff_t n, const uint8_t* colour, int a) {
    const int ia = 256 - a;
    const int c0 = colour[0] * a + 128, c1 = colour[1] * a + 128, c2 = colour[2] * a + 128;
    for (std::ptrdiff_t i = 0; i < n; ++i, p += 3) {
        p[0] = static_cast<uint8_t>((p[0] * ia + c0) >> 8);
        p[1] = static_cast<uint8_t>((p[1] * ia + c1) >> 8);
        p[2] = static_cast<uint8_t>((p[2] * ia + c2) >> 8);
    }
}

inline void fill_run(uint8_t* p, std::ptrdiff_t n, const uint8_t* colour) {
    for (std::ptrdiff_t i = 0; i < n; ++i, p += 3) {
        p[0] = colour[0];
        p[1] = colour[1];
        p[2] = colour[2];
    }
}

}  // namespace

void blend_strip(uint8_t* image, std::ptrdiff_t h, std::ptrdiff_t w, int64_t x0, int64_t y0,
                 const BlendTable& t, int n_threads) {
    if (h <= 0 || w <= 0 || t.rows <= 0 || t.cols <= 0) return;
    std::vector<int64_t> col_cell, row_cell;
    std::vector<uint8_t> col_border, row_border;
    axis_lookup(x0, w, t, t.cols, col_cell, col_border);
    axis_lookup(y0, h, t, t.rows, row_cell, row_border);

    std::vector<Run> runs;
    for (std::ptrdiff_t x = 0; x < w;) {
        const int64_t c = col_cell[x];
        const uint8_t b = col_border[x];
        std::ptrdiff_t e = x + 1;
        while (e < w && col_cell[e] == c && col_border[e] == b) ++e;
        if (c >= 0) runs.push_back({x, e, c, b != 0});
        x = e;
    }
    if (runs.empty()) return;
    const Run* rp = runs.data();
    const std::ptrdiff_t n_runs = static_cast<std::ptrdiff_t>(runs.size());

    // Nothing below can throw (plain arithmetic on buffers the caller checked).
#pragma omp parallel for schedule(static) num_threads(n_threads)
    for (std::ptrdiff_t y = 0; y < h; ++y) {
        const int64_t r = row_cell[y];
        if (r < 0) continue;
        const bool row_edge = row_border[y] != 0;
        uint8_t* line = image + y * w * 3;
        const int64_t base = r * t.cols;
        for (std::ptrdiff_t k = 0; k < n_runs; ++k) {
            const Run& run = rp[k];
            const int64_t cell = base + run.cell_col;
            const int cls = t.cls[cell];
            if (cls < 0) continue;
            const uint8_t* colour = t.colours + 3 * cls;
            uint8_t* p = line + run.start * 3;
            const std::ptrdiff_t n = run.stop - run.start;
            if (t.outline_width > 0 && t.outline[cell] && (row_edge || run.border)) {
                fill_run(p, n, colour);
            } else if (const int a = t.alpha[cell]; a > 0) {
                blend_run(p, n, colour, a);
            }
        }
    }
}

}  // namespace pf
