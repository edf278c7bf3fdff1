"""The overlay's pyramid as the slide's own: every level's untouched JPEG tiles copied as they are.

When the slide's level read by the overlay allows copying its JPEG tiles
(:mod:`prostate_fast.overlay.copy`) and the slide's levels below it form a pyramid in the same
layout (each level the one above divided by the same whole factor, 2 or 4, floor sizes; 256 px
JPEG tiles in YCbCr 2 x 2 without shared tables, what
:func:`~prostate_fast.slide.pyramid.write_pyramid` writes, hence every synthetic slide), the
overlay takes the slide's levels: the same sizes, and at every level the tiles that no coloured
grid cell lies under are the slide's bytes, copied (no decode, no encode). The rest (tiles
*touched* at a level: those over a touched tile of the level above) are made as before from the
blended level above (``cv2.INTER_AREA``), on the slide's own tile of that level where the blended
tiles do not cover it. Only the touched tiles of level 0 are decoded from level 0; each touched
tile of a reduced level is decoded once from the slide's level; the level kept whole for the
thumbnail is decoded whole.

Pixels: level 0 is what :mod:`~prostate_fast.overlay.copy` gives (blended tiles: the same bytes
as without this module). A reduced level is the slide's own (the scanner's or the synthetic
writer's reduction) where untouched, and the blended level above reduced where touched: the
blended regions are the same pixels as before, their surroundings differ from before by the
JPEG noise of the slide's own level against a reduction of level 0.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import numpy as np

from ..errors import SlideError
from .copy import absent_tiles, can_copy, decode_tile, open_fd, page_has_layout, touched_tiles

__all__ = ["MirrorLevels", "mirror_levels"]

FACTORS = (2, 4)


class MirrorLevels:
    """The slide's pages from the overlay's level down, with what each level's tiles need.

    ``copy(level, i)`` gives the slide's bytes of untouched tile ``i`` of ``level``;
    ``reduce(level, strip, y)`` gives the rows of ``level + 1`` under a strip of ``level``:
    touched tiles filled (the slide's tile of that level, then the touched tiles of ``strip``
    reduced over it), every tile filled at the ``capture`` level, the rest left unset (copied).
    """

    def __init__(self, pages: list[Any], touched: list[np.ndarray], **kw: Any) -> None:
        self.pages, self.touched = pages, touched
        self.factor, self.tile, self.fd, self.path = kw["factor"], kw["tile"], kw["fd"], kw["path"]
        self.dims = [(int(p.imagewidth), int(p.imagelength)) for p in pages]
        self.capture: int | None = None
        self._base: dict[tuple[int, int], np.ndarray] = {}

    @property
    def top(self) -> int:
        """The ``top`` that makes :func:`~prostate_fast.slide.pyramid.level_dimensions` stop at
        the slide's last level."""
        return max(self.dims[-1])

    def copy(self, level: int, i: int) -> bytes | None:
        """The slide's JPEG bytes of tile ``i`` of ``level`` when untouched, else None."""
        if self.touched[level].flat[i]:
            return None
        return self._read(level, i)

    def reduce(self, level: int, strip: np.ndarray, y0: int) -> np.ndarray:
        """Rows of ``level + 1`` under ``strip`` (rows ``y0`` on of ``level``)."""
        import cv2

        f, t = self.factor, self.tile
        w1, h1 = self.dims[level + 1]
        y1, n = y0 // f, min(strip.shape[0] // f, h1 - y0 // f)
        rows = np.empty((max(n, 0), w1, 3), np.uint8)
        if n <= 0:
            return rows
        every = level + 1 == self.capture
        for r in range(y1 // t, (y1 + n - 1) // t + 1):
            need = self.touched[level + 1][r]
            for c in range(len(need)) if every else np.flatnonzero(need).tolist():
                self._paste_base(rows, level + 1, r, c, y1)
        touched = self.touched[level]
        for r in range(y0 // t, -(-(y0 + strip.shape[0]) // t)):
            ya = r * t - y0
            bh = (min(ya + t, f * n) - ya) // f
            for c in np.flatnonzero(touched[r]).tolist():
                xa = c * t
                bw = (min(xa + t, f * w1) - xa) // f
                if bh > 0 and bw > 0:
                    part = strip[ya : ya + f * bh, xa : xa + f * bw]
                    box = cv2.resize(part, (bw, bh), interpolation=cv2.INTER_AREA)
                    rows[ya // f : ya // f + bh, xa // f : xa // f + bw] = box
        return rows

    def _paste_base(self, rows: np.ndarray, level: int, r: int, c: int, y1: int) -> None:
        """The slide's tile (r, c) of ``level``, decoded once, into ``rows`` (from row ``y1``)."""
        t, (w, h) = self.tile, self.dims[level]
        key = (level, r * -(-w // t) + c)
        base = self._base.get(key)
        if base is None:
            base = self._base[key] = _decode(self._read(*key), t, self.path, key)
        a, b = max(r * t, y1), min(r * t + t, y1 + rows.shape[0], h)
        x1 = min(c * t + t, w)
        rows[a - y1 : b - y1, c * t : x1] = base[a - r * t : b - r * t, : x1 - c * t]
        if b == min(r * t + t, h):
            del self._base[key]

    def _read(self, level: int, i: int) -> bytes:
        page = self.pages[level]
        count = int(page.databytecounts[i])
        data = os.pread(self.fd, count, int(page.dataoffsets[i]))
        if len(data) != count:
            raise SlideError(f"{self.path}: tile {i} of level {level} is cut short")
        return data


def _decode(data: bytes, tile: int, path: Any, key: tuple[int, int]) -> np.ndarray:
    """A whole JPEG tile as RGB; SlideError naming the tile when it does not decode."""
    img = decode_tile(data, tile)
    if img is None or img.shape != (tile, tile, 3):
        raise SlideError(f"{path}: cannot decode JPEG tile {key[1]} of level {key[0]}")
    return img


def mirror_levels(
    stack: contextlib.ExitStack, slide: Any, choice: Any, tables: Any, layout: Any, encoding: Any
) -> MirrorLevels | None:
    """A :class:`MirrorLevels` for the overlay of ``slide`` (``layout``: width, height, TIFF
    tile; ``encoding``: write_overlay's TIFF settings), or None when the slide's levels do not
    allow it (see the module). Its file stays open in ``stack``."""
    size, tile = tuple(layout[:2]), int(layout[2])
    if not can_copy(slide, choice, encoding["compression"]) or not hasattr(os, "pread"):
        return None
    pages = _pyramid_pages(stack, slide.path, choice.level, size, tile)
    if pages is None:
        return None
    factor = round(pages[0].imagewidth / pages[1].imagewidth)
    touched = [touched_tiles(tables, size[0], size[1], tile)]
    for p in pages[1:]:
        rows, cols = -(-int(p.imagelength) // tile), -(-int(p.imagewidth) // tile)
        parent = np.zeros((rows, cols), bool)
        rr, cc = np.nonzero(touched[-1])
        parent[rr // factor, cc // factor] = True  # a tile lies inside one tile of the next level
        touched.append(parent)
    # empty (absent) level-0 tiles are decoded as the slide reader makes them: touched
    touched[0] |= absent_tiles(pages[0], touched[0].shape)
    fd = open_fd(stack, slide.path)
    kw = {"factor": factor, "tile": tile, "fd": fd, "path": slide.path}
    return MirrorLevels(pages, touched, **kw)


def _pyramid_pages(
    stack: contextlib.ExitStack, path: Any, level: int, size: tuple[int, int], tile: int
) -> list[Any] | None:
    """The slide's pages from ``level`` down when they form a pyramid the overlay can mirror."""
    try:
        import tifffile

        tif = stack.enter_context(tifffile.TiffFile(path))
        levels = tif.series[0].levels if tif.series else []
        pages = [lv.keyframe for lv in levels[level:]]
    except Exception:  # noqa: BLE001 - not a TIFF tifffile reads: nothing to mirror
        return None
    if len(pages) < 2 or not pages[1].imagewidth:
        return None
    factor = round(pages[0].imagewidth / pages[1].imagewidth)
    if factor not in FACTORS:
        return None
    for k, page in enumerate(pages):
        want = (size[0] // factor**k, size[1] // factor**k)
        if not page_has_layout(page, want, tile):
            return None
        if k and (np.asarray(page.databytecounts) == 0).any():
            return None
    return pages
