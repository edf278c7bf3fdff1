"""Deep Zoom tiles of a slide and of its prediction layer, with a bounded cache.

Geometry (the Deep Zoom convention OpenSeadragon reads): level ``L`` of ``max_level + 1`` shows the
image at ``2 ** (max_level - L)`` image pixels per tile pixel (level ``max_level`` is full size);
tile (col, row) covers tile pixels ``[col * TILE, (col + 1) * TILE)`` (clipped at the edge), no
overlap.

* **Slide tiles**: the image is the slide's level 0. A tile is read with
  :meth:`~prostate_fast.slide.Slide.read_region` from the finest pyramid level not finer than the
  tile's downsample (:meth:`~prostate_fast.slide.Slide.best_level_for_downsample`) and shrunk with
  area interpolation when that level is finer; at full size it *is* ``read_region`` of level 0
  (colour as the reader gives it).
* **Prediction tiles**: the image is the slide at the tiling level (one pixel per tile pixel of
  the ScoreGrid; OpenSeadragon stretches it over the slide). A tile is RGBA: RGB is the class
  colour (the blend kernel, :func:`~prostate_fast.overlay.blend_tiles`, run with full opacity over
  black) and A is the blend weight (the kernel run with white over black), so that the browser's
  "source over" at opacity ``o`` gives ``px + (colour - px) * o * A / 255``, the overlay TIFF's
  ``(px * (256 - a) + colour * a + 128) >> 8`` up to rounding at ``o = 1``. Coarser levels run the
  kernel on the grid scaled by the level's factor when it divides the tile size and the stride
  (exact), else shrink the cell picture (nearest neighbour). Tissue edges of partial tiles are
  not cut out here (the overlay TIFF does that).
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

__all__ = ["TILE", "TileCache", "deep_zoom_levels", "dzi_xml", "overlay_tile", "slide_tile"]

#: Deep Zoom tile side in pixels.
TILE = 256


def deep_zoom_levels(width: int, height: int) -> int:
    """Index of the full-size Deep Zoom level of a ``width`` x ``height`` image."""
    return max(0, math.ceil(math.log2(max(int(width), int(height), 1))))


def dzi_xml(width: int, height: int, fmt: str = "jpeg") -> str:
    """The Deep Zoom descriptor (``.dzi``) of an image."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<Image xmlns="http://schemas.microsoft.com/deepzoom/2008" '
        f'Format="{fmt}" Overlap="0" TileSize="{TILE}">'
        f'<Size Width="{int(width)}" Height="{int(height)}"/></Image>\n'
    )


def tile_window(
    width: int, height: int, level: int, col: int, row: int
) -> tuple[int, int, int, int, int] | None:
    """(factor, x, y, w, h) of a tile: image-pixel factor, its origin in image pixels, its size in
    tile pixels; None when the level or tile does not exist."""
    top = deep_zoom_levels(width, height)
    if not 0 <= level <= top or col < 0 or row < 0:
        return None
    f = 1 << (top - level)
    lw, lh = -(-int(width) // f), -(-int(height) // f)
    x, y = col * TILE, row * TILE
    if x >= lw or y >= lh:
        return None
    return f, x * f, y * f, min(TILE, lw - x), min(TILE, lh - y)


def slide_tile(slide: Any, level: int, col: int, row: int) -> np.ndarray | None:
    """RGB uint8 Deep Zoom tile of ``slide`` (see the module notes), or None off the image."""
    import cv2

    win = tile_window(*slide.dimensions, level, col, row)
    if win is None:
        return None
    f, x0, y0, w, h = win
    lvl = slide.best_level_for_downsample(f)
    lds = slide.level_downsamples[lvl]
    if lvl == 0 and f == 1:
        return slide.read_region((x0, y0), 0, (w, h))
    rw, rh = max(1, round(w * f / lds)), max(1, round(h * f / lds))
    img = slide.read_region((x0, y0), lvl, (rw, rh))
    if (rw, rh) != (w, h):
        img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
    return img


def overlay_tile(
    tables: Any, width: int, height: int, level: int, col: int, row: int
) -> np.ndarray | None:
    """RGBA uint8 Deep Zoom tile of the prediction layer (see the module notes), or None.

    ``tables``: :class:`~prostate_fast.overlay.BlendTables` (any alpha; class or graded);
    ``width`` x ``height``: the slide at the tiling level.
    """
    win = tile_window(width, height, level, col, row)
    if win is None:
        return None
    f, x0, y0, w, h = win
    t, s = int(tables.tile_size), int(tables.stride)
    rows, cols = tables.cls.shape
    r0, c0 = max(0, (y0 - t) // s), max(0, (x0 - t) // s)
    near = tables.cls[r0 : min(rows, (y0 + h * f) // s + 1), c0 : min(cols, (x0 + w * f) // s + 1)]
    if not (near >= 0).any():  # no tinted cell near the tile: transparent, no kernel
        return np.zeros((h, w, 4), np.uint8)
    if t % f == 0 and s % f == 0:
        ow = max(1, tables.outline_width // f) if tables.outline_width else 0
        scaled = replace(tables, tile_size=t // f, stride=s // f, outline_width=ow)
        return _rgba(scaled, x0 // f, y0 // f, w, h)
    return _cell_picture(tables, f, x0, y0, w, h)


def _rgba(tables: Any, x0: int, y0: int, w: int, h: int) -> np.ndarray:
    """The kernel's colour (full opacity over black) and weight (white over black) as RGBA."""
    from ..overlay import blend_tiles

    full = np.where(tables.cls >= 0, 256, 0).astype(np.uint16)
    colour = blend_tiles(
        np.zeros((h, w, 3), np.uint8), replace(tables, alpha=full), origin=(x0, y0), n_threads=1
    )
    white = np.full_like(tables.colours, 255)
    weight = blend_tiles(
        np.zeros((h, w, 3), np.uint8), replace(tables, colours=white), origin=(x0, y0), n_threads=1
    )
    out = np.empty((h, w, 4), np.uint8)
    out[..., :3] = colour
    out[..., 3] = weight[..., 0]
    return out


def _cell_picture(tables: Any, f: int, x0: int, y0: int, w: int, h: int) -> np.ndarray:
    """Nearest-neighbour picture of the cells: each tile pixel takes the cell under its centre."""
    t, s = int(tables.tile_size), int(tables.stride)
    rows, cols = tables.cls.shape

    def cells(v0: int, n: int, count: int) -> np.ndarray:
        v = (v0 + (np.arange(n) + 0.5) * f).astype(np.int64)
        c = np.floor_divide(2 * v + 1 - t + s, 2 * s)
        ok = (c >= 0) & (c < count) & (v - c * s < t) & (v - c * s >= 0)
        return np.where(ok, c, -1)

    r, c = cells(y0, h, rows), cells(x0, w, cols)
    rr, cc = np.meshgrid(r, c, indexing="ij")
    valid = (rr >= 0) & (cc >= 0)
    cls = np.where(valid, tables.cls[rr.clip(0), cc.clip(0)], -1)
    a = np.where(cls >= 0, tables.alpha[rr.clip(0), cc.clip(0)], 0).astype(np.uint32)
    out = np.zeros((h, w, 4), np.uint8)
    out[..., :3] = np.where((cls >= 0)[..., None], tables.colours[cls.clip(0)], 0)
    out[..., 3] = (255 * a + 128) >> 8
    return out


class TileCache:
    """A thread-safe LRU of encoded tiles, bounded in bytes.

    Parameters
    ----------
    max_bytes : int
        Total size of the cached values kept (oldest dropped first).
    """

    def __init__(self, max_bytes: int = 64 << 20) -> None:
        self.max_bytes = int(max_bytes)
        self._data: OrderedDict[tuple, bytes] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._data)

    @property
    def size(self) -> int:
        """Bytes held."""
        return self._size

    def get(self, key: tuple, make: Callable[[], bytes | None]) -> bytes | None:
        """The cached value of ``key``, else ``make()`` (cached unless None or too large)."""
        with self._lock:
            hit = self._data.get(key)
            if hit is not None:
                self._data.move_to_end(key)
                return hit
        value = make()  # outside the lock: tiles are made in parallel
        if value is None or len(value) > self.max_bytes:
            return value
        with self._lock:
            if key not in self._data:
                self._data[key] = value
                self._size += len(value)
            while self._size > self.max_bytes:
                _, old = self._data.popitem(last=False)
                self._size -= len(old)
        return value
