"""Streaming writer of pyramidal tiled TIFFs (what OpenSlide, QuPath and ASAP open), bounded memory.

Level 0 arrives as horizontal strips (full width, a multiple of the tile height each, the last one
shorter) and is written tile by tile as it comes. While it is written, every strip is halved (2 x 2
box average, ``cv2.INTER_AREA``) and kept as level 1's source: in memory while the level is at most
``level_memory`` bytes (:data:`LEVEL_MEMORY`, 128 MiB: a 0.18-gigapixel level 0), else in a raw
temporary file beside the output. It is read back in strips while level 2 is produced the same
way, and so on. Levels are
successive IFDs (level 0 first, ``subfiletype`` 1 for the reduced ones), each tiled, with the same
compression and a resolution that doubles per level: OpenSlide's ``generic-tiff`` reader, QuPath
(through OpenSlide or Bio-Formats) and ASAP read that layout.

Memory: a few strips (``strip_pixels`` each, default 8 megapixels = 24 MB), tifffile's encoding
buffer and at most ``level_memory`` of reduced rows, whatever the slide size. Disk, past that: the
raw level-1 file is a quarter of level 0 uncompressed (3 bytes per pixel); each raw file is
deleted as soon as its level is written.
"""

from __future__ import annotations

import collections
import functools
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

__all__ = ["PyramidInfo", "level_dimensions", "strip_rows_for", "write_pyramid"]

#: Bytes of a reduced level held in memory before it goes to a temporary file instead.
LEVEL_MEMORY = 128 * 1024 * 1024

#: Default strip size in pixels (width x rows); rows are rounded down to whole tiles.
STRIP_PIXELS = 8 * 1024 * 1024

_COMPRESSION = {
    "jpeg": ("jpeg", "level"),
    "deflate": ("zlib", "level"),
    "none": (None, None),
}


@dataclass(frozen=True)
class PyramidInfo:
    """What :func:`write_pyramid` wrote.

    Attributes
    ----------
    level_dimensions : tuple of (int, int)
        (width, height) of every level, level 0 first.
    captured : numpy.ndarray or None
        The whole of level ``capture_level`` (RGB uint8), when one was asked for.
    """

    level_dimensions: tuple[tuple[int, int], ...]
    captured: np.ndarray | None


def level_dimensions(
    width: int, height: int, top: int = 512, *, factor: int = 2, min_side: int = 2
) -> list[tuple[int, int]]:
    """Pyramid level sizes: divide by ``factor`` (floor) until the longer side is at most ``top``
    pixels, or the shorter side is below ``min_side``."""
    dims = [(int(width), int(height))]
    while max(dims[-1]) > top and min(dims[-1]) >= min_side:
        w, h = dims[-1]
        dims.append((w // factor, h // factor))
    return dims


def strip_rows_for(width: int, tile: int, strip_pixels: int = STRIP_PIXELS) -> int:
    """Rows per strip: whole tiles, about ``strip_pixels`` pixels, at least one tile, at most 4."""
    rows = (strip_pixels // max(1, width)) // tile * tile
    return int(min(max(rows, tile), 4 * tile))


def _tiles(
    strips: Iterator[np.ndarray],
    width: int,
    height: int,
    tile: int,
    sink: _LevelBuffer | None,
    next_dims: tuple[int, int] | None,
    capture: list[np.ndarray] | None,
    factor: int = 2,
    reduce: Callable[[np.ndarray, int], np.ndarray] | None = None,
) -> Iterator[np.ndarray]:
    """Yield the tiles of ``strips`` in TIFF order; reduce each strip into ``sink`` on the way
    (``reduce(strip, y)`` when given, else ``cv2.INTER_AREA``)."""
    import cv2

    y = 0
    for item in strips:
        strip, given = item if isinstance(item, tuple) else (item, None)
        h = strip.shape[0]
        if strip.shape[1] != width or strip.shape[2] != 3 or y + h > height:
            raise ValueError(
                f"strip of shape {strip.shape} at row {y} does not fit {width}x{height}"
            )
        if y + h < height and h % tile:
            raise ValueError(f"strip at row {y} has {h} rows, not a multiple of {tile}")
        if capture is not None:
            capture.append(strip.copy())
        if next_dims is not None:
            nw = next_dims[0]
            nh = min(h // factor, next_dims[1] - y // factor)
            if nh > 0 and nw > 0:
                if given is None and reduce is not None:
                    given = reduce(strip, y)
                if given is None:
                    part = strip[: factor * nh, : factor * nw]
                    given = cv2.resize(part, (nw, nh), interpolation=cv2.INTER_AREA)
                elif given.shape != (nh, nw, 3):
                    raise ValueError(
                        f"reduced rows of shape {given.shape} at row {y}, not {nh}x{nw}"
                    )
                sink.write(given)
        for r in range(0, h, tile):
            band = strip[r : r + tile]
            for c in range(0, width, tile):
                t = band[:, c : c + tile]
                if t.shape[0] != tile or t.shape[1] != tile:
                    t = np.pad(
                        t, ((0, tile - t.shape[0]), (0, tile - t.shape[1]), (0, 0)), mode="edge"
                    )
                yield t
        y += h
    if y != height:
        raise ValueError(f"strips cover {y} rows, expected {height}")


def _copy_or_encode(
    tiles: Iterator[np.ndarray], copy: Callable[[int], bytes | None], quality: int, threads: int
) -> Iterator[bytes]:
    """JPEG bytes of ``tiles`` in order: ``copy(i)`` where given, else encoded as tifffile does
    (YCbCr 2 x 2, ``quality``) on ``threads`` threads."""
    from collections import deque
    from concurrent.futures import Future, ThreadPoolExecutor

    import tifffile

    encoder = tifffile.TIFF.COMPRESSORS[7]  # what tifffile's own "jpeg" compression calls
    args = {"level": quality, "subsampling": (2, 2), "colorspace": "RGB", "outcolorspace": "YCBCR"}
    pending: deque[bytes | Future[bytes]] = deque()
    with ThreadPoolExecutor(max(1, threads)) as pool:
        for i, t in enumerate(tiles):
            raw = copy(i)
            pending.append(
                raw if raw is not None else pool.submit(encoder, np.ascontiguousarray(t), **args)
            )
            while len(pending) > 4 * max(1, threads):
                done = pending.popleft()
                yield done if isinstance(done, bytes) else done.result()
        for done in pending:
            yield done if isinstance(done, bytes) else done.result()


class _LevelBuffer:
    """The next level's rows, written strip by strip and read back once, in strips.

    Held in memory up to ``budget`` bytes (no copy to disk and back for a level that small);
    past it, everything moves to a raw temporary file beside the output (deleted when read or
    on failure), so memory stays bounded whatever the slide size.
    """

    def __init__(self, path: Path, level: int, width: int, budget: int) -> None:
        self.path, self.level, self.width, self.budget = path, level, width, budget
        self.chunks: list[np.ndarray] = []
        self.nbytes = 0
        self.file: Path | None = None
        self._sink: BinaryIO | None = None

    def write(self, rows: np.ndarray) -> None:
        rows = np.ascontiguousarray(rows)
        if self._sink is None and self.nbytes + rows.nbytes > self.budget:
            fd, name = tempfile.mkstemp(
                prefix=f".{self.path.name}.", suffix=f".level{self.level}.raw", dir=self.path.parent
            )
            self.file = Path(name)
            self._sink = os.fdopen(fd, "wb")
            for chunk in self.chunks:
                self._sink.write(chunk.data)
            self.chunks = []
        if self._sink is not None:
            self._sink.write(rows.data)
        else:
            self.chunks.append(rows.copy() if rows.base is not None else rows)
        self.nbytes += rows.nbytes

    def close_writing(self) -> None:
        if self._sink is not None:
            self._sink.close()
            self._sink = None

    def strips(self, height: int, rows: int, tile: int) -> Iterator[np.ndarray]:
        """The level's rows again: from the file ``rows`` at a time, from memory as written
        (joined only where a strip would end inside a tile row)."""
        if self.file is not None:
            yield from _raw_strips(self.file, self.width, height, rows)
            return
        chunks, self.chunks = collections.deque(self.chunks), []
        if sum(c.shape[0] for c in chunks) != height:
            raise ValueError(f"level {self.level}: the reduced rows do not cover {height} rows")
        while chunks:
            parts = [chunks.popleft()]
            while chunks and sum(p.shape[0] for p in parts) % tile:
                parts.append(chunks.popleft())
            yield parts[0] if len(parts) == 1 else np.concatenate(parts)

    def discard(self) -> None:
        self.close_writing()
        self.chunks = []
        if self.file is not None:
            self.file.unlink(missing_ok=True)


def _raw_strips(path: Path, width: int, height: int, rows: int) -> Iterator[np.ndarray]:
    with open(path, "rb") as f:
        for y in range(0, height, rows):
            n = min(rows, height - y)
            arr = np.fromfile(f, np.uint8, n * width * 3)
            if arr.size != n * width * 3:
                raise OSError(f"{path}: temporary level file is short (disk full?)")
            yield arr.reshape(n, width, 3)


def _write_level(
    tif: Any,
    tiles: Iterator[np.ndarray],
    level: int,
    size: tuple[int, int],
    mpp: float | None,
    downsample: int,
    description: str | None,
    options: dict[str, Any],
) -> None:
    """Write one level's tiles as an IFD: level 0 full-resolution, the others reduced."""
    res = 1e4 / (mpp * downsample) if mpp else None
    tif.write(
        tiles,
        shape=(size[1], size[0], 3),
        dtype=np.uint8,
        photometric="rgb",
        resolution=(res, res) if res else None,
        resolutionunit="CENTIMETER" if mpp else None,
        subfiletype=0 if level == 0 else 1,
        description=description if level == 0 else None,
        metadata=None,
        software=False,
        **options,
    )


def write_pyramid(
    path: str | os.PathLike[str],
    strips: Iterator[np.ndarray],
    width: int,
    height: int,
    *,
    tile: int = 256,
    compression: str = "jpeg",
    quality: int = 90,
    mpp: float | None = None,
    description: str | None = None,
    top: int = 512,
    strip_pixels: int = STRIP_PIXELS,
    capture_level: int | None = None,
    n_threads: int = 1,
    factor: int = 2,
    min_side: int = 2,
    copy_tiles: Callable[[int, int], bytes | None] | None = None,
    reduce_rows: Callable[[int, np.ndarray, int], np.ndarray] | None = None,
    level_memory: int = LEVEL_MEMORY,
) -> PyramidInfo:
    """Write a pyramidal tiled RGB TIFF from level-0 strips, in one pass over the strips.

    Parameters
    ----------
    path : path
        File to write (replaced if it exists; callers use :func:`~prostate_fast._util.atomic_path`).
    strips : iterator of numpy.ndarray
        Level 0 as (h, width, 3) uint8 strips, top to bottom; every h but the last a multiple of
        ``tile``. An item may also be a pair (strip, reduced): ``reduced`` is the strip already
        divided by ``factor`` (the next level's rows, e.g. decoded at a reduced scale), written
        to level 1 instead of the strip's own ``cv2.INTER_AREA`` reduction.
    width, height : int
        Level-0 size.
    tile : int
        Tile edge (multiple of 16).
    compression : {"jpeg", "deflate", "none"}
    quality : int
        JPEG quality (1-100); deflate always uses zlib level 6.
    mpp : float, optional
        Microns per level-0 pixel, written as resolution in pixels per centimetre.
    description : str, optional
        ImageDescription of level 0.
    top : int
        Levels are reduced until the longer side is at most ``top``.
    strip_pixels : int
        Pixels per strip when reading back the lower levels.
    capture_level : int, optional
        Keep that level in memory and return it (for a thumbnail; choose a small level).
    n_threads : int
        Threads encoding tiles.
    factor : int
        Each level is the previous one divided by ``factor`` (2: halved).
    min_side : int
        No further level once the shorter side is below ``min_side``.
    copy_tiles : callable, optional
        JPEG only: ``copy_tiles(level, i)`` gives the bytes to store as they are for tile ``i``
        (row-major) of ``level``, or None to encode it. The bytes must be a whole JPEG stream as
        this writer makes them (YCbCr, 2 x 2 subsampling, no shared tables). The other tiles are
        encoded as without it, to the same bytes. A copied tile's pixels in the strips are not
        used for it, only for the next level (unless ``reduce_rows`` makes that level).
    reduce_rows : callable, optional
        ``reduce_rows(level, strip, y)`` gives the next level's rows of ``strip`` (rows ``y`` on
        of ``level``), in place of its ``cv2.INTER_AREA`` reduction: e.g. only the rows of the
        tiles that are not copied (see :mod:`prostate_fast.overlay.mirror`).
    level_memory : int
        A reduced level up to this many bytes (uncompressed) is kept in memory until it is
        written; a larger one goes through a raw temporary file beside ``path``.

    Returns
    -------
    PyramidInfo
    """
    import tifffile

    path = Path(path)
    dims = level_dimensions(width, height, top, factor=factor, min_side=min_side)
    codec, argname = _COMPRESSION[compression]
    options = {
        "tile": (tile, tile),
        "compression": codec,
        "compressionargs": None
        if argname is None
        else {argname: 6 if compression == "deflate" else quality},
        "maxworkers": max(1, n_threads),
        "buffersize": max(1, n_threads) * 8 * tile * tile * 3,
    }
    ff = factor * factor  # uncompressed bytes of every level together: level 0 * ff / (ff - 1)
    bigtiff = width * height * 3 * ff // (ff - 1) > 2**32 - 2**28
    buffers: list[_LevelBuffer] = []
    try:
        with tifffile.TiffWriter(path, bigtiff=bigtiff) as tif:
            source: Iterator[np.ndarray] = strips
            captured = None
            for lvl, (w, h) in enumerate(dims):
                if lvl > 0:
                    rows = strip_rows_for(w, tile, strip_pixels)
                    source = buffers[lvl - 1].strips(h, rows, tile)
                nxt = dims[lvl + 1] if lvl + 1 < len(dims) else None
                cap: list[np.ndarray] | None = [] if capture_level == lvl else None
                sink = None
                if nxt is not None:
                    sink = _LevelBuffer(path, lvl + 1, nxt[0], level_memory)
                    buffers.append(sink)
                red = None if reduce_rows is None else functools.partial(reduce_rows, lvl)
                tiles: Iterator[Any] = _tiles(source, w, h, tile, sink, nxt, cap, factor, red)
                if copy_tiles is not None and compression == "jpeg":
                    copy = functools.partial(copy_tiles, lvl)
                    tiles = _copy_or_encode(tiles, copy, quality, n_threads)
                _write_level(tif, tiles, lvl, (w, h), mpp, factor**lvl, description, options)
                if sink is not None:
                    sink.close_writing()
                if lvl > 0:
                    buffers[lvl - 1].discard()
                captured = cap if cap is not None else captured
    finally:
        for buf in buffers:
            buf.discard()
    image = np.concatenate(captured, axis=0) if captured else None
    return PyramidInfo(tuple(dims), image)
