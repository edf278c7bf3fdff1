// Alpha-blend class colours over the tiles of one strip of a slide. No Python here.
//
// The strip is a window of the slide at the tiling level: (h, w, 3) RGB uint8, C-contiguous,
// whose top-left pixel is (x0, y0) in tiling-level pixels. The tile grid is described per cell
// (rows x cols, row-major):
//
//   cls[cell]      class index into the colour table, or -1: the cell is left untouched
//   alpha[cell]    blend weight a in 0..256 (0: no tint, 256: the colour replaces the pixel)
//   outline[cell]  1: the cell's border pixels get the class colour at full opacity
//
// Pixel to cell: tile c spans [c*stride, c*stride + tile) on each axis. A pixel belongs to the tile
// whose centre is nearest to the pixel's centre, c = floor((2x + 1 - tile + stride) / (2 stride)),
// if that tile covers it (with stride == tile this is x / tile; with overlap each tile keeps its
// middle part, ties go to the later tile; with gaps the pixels between tiles are untouched).
// A pixel is on a cell's border when the pixel `outline_width` away on the same axis (either side)
// belongs to another cell (or none): borders are drawn inside the visible part of the cell.
//
// Blend, per channel, integers only (so every thread count gives the same bytes):
//   out = (px * (256 - a) + colour * a + 128) >> 8
#pragma once

#include <cstddef>
#include <cstdint>

namespace pf {

// The Python side guarantees every bound below (prostate_fast.overlay.core: blend_tiles checks
// them; write_overlay's tables come from blend_tables); nothing is checked here.
struct BlendTable {
    const int16_t* cls = nullptr;      // (rows, cols), -1 or < n_colours
    const uint16_t* alpha = nullptr;   // (rows, cols), values 0..256
    const uint8_t* outline = nullptr;  // (rows, cols), 0 or 1
    int64_t rows = 0, cols = 0;
    const uint8_t* colours = nullptr;  // (n_colours, 3) RGB
    int64_t tile = 1, stride = 1;      // tiling-level pixels, both >= 1
    int64_t outline_width = 0;         // 0: no outlines
};

// Cell index along one axis for the tiling-level coordinate v, or -1 when no tile covers it.
inline int64_t blend_axis_cell(int64_t v, int64_t tile, int64_t stride, int64_t n) {
    const int64_t num = 2 * v + 1 - tile + stride;
    const int64_t den = 2 * stride;
    int64_t c = num >= 0 ? num / den : -((-num + den - 1) / den);  // floor division
    if (c < 0 || c >= n) return -1;
    const int64_t off = v - c * stride;
    return (off >= 0 && off < tile) ? c : -1;
}

// Blend in place. n_threads must be resolved (>= 1). Never throws inside the parallel region.
void blend_strip(uint8_t* image, std::ptrdiff_t h, std::ptrdiff_t w, int64_t x0, int64_t y0,
                 const BlendTable& table, int n_threads);

}  // namespace pf
