"""Untouched JPEG tiles of the slide, copied into the overlay's TIFF as they are.

A 256 px tile of the overlay's level 0 that no coloured grid cell touches holds the slide's own
pixels. When the slide is a tiled TIFF whose level read by the overlay has the overlay's layout
(level read as it is, same size, 256 px tiles, JPEG in YCbCr with 2 x 2 subsampling and no shared
JPEGTables: what :func:`~prostate_fast.slide.pyramid.write_pyramid` writes, hence every synthetic
slide), such a tile's compressed bytes are stored as they are: no decode, no re-encode, and the
slide's exact pixels. Every other tile is blended and encoded as before, to the same bytes.

A grid cell counts as touching when it is tinted (a class and a non-zero alpha) or outlined; it
touches the overlay tiles its ``tile_size`` square overlaps (overlapping cells included).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from typing import Any, BinaryIO

import numpy as np

__all__ = [
    "absent_tiles",
    "can_copy",
    "decode_tile",
    "open_fd",
    "page_has_layout",
    "touched_tiles",
    "untouched_copier",
]


def touched_tiles(tables: Any, width: int, height: int, tile: int) -> np.ndarray:
    """(tile rows, tile cols) bool: the overlay tiles that a tinted or outlined cell overlaps."""
    rows, cols = -(-height // tile), -(-width // tile)
    out = np.zeros((rows, cols), bool)
    hit = (tables.cls >= 0) & ((tables.alpha > 0) | (tables.outline > 0))
    s, t = int(tables.stride), int(tables.tile_size)
    for r, c in zip(*np.nonzero(hit), strict=True):
        y0, x0 = int(r) * s, int(c) * s
        out[y0 // tile : (y0 + t - 1) // tile + 1, x0 // tile : (x0 + t - 1) // tile + 1] = True
    return out


def absent_tiles(page: Any, shape: tuple[int, ...]) -> np.ndarray:
    """(tile rows, tile cols) bool: the tiles of a tifffile ``page`` stored empty (absent). The
    overlay never copies them: it decodes them as the slide reader makes them."""
    return (np.asarray(page.databytecounts) == 0).reshape(shape)


def open_fd(stack: contextlib.ExitStack, path: Any) -> int:
    """A read-only file descriptor of ``path`` (for ``os.pread``), closed with ``stack``."""
    fd = os.open(path, os.O_RDONLY)
    stack.callback(os.close, fd)
    return fd


def can_copy(slide: Any, choice: Any, compression: str) -> bool:
    """Whether the overlay of ``slide`` may store its tiles' bytes at all: a JPEG overlay, the
    level read as it is (``choice.scale`` 1), a file on disk. The page itself is checked by
    :func:`page_has_layout`."""
    return compression == "jpeg" and choice.scale == 1.0 and slide.path is not None


def decode_tile(data: bytes, tile: int, reduce: int = 1) -> np.ndarray | None:
    """A JPEG tile of ``tile`` px decoded as RGB, whole (``reduce`` 1) or at scale 1/2 (2:
    libjpeg-turbo's scaled IDCT); None when it does not decode. simplejpeg when installed (less
    overhead per call), else OpenCV: the same libjpeg-turbo, the same pixels."""
    if reduce not in (1, 2):
        raise ValueError(f"reduce must be 1 or 2, got {reduce!r}")
    try:
        import simplejpeg
    except ImportError:  # simplejpeg is a dependency; OpenCV gives the same pixels
        import cv2

        flags = cv2.IMREAD_REDUCED_COLOR_2 if reduce == 2 else cv2.IMREAD_COLOR
        img = cv2.imdecode(np.frombuffer(data, np.uint8), flags | cv2.IMREAD_IGNORE_ORIENTATION)
        return None if img is None else img[..., ::-1]
    size = {} if reduce == 1 else {"min_height": tile // 2, "min_width": tile // 2}
    try:
        return simplejpeg.decode_jpeg(data, colorspace="RGB", **size)
    except ValueError:
        return None


def untouched_copier(
    stack: contextlib.ExitStack,
    slide: Any,
    choice: Any,
    tables: Any,
    size: tuple[int, int],
    tile: int,
    compression: str,
) -> Callable[[int], bytes | None] | None:
    """``copy(level, i)``: the slide's JPEG bytes of level-0 overlay tile ``i`` when untouched,
    else None (and for other levels); None
    when the slide's file does not allow copying (see the module). The file stays open in
    ``stack``."""
    if not can_copy(slide, choice, compression):
        return None
    page = _matching_page(stack, slide.path, choice.level, size, tile)
    if page is None:
        return None
    offsets, counts = page.dataoffsets, page.databytecounts
    touched = touched_tiles(tables, size[0], size[1], tile).ravel()
    if len(offsets) != touched.size:
        return None
    fh: BinaryIO = stack.enter_context(open(slide.path, "rb"))

    def copy(level: int, i: int) -> bytes | None:
        if level or touched[i] or counts[i] == 0:
            return None
        fh.seek(offsets[i])
        data = fh.read(counts[i])
        return data if len(data) == counts[i] else None

    return copy


def _matching_page(
    stack: contextlib.ExitStack, path: Any, level: int, size: tuple[int, int], tile: int
) -> Any:
    """The TIFF page of ``level`` when it has the overlay's layout (see the module), else None."""
    try:
        import tifffile

        tif = stack.enter_context(tifffile.TiffFile(path))
        levels = tif.series[0].levels if tif.series else []
        page = levels[level].keyframe if level < len(levels) else None
    except Exception:  # noqa: BLE001 - not a TIFF tifffile reads: nothing to copy
        return None
    return page if page is not None and page_has_layout(page, size, tile) else None


def page_has_layout(page: Any, size: tuple[int, int], tile: int) -> bool:
    """Whether a tifffile page is tiled ``tile`` px JPEG in YCbCr 2 x 2 without shared tables,
    8-bit RGB, of ``size`` (width, height): tiles whose bytes the overlay may store as they are."""
    return bool(
        page.is_tiled
        and page.compression == 7
        and page.photometric == 6
        and tuple(getattr(page, "subsampling", ()) or ()) == (2, 2)
        and not page.jpegtables
        and page.planarconfig == 1
        and page.samplesperpixel == 3
        and page.bitspersample == 8
        and (page.tilewidth, page.tilelength) == (tile, tile)
        and (page.imagewidth, page.imagelength) == tuple(size)
    )
