"""The overlay's first two levels from the slide's JPEG tiles, each decoded only as far as needed.

When the slide's level read by the overlay allows copying its JPEG tiles
(:mod:`prostate_fast.overlay.copy`), the level-0 pixels of an untouched tile are never needed: its
bytes are stored as they are. Only the next level (level 0 halved) needs them, at half size, so
an untouched tile is decoded by libjpeg-turbo at scale 1/2 (simplejpeg, or OpenCV's
``IMREAD_REDUCED_COLOR_2``: the IDCT computes 4 x 4 pixels per 8 x 8 block, about half the cost of
a full decode plus the 2 x 2 average). Touched tiles are decoded in full by the slide's own decoder, blended, encoded and
halved (``cv2.INTER_AREA``) exactly as before. Tiles are decoded on ``n_threads`` threads (the
decoders release the GIL).

Pixels: level 0 is what the copy gives (blended tiles: the same bytes as without this module;
untouched tiles: the slide's bytes). Level 1 and below change where untouched tiles lie: libjpeg's
scaled IDCT against the 2 x 2 average of the full decode differ by a few grey levels (the tests
bound it); the blended regions of level 1 are the same pixels as before.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from ..errors import SlideError
from .copy import (
    _matching_page,
    absent_tiles,
    can_copy,
    decode_tile,
    open_fd,
    touched_tiles,
    untouched_copier,
)
from .mirror import MirrorLevels, mirror_levels

__all__ = ["SparseLevels", "capture_level", "sparse_levels", "tile_sources"]


class SparseLevels:
    """Strips of level 0 (only touched tiles filled), the halved level, and the copied bytes.

    Use: ``read(y0, h)`` gives a level-0 strip whose touched tiles hold the slide's pixels (the
    rest is left unset: those tiles are copied); the caller blends it; :meth:`with_halves` pairs
    each blended strip with its next-level rows; ``copy(0, i)`` gives the bytes of untouched tile
    ``i`` (read while its strip was), None for touched tiles and other levels.
    """

    def __init__(
        self, page: Any, decoder: Any, level: int, touched: np.ndarray, size: Any, **kw: Any
    ) -> None:
        self.page, self.decoder, self.level, self.touched = page, decoder, level, touched
        self.width, self.height = size
        self.tile, self.fd, self.pool, self.path = kw["tile"], kw["fd"], kw["pool"], kw["path"]
        self.cols, self.halves = touched.shape[1], kw.get("halves", True)
        self.full = not self.halves and kw.get("full", False)  # every tile, decoded in full
        self._bytes: dict[int, bytes] = {}
        self._half: dict[int, np.ndarray] = {}

    def copy(self, level: int, i: int) -> bytes | None:
        """The slide's bytes of level-0 tile ``i`` when untouched (read once), else None."""
        return None if level or self.touched.flat[i] else self._bytes.pop(i)

    def read(self, y0: int, h: int) -> np.ndarray:
        """Level-0 rows [y0, y0 + h) (a whole number of tile rows but the last), touched tiles
        decoded; their untouched tiles decoded at half size for :meth:`with_halves`."""
        strip = np.empty((h, self.width, 3), np.uint8)
        half = np.empty((h // 2 if self.halves else 0, self.width // 2, 3), np.uint8)
        t = self.tile
        jobs = [(r, c) for r in range(y0 // t, -(-(y0 + h) // t)) for c in range(self.cols)]
        if not (self.halves or self.full):  # the next level is made elsewhere: touched only
            jobs = [(r, c) for r, c in jobs if self.touched[r, c]]
        list(self.pool.map(lambda rc: self._decode(strip, half, y0, *rc), jobs))
        if self.halves:
            self._half[y0] = half
        return strip

    def with_halves(self, strips: Iterable[np.ndarray]) -> Iterator[tuple[np.ndarray, Any]]:
        """(blended strip, its next-level rows): touched tiles halved from the blended strip."""
        import cv2

        t, y0 = self.tile, 0
        for strip in strips:
            half = self._half.pop(y0)
            h2, w2 = half.shape[:2]
            for r in range(y0 // t, -(-(y0 + strip.shape[0]) // t)):
                ya, yb = r * t - y0, min(r * t - y0 + t, 2 * h2)
                for c in np.flatnonzero(self.touched[r]).tolist():
                    xa, xb = c * t, min(c * t + t, 2 * w2)
                    if yb > ya and xb > xa:
                        box = (xb - xa) // 2, (yb - ya) // 2
                        half[ya // 2 : yb // 2, xa // 2 : xb // 2] = cv2.resize(
                            strip[ya:yb, xa:xb], box, interpolation=cv2.INTER_AREA
                        )
            yield strip, half
            y0 += strip.shape[0]

    def _decode(self, strip: np.ndarray, half: np.ndarray, y0: int, r: int, c: int) -> None:
        t, i = self.tile, r * self.cols + c
        ya, xa = r * t - y0, c * t
        if self.touched[r, c] or not self.halves:  # the slide's decoder: today's pixels
            seg = self.decoder.segment(self.level, i, cache=False)
            n, m = min(t, strip.shape[0] - ya), min(t, self.width - xa)
            strip[ya : ya + n, xa : xa + m] = seg[:n, :m]
            return
        count = int(self.page.databytecounts[i])
        data = os.pread(self.fd, count, int(self.page.dataoffsets[i]))
        img = decode_tile(data, t, reduce=2) if len(data) == count else None
        if img is None or img.shape != (t // 2, t // 2, 3):
            raise SlideError(f"{self.path}: cannot decode JPEG tile {i} of level {self.level}")
        self._bytes[i] = data
        n, m = min(t // 2, half.shape[0] - ya // 2), min(t // 2, half.shape[1] - xa // 2)
        if n > 0 and m > 0:
            half[ya // 2 : ya // 2 + n, xa // 2 : xa // 2 + m] = img[:n, :m]


def sparse_levels(
    stack: contextlib.ExitStack,
    slide: Any,
    choice: Any,
    tables: Any,
    layout: Any,
    encoding: Any,
    halves: bool = True,
    mirror: MirrorLevels | None = None,
) -> SparseLevels | None:
    """A :class:`SparseLevels` for the overlay of ``slide``, or None when its tiles cannot be
    copied (see :mod:`prostate_fast.overlay.copy`), its level has no exact decoder of ours, or
    level 0 itself is captured for the thumbnail. Its file and threads stay open in ``stack``;
    ``layout`` is (width, height, TIFF tile), ``encoding`` write_overlay's TIFF settings. With
    the slide's ``mirror``, its level-0 page, touched tiles and open file are used (the mirror
    has checked the page and worked them out already)."""
    from concurrent.futures import ThreadPoolExecutor

    size, tile = layout[:2], layout[2]
    if (
        not can_copy(slide, choice, encoding["compression"])
        or (halves and encoding.get("capture_level") == 0)
        or not hasattr(os, "pread")
        or tile % 2
    ):
        return None
    decoder = slide._level_decoder(choice.level)
    if decoder is None:
        return None
    if mirror is not None:
        page, touched, fd = mirror.pages[0], mirror.touched[0], mirror.fd
    else:
        page = _matching_page(stack, slide.path, choice.level, size, tile)
        if page is None:
            return None
        touched = touched_tiles(tables, size[0], size[1], tile)
        if len(page.dataoffsets) != touched.size:
            return None
        touched |= absent_tiles(page, touched.shape)
        fd = open_fd(stack, slide.path)
    pool = stack.enter_context(ThreadPoolExecutor(max(1, int(encoding["n_threads"]))))
    kw = {"tile": tile, "fd": fd, "pool": pool, "path": slide.path, "halves": halves}
    kw["full"] = encoding.get("capture_level") == 0  # level 0 kept whole for the thumbnail
    return SparseLevels(page, decoder, choice.level, touched, size, **kw)


def tile_sources(
    stack: contextlib.ExitStack,
    slide: Any,
    choice: Any,
    tables: Any,
    layout: Any,
    encoding: dict[str, Any],
    thumbnail_size: int | None = None,
) -> tuple[SparseLevels | None, Any, dict[str, Any]]:
    """Where the overlay's tiles come from: (SparseLevels or None, ``copy(level, i)`` or None,
    write_pyramid's level settings). The slide's own pyramid (:mod:`.mirror`) when it applies,
    with only touched level-0 tiles decoded (``encoding["capture_level"]`` becomes the mirror's
    level for a thumbnail of ``thumbnail_size``, if one is made); else :func:`sparse_levels`
    and its ``copy``; else the :func:`~prostate_fast.overlay.copy.untouched_copier` or nothing."""
    from ..slide.pyramid import level_dimensions

    size, tile, compression = layout[:2], layout[2], encoding["compression"]
    mirror = mirror_levels(stack, slide, choice, tables, layout, encoding)
    if mirror is not None:
        dims = level_dimensions(*size, mirror.top, factor=mirror.factor)
        mirror.capture = None if thumbnail_size is None else capture_level(dims, thumbnail_size)
        if dims == mirror.dims:
            plain = {**encoding, "capture_level": mirror.capture}
            sparse = sparse_levels(
                stack, slide, choice, tables, layout, plain, halves=False, mirror=mirror
            )
            if sparse is not None:
                encoding["capture_level"] = mirror.capture
                levels = {"factor": mirror.factor, "top": mirror.top, "reduce_rows": mirror.reduce}
                return sparse, mirror.copy, levels
    sparse = sparse_levels(stack, slide, choice, tables, layout, encoding)
    if sparse is not None:
        return sparse, sparse.copy, {}
    return None, untouched_copier(stack, slide, choice, tables, size, tile, compression), {}


def capture_level(dims: list[tuple[int, int]], thumbnail_size: int) -> int:
    """The smallest level of ``dims`` whose longer side is still ``thumbnail_size`` or more."""
    return max([i for i, d in enumerate(dims) if max(d) >= thumbnail_size] or [0])
