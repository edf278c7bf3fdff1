"""Lossless crops of a slide's own JPEG tiles (what ``jpegtran -crop`` does).

:func:`jpeg_crop` cuts MCU-aligned rectangles out of one baseline JPEG in the DCT domain: the
quantised coefficients of the blocks inside each rectangle are re-entropy-coded into a complete
JPEG (no IDCT, no second quantisation: the scanner's own pixels). The kernel is
``prostate_fast._native.jpeg_crop`` (``csrc/jpegcrop.cpp``).

:func:`jpeg_tile_crops` finds whether a level of a slide allows it (a tiled TIFF page with JPEG
compression, YCbCr or RGB, 8-bit, 3 contiguous samples, with or without JPEGTables) and returns a
:class:`JpegTileCrops` that turns grid tiles read at that level as they are (scale 1) into crops,
one kernel call per TIFF tile. The dataset packer uses it (:mod:`prostate_fast.dataset.records`).
A decoded crop equals the decoded TIFF tile cut to the same rectangle, except that chroma
upsampling at the crop's 1-pixel border sees edge pixels instead of the neighbours outside.

RGB-coded tiles (TIFF photometric RGB, as Aperio's SVS): the TIFF says the colour space, the tile
stream does not, and a JPEG without a marker is read as YCbCr by any decoder on its own. Each
crop therefore gets Adobe's APP14 marker with transform 0 ("RGB, no colour transform"), which
libjpeg (OpenCV, simplejpeg, MXNet) honours; a tile stream with a JFIF marker (which would win
over it) is not cropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .core import LevelChoice, Slide

__all__ = ["JpegTileCrops", "jpeg_crop", "jpeg_tile_crops", "mark_rgb"]

#: Adobe APP14, transform 0: the components are R, G, B (no YCbCr transform).
_ADOBE_RGB = b"\xff\xee\x00\x0eAdobe\x00\x64\x00\x00\x00\x00\x00"


def mark_rgb(crop: bytes) -> bytes | None:
    """``crop`` (a complete JPEG of RGB-coded components) with Adobe's RGB marker after SOI;
    as it is when it has an Adobe marker already, None when it has a JFIF marker."""
    segments = dict.fromkeys(("jfif", "adobe"), False)
    i = 2
    while i + 4 <= len(crop) and crop[i] == 0xFF and crop[i + 1] != 0xDA:  # up to SOS
        size = int.from_bytes(crop[i + 2 : i + 4], "big")
        body = crop[i + 4 : i + 2 + size]
        segments["jfif"] |= crop[i + 1] == 0xE0 and body.startswith(b"JFIF\x00")
        segments["adobe"] |= crop[i + 1] == 0xEE and body.startswith(b"Adobe")
        i += 2 + size
    if segments["jfif"]:
        return None
    return crop if segments["adobe"] else crop[:2] + _ADOBE_RGB + crop[2:]


def jpeg_crop(
    data: bytes, tables: bytes | None, rects: Sequence[tuple[int, int, int, int]]
) -> list[bytes] | None:
    """Lossless crops of one baseline JPEG, each a complete JPEG; None when not possible.

    Parameters
    ----------
    data : bytes
        A JPEG stream: SOF0/SOF1 8-bit Huffman sequential, one scan holding every component,
        restart markers allowed.
    tables : bytes or None
        An abbreviated tables-only stream (the TIFF JPEGTables tag), read before ``data``.
    rects : sequence of (x, y, w, h)
        Pixel rectangles; x and y multiples of the MCU size (8 x the largest sampling factor),
        w and h multiples of it or reaching the image's right/bottom edge.

    Returns
    -------
    list of bytes or None
        One JPEG per rect, or None (the caller decodes and re-encodes instead) for a progressive,
        arithmetic, 12-bit or lossless stream, a non-interleaved scan, a rect that is not
        MCU-aligned or leaves the image, a corrupt or truncated stream, or a DC/AC symbol the
        stream's Huffman tables cannot code. Never raises on malformed data.
    """
    if not isinstance(data, bytes) or not (tables is None or isinstance(tables, bytes)):
        raise TypeError("data and tables must be bytes (tables may be None)")
    boxes = [tuple(int(v) for v in r) for r in rects]
    if any(len(b) != 4 or not all(0 <= v < 1 << 16 for v in b) for b in boxes):
        raise ValueError(f"rects must be (x, y, w, h) of integers in [0, 65536), got {rects!r}")
    from .. import _native

    return _native.jpeg_crop(data, tables, boxes)


class JpegTileCrops:
    """Grid tiles of ``size`` px at one JPEG-tiled TIFF level, as crops of the TIFF tiles.

    Built by :func:`jpeg_tile_crops`. :meth:`crops` gives a crop (or None: the caller reads and
    encodes that tile) per level-0 corner; :meth:`tile_rows` the TIFF tile row of each corner,
    so that a caller can keep the grid tiles of one TIFF tile in one call.
    """

    def __init__(self, levels: Any, page: Any, downsample: float, size: int, mcu: tuple[int, int]):
        self._levels = levels
        self._rgb = int(page.photometric) == 2
        self._page = page
        self._downsample = downsample
        self._size = size
        self._mcu = mcu
        self._tw, self._th = int(page.tilewidth), int(page.tilelength)
        self._lw, self._lh = int(page.imagewidth), int(page.imagelength)
        self._per_row = -(-self._lw // self._tw)
        tables = page.jpegtables
        self._tables = bytes(tables) if tables else None

    def _where(self, l0_xy: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(TIFF tile index or -1, x and y inside that tile) of each level-0 corner."""
        # level_origin's floor(l0 / downsample), for every corner at once
        xy = np.asarray(l0_xy, np.int64).reshape(-1, 2).astype(np.float64)
        lxy = np.floor(xy / self._downsample).astype(np.int64)
        s = self._size
        lx, ly = lxy[:, 0], lxy[:, 1]
        ox, oy = lx % self._tw, ly % self._th
        ok = (
            (lx >= 0)
            & (ly >= 0)
            & (lx + s <= self._lw)
            & (ly + s <= self._lh)
            & (ox + s <= self._tw)
            & (oy + s <= self._th)
            & (ox % self._mcu[0] == 0)
            & (oy % self._mcu[1] == 0)
        )
        index = np.where(ok, (ly // self._th) * self._per_row + lx // self._tw, -1)
        return index, ox, oy

    def tile_rows(self, l0_xy: np.ndarray) -> np.ndarray:
        """The TIFF tile row of each level-0 corner (-1 where no crop is possible)."""
        index, _, _ = self._where(l0_xy)
        return np.where(index >= 0, index // self._per_row, -1)

    def crops(self, l0_xy: np.ndarray) -> tuple[list[bytes | None], int]:
        """A crop per corner, None where none is possible; and the number of TIFF tiles read."""
        index, ox, oy = self._where(l0_xy)
        out: list[bytes | None] = [None] * len(index)
        groups: dict[int, list[int]] = {}
        for k, i in enumerate(index.tolist()):
            if i >= 0:
                groups.setdefault(i, []).append(k)
        s = self._size
        for i, ks in groups.items():
            count = int(self._page.databytecounts[i])
            if count == 0:
                continue
            data = self._levels._bytes(int(self._page.dataoffsets[i]), count)
            rects = [(int(ox[k]), int(oy[k]), s, s) for k in ks]
            got = jpeg_crop(data, self._tables, rects)
            if got is not None:
                for k, crop in zip(ks, got, strict=True):
                    out[k] = mark_rgb(crop) if self._rgb else crop
        return out, len(groups)


def jpeg_tile_crops(slide: Slide, choice: LevelChoice, size: int) -> JpegTileCrops | None:
    """A :class:`JpegTileCrops` for ``size`` px grid tiles read at ``choice``, or None.

    None unless the tiles are read at a level as it is (``choice.scale == 1``) through the
    package's TIFF decoder, and that level is a tiled JPEG page (compression 7) in YCbCr
    (photometric 6) or RGB (photometric 2: crops marked RGB, see the module), 8-bit, 3 contiguous
    samples.
    """
    if choice.scale != 1.0 or size <= 0:
        return None
    levels = slide._level_decoder(choice.level)
    if levels is None or not 0 <= choice.level < len(levels.pages):
        return None
    page = levels.pages[choice.level]
    plain = (
        page.is_tiled
        and int(page.compression) == 7
        and int(page.photometric) in (2, 6)
        and int(page.planarconfig) == 1
        and int(page.samplesperpixel) == 3
        and int(page.bitspersample) == 8
        and int(getattr(page, "imagedepth", 1)) == 1
    )
    if not plain:
        return None
    sub = tuple(getattr(page, "subsampling", None) or (2, 2))
    mcu = (8 * int(sub[0]), 8 * int(sub[1])) if len(sub) == 2 else (16, 16)
    if int(page.photometric) == 2:  # no YCbCr subsampling tag; the kernel checks the stream's
        mcu = (8, 8)
    return JpegTileCrops(levels, page, slide.level_downsamples[choice.level], size, mcu)
