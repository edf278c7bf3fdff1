// Lossless DCT-domain crop of a baseline JPEG (what ``jpegtran -crop`` does), for the dataset
// packer: the record of a grid tile that lies inside one JPEG tile of the slide is the slide's own
// quantised coefficients of the blocks inside it, re-entropy-coded. No IDCT, no quantisation.
//
// Accepted input: SOI, APPn, COM, DQT, DHT, DRI, SOF0/SOF1 (8-bit, Huffman, sequential), one SOS
// holding every component (interleaved; a one-component image is its own MCU of one block),
// RSTn markers in the scan at the DRI interval. ``tables`` (may be empty) is an abbreviated
// tables-only stream (the TIFF JPEGTables tag) read before ``data``.
//
// Each rect (x, y, w, h) in pixels must start on an MCU boundary (x multiple of 8 * hmax, y of
// 8 * vmax) and its width/height be a multiple of the MCU size or reach the image's right/bottom
// edge. Its output is a complete baseline JPEG: SOI, the input's APP0/APP14 segments (colour
// space), DQT, SOF with the rect's size, DHT (the input's tables), SOS, entropy data (DC
// re-differenced in the new order, no restarts), EOI.
//
// Every failure returns false and leaves ``out`` unspecified: an unsupported or corrupt stream, a
// rect that is not MCU-aligned or leaves the image, or a DC/AC symbol the input's Huffman tables
// cannot code (new DC differences under optimised tables). Malformed input never reads out of
// bounds. The caller then decodes and re-encodes instead.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace pf {

struct CropRect {
    int x, y, w, h;
};

bool jpeg_crop(const uint8_t* data, std::size_t size, const uint8_t* tables,
               std::size_t tables_size, const std::vector<CropRect>& rects,
               std::vector<std::string>& out);

}  // namespace pf
