"""The one TIFF decoder of the package, and :class:`TiffSlide`, the reader built on it.

:class:`TiffLevels` opens a (pyramidal) TIFF with tifffile, checks its structure (every IFD
reachable, every tile inside the file, chunky samples) and decodes the tiles or strips a region of
one level touches into RGB uint8. It serves three readers:

* :class:`TiffSlide`, for tiled or pyramidal TIFFs that OpenSlide rejects: every read goes through it.
* :class:`~prostate_fast.slide.vendor.OpenSlideSlide`, for the OpenSlide vendors listed in
  :data:`DIRECT_VENDORS`: on the levels where a comparison at open proved its pixels equal to
  OpenSlide's (several times faster than OpenSlide's premultiplied ARGB path).
* :class:`~prostate_fast.slide.strips.StripReader`, which asks the slide for this decoder
  (``Slide._level_decoder``) and decodes full-width tile rows (:meth:`TiffLevels.band`) on a
  thread pool: JPEG, JPEG 2000 and deflate decoders release the GIL, so threads decode in parallel.

Threads read the file at once (``os.pread``; where it is missing, reads take turns) and decode at
once. Decoded tiles of region reads are kept in a
least-recently-used cache of :data:`SEGMENT_CACHE_BYTES` per file (neighbouring regions share
tiles); band reads bypass it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from collections import OrderedDict
from concurrent.futures import Executor
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import SlideError
from .core import Slide
from .pixels import level_origin, paste, to_rgb, white

__all__ = [
    "DIRECT_VENDORS",
    "MAX_SEGMENT_BYTES",
    "SEGMENT_CACHE_BYTES",
    "TiffLevels",
    "TiffSlide",
    "mpp_from_tiff",
]

#: OpenSlide vendors whose levels are plain tiled TIFF pages in pyramid order, which
#: :class:`TiffLevels` may decode instead of OpenSlide (after proving the pixels equal).
DIRECT_VENDORS = ("generic-tiff", "aperio")

#: Decoded TIFF tiles kept per file (tiles of neighbouring regions are decoded once).
SEGMENT_CACHE_BYTES = 64 << 20
#: Largest decoded tile or strip accepted (a file whose one strip is the whole image is refused
#: above this size: it cannot be read by parts).
MAX_SEGMENT_BYTES = 256 << 20


class TiffLevels:
    """The levels of a (pyramidal) TIFF file, decoded with tifffile into RGB uint8.

    Parameters
    ----------
    path : pathlib.Path
        The TIFF file; level ``i`` is level ``i`` of its first series.

    Raises
    ------
    SlideError
        No readable image, a broken IFD chain, image data past the end of the file, or planar
        (separate-plane) samples. The message names the file.
    """

    def __init__(self, path: Path) -> None:
        import tifffile

        self.path = path
        try:
            with _capture_tifffile_errors() as errors:
                self._tf = tifffile.TiffFile(str(path))
                self.pages = [lvl.keyframe for lvl in self._tf.series[0].levels]
                _ = len(self._tf.pages)  # walks every IFD: a truncated chain is logged
        except IndexError as exc:  # no series, no page: tifffile found no image in the file
            raise SlideError(f"{path}: damaged or truncated TIFF (no readable image)") from exc
        except (tifffile.TiffFileError, OSError, ValueError) as exc:
            raise SlideError(f"{path}: damaged or truncated TIFF ({exc})") from exc
        if errors:
            self._tf.close()
            raise SlideError(f"{path}: damaged or truncated TIFF: {errors[0]}")
        try:
            self._check_pages(path.stat().st_size)
        except SlideError:
            self._tf.close()
            raise
        self.level_dimensions = [(int(p.imagewidth), int(p.imagelength)) for p in self.pages]
        self._lock = threading.Lock()
        self._fd = os.open(path, os.O_RDONLY) if hasattr(os, "pread") else None
        self._cache: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()
        self._cache_bytes = 0
        self._jpeg: dict[int, dict[str, Any] | None] = {}  # level -> _jpeg_args
        self._scratch = threading.local()  # each thread's scratch tile (_decode_into)

    def _check_pages(self, file_size: int) -> None:
        for page in self.pages:
            if page.compression == 1 and not page.dataoffsets:
                continue
            offsets = np.asarray(page.dataoffsets, np.int64)
            ends = offsets + np.asarray(page.databytecounts, np.int64)
            if len(ends) and int(ends.max()) > file_size:
                raise SlideError(
                    f"{self.path}: truncated: image data runs past the end of the file"
                )
            if page.planarconfig != 1 and page.samplesperpixel > 1:
                raise SlideError(f"{self.path}: planar (separate-plane) TIFFs are not supported")
            lw, lh = int(page.imagewidth), int(page.imagelength)
            if page.is_tiled:
                th, tw = int(page.tilelength), int(page.tilewidth)
            else:
                th, tw = min(int(page.rowsperstrip or lh), lh), lw
            seg = th * tw * int(page.samplesperpixel) * page.dtype.itemsize * int(page.imagedepth)
            if seg > MAX_SEGMENT_BYTES:
                what = f"tiles of {tw} x {th} px" if page.is_tiled else f"strips of {th} rows"
                raise SlideError(
                    f"{self.path}: {what} of {lw} x {lh} px need {seg / 2**20:.0f} MiB each to "
                    f"decode (limit {MAX_SEGMENT_BYTES >> 20} MiB); save it with smaller strips "
                    "or tiles"
                )

    @property
    def level_count(self) -> int:
        """Number of levels (pages of the first series)."""
        return len(self.pages)

    def _geometry(self, level: int) -> tuple[int, int, int]:
        """(segment height, segment width, segments per row) of a level: tiles, or strips."""
        page = self.pages[level]
        lw, lh = self.level_dimensions[level]
        if page.is_tiled:
            th, tw = int(page.tilelength), int(page.tilewidth)
        else:
            th, tw = min(int(page.rowsperstrip or lh), lh), lw
        return th, tw, -(-lw // tw)

    def segment(self, level: int, index: int, *, cache: bool = True) -> np.ndarray:
        """Tile or strip ``index`` of ``level`` as read-only RGB uint8 (edge tiles keep padding)."""
        page = self.pages[level]
        key = (page.index, index)
        if cache:
            with self._lock:
                hit = self._cache.get(key)
                if hit is not None:
                    self._cache.move_to_end(key)
                    return hit
        data = self._bytes(int(page.dataoffsets[index]), int(page.databytecounts[index]))
        seg, _, _ = page.decode(data, index, jpegtables=page.jpegtables, jpegheader=page.jpegheader)
        if seg is None:
            raise SlideError(f"{self.path}: empty tile {index}")
        rgb = to_rgb(np.asarray(seg).reshape(seg.shape[-3:]))
        rgb.setflags(write=False)
        if cache:
            self._remember(key, rgb)
        return rgb

    def _bytes(self, offset: int, count: int) -> bytes:
        """``count`` bytes of the file at ``offset``; several threads may read at once."""
        if self._fd is not None:
            return os.pread(self._fd, count, offset)
        with self._lock:  # no pread (Windows): one shared file position
            fh = self._tf.filehandle
            fh.seek(offset)
            return fh.read(count)

    def _remember(self, key: tuple[int, int], rgb: np.ndarray) -> None:
        with self._lock:
            if key not in self._cache:
                self._cache[key] = rgb
                self._cache_bytes += rgb.nbytes
            while self._cache_bytes > SEGMENT_CACHE_BYTES and len(self._cache) > 1:
                _, old = self._cache.popitem(last=False)
                self._cache_bytes -= old.nbytes

    def read(self, level: int, lx: int, ly: int, size: tuple[int, int]) -> np.ndarray:
        """Region of ``level`` with top-left (lx, ly) in level pixels; white outside the level.

        A whole tile inside the region, of a plain JPEG level (:meth:`_jpeg_args`), not in the
        cache, is decoded into a scratch tile of the thread and copied into the region (no new
        array per tile, and not cached: the region holds all of it); tiles the region cuts go
        through the cache (:meth:`segment`), as neighbouring regions share them.
        """
        lw, lh = self.level_dimensions[level]
        th, tw, per_row = self._geometry(level)
        inside = lx >= 0 and ly >= 0 and lx + size[0] <= lw and ly + size[1] <= lh
        out = np.empty((size[1], size[0], 3), np.uint8) if inside else white(*size)
        r1, c1 = min(ly + size[1], lh) - 1, min(lx + size[0], lw) - 1
        if r1 < 0 or c1 < 0:
            return out
        jpeg = self._jpeg_args(level)
        for r in range(max(ly, 0) // th, r1 // th + 1):
            for c in range(max(lx, 0) // tw, c1 // tw + 1):
                y, x = r * th - ly, c * tw - lx
                whole = 0 <= y and y + th <= size[1] and 0 <= x and x + tw <= size[0]
                if jpeg is not None and whole and (r + 1) * th <= lh and (c + 1) * tw <= lw:
                    if self._decode_into(level, r * per_row + c, jpeg, out[y : y + th, x : x + tw]):
                        continue
                seg = self.segment(level, r * per_row + c)
                paste(out, seg[: lh - r * th, : lw - c * tw], x, y)
        return out

    def _jpeg_args(self, level: int) -> dict[str, Any] | None:
        """The JPEG decoder's arguments for the tiles of ``level`` (tifffile's, for its
        photometric), or None when they are not plain 8-bit 3-sample JPEG tiles."""
        if level in self._jpeg:
            return self._jpeg[level]
        try:  # tifffile's own colour-space rule for JPEG in TIFF (not in its top-level API)
            from tifffile.tifffile import jpeg_decode_colorspace
        except ImportError:  # another tifffile: every tile goes through segment()
            self._jpeg[level] = None
            return None

        page = self.pages[level]
        plain = (
            page.is_tiled
            and page.compression == 7
            and page.samplesperpixel == 3
            and page.planarconfig == 1
            and page.dtype == np.uint8
            and page.imagedepth == 1
            and not page.extrasamples
            and page.jpegheader is None
            and page.photometric in (2, 6)  # RGB (Aperio), YCbCr
        )
        args = None
        if plain:
            cs, out_cs = jpeg_decode_colorspace(page.photometric, 1, (), page.is_jfif)
            args = {"tables": page.jpegtables, "colorspace": cs, "outcolorspace": out_cs}
        self._jpeg[level] = args
        return args

    def _decode_into(self, level: int, index: int, args: dict[str, Any], dest: np.ndarray) -> bool:
        """Decode tile ``index`` of ``level`` into ``dest`` (a view of the region) through the
        thread's scratch tile; False (nothing written) when it is cached or will not decode
        as a whole tile (the caller reads it through :meth:`segment`, which reports errors)."""
        import imagecodecs

        page = self.pages[level]
        with self._lock:
            if (page.index, index) in self._cache:
                return False
        scratch = getattr(self._scratch, "tile", None)
        if scratch is None or scratch.shape != dest.shape:
            scratch = self._scratch.tile = np.empty(dest.shape, np.uint8)
        data = self._bytes(int(page.dataoffsets[index]), int(page.databytecounts[index]))
        try:
            got = imagecodecs.jpeg_decode(data, shape=dest.shape[:2], out=scratch, **args)
        except Exception:  # noqa: BLE001 - any decoder failure: segment() names it
            return False
        if got.shape != dest.shape:
            return False
        dest[...] = got
        return True

    def band_height(self, level: int) -> int | None:
        """Rows per :meth:`band` of ``level``, or None when its pages are no tiled 8-bit RGB."""
        page = self.pages[level]
        plain = (
            page.is_tiled
            and page.samplesperpixel == 3
            and page.planarconfig == 1
            and page.dtype == np.uint8
            and page.imagedepth == 1
        )
        return int(page.tilelength) if plain else None

    def band(self, level: int, row: int, pool: Executor) -> np.ndarray:
        """Tile row ``row`` of ``level``, full width, its tiles decoded on ``pool`` (uncached)."""
        lw, lh = self.level_dimensions[level]
        th, tw, per_row = self._geometry(level)
        h = min(th, lh - row * th)
        out = np.empty((h, lw, 3), np.uint8)

        def fill(c: int) -> None:
            x0 = c * tw
            w = min(tw, lw - x0)
            out[:, x0 : x0 + w] = self.segment(level, row * per_row + c, cache=False)[:h, :w]

        list(pool.map(fill, range(per_row)))
        return out

    def close(self) -> None:
        """Close the file (idempotent)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._tf.close()


class TiffSlide(Slide):
    """A tiled or stripped (pyramidal) TIFF read with tifffile, for files OpenSlide rejects.

    Only the tiles a region touches are read and decoded, so memory does not grow with the slide.
    """

    format = "tiff"

    def __init__(self, path: Path, n_threads: int | None = None) -> None:
        super().__init__(path, n_threads)
        self._tiff = TiffLevels(path)
        self._level_dimensions = list(self._tiff.level_dimensions)
        first = self._tiff.pages[0]
        desc = first.description or ""
        self._mpp, self._mpp_source = mpp_from_tiff(first, desc)
        self._objective = objective_from_description(desc)
        self.properties = {"tiff.ImageDescription": desc}

    @property
    def is_tiled(self) -> bool:
        """Whether level 0 is stored in tiles (else in strips)."""
        return bool(self._tiff.pages[0].is_tiled)

    @property
    def strips_decodable(self) -> bool:
        """Whether level 0's strips or tiles decode to what :func:`~.pixels.to_rgb` takes:
        grey or RGB (JPEG YCbCr included), 8 or 16 bits, not old-style JPEG. Other pages
        (palette, bilevel, CMYK, min-is-white) are left to OpenCV."""
        page = self._tiff.pages[0]
        photometric = int(page.photometric)
        return (
            (photometric in (1, 2) or (photometric == 6 and int(page.compression) == 7))
            and page.dtype in (np.uint8, np.uint16)
            and int(page.compression) != 6
            and int(page.samplesperpixel) <= 4
        )

    def _read(self, l0_xy: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        lx, ly = level_origin(l0_xy, self.level_downsamples[level])
        return self._tiff.read(level, lx, ly, size)

    def _level_decoder(self, level: int) -> TiffLevels | None:
        return self._tiff

    def close(self) -> None:
        self._tiff.close()


_APERIO_MAG = re.compile(r"AppMag\s*=\s*([0-9.]+)")
_APERIO_MPP = re.compile(r"MPP\s*=\s*([0-9.]+)")


def objective_from_description(desc: str) -> float | None:
    """Objective power from our synthetic JSON description or an Aperio description, else None."""
    if desc.startswith("{"):
        try:
            meta = json.loads(desc).get("prostate_fast", {})
            if meta.get("objective_power"):
                return float(meta["objective_power"])
        except (ValueError, AttributeError):
            pass
    m = _APERIO_MAG.search(desc)
    return float(m.group(1)) if m else None


def mpp_from_tiff(page: Any, desc: str) -> tuple[tuple[float, float] | None, str | None]:
    """((x, y) µm per pixel, where it came from) from an Aperio description, else from the
    TIFF resolution tags (``XResolution``/``YResolution`` in pixels per inch or centimetre);
    (None, None) when neither gives a microscope scale."""
    m = _APERIO_MPP.search(desc)
    if m and float(m.group(1)) > 0:
        return (float(m.group(1)), float(m.group(1))), "Aperio description"
    mpp = _mpp_from_tags(page)
    return (mpp, "TIFF resolution tags") if mpp else (None, None)


def _mpp_from_tags(page: Any) -> tuple[float, float] | None:
    tags = page.tags
    unit = tags.get("ResolutionUnit")
    xr, yr = tags.get("XResolution"), tags.get("YResolution")
    if xr is None or yr is None:
        return None
    per = {2: 25400.0, 3: 10000.0}.get(int(unit.value) if unit is not None else 2)  # inch: default
    if per is None:
        return None
    xv, yv = (v.value[0] / v.value[1] if v.value[1] else 0 for v in (xr, yr))
    if xv <= 0 or yv <= 0:
        return None
    mx, my = per / xv, per / yv
    # Office software writes 72/96/300 dpi; that is no microscope scale.
    return (mx, my) if mx < 100 else None


class _ErrorCollector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


class _capture_tifffile_errors:  # noqa: N801 - used as a context manager
    """Collect what tifffile logs (it logs, rather than raises, for broken IFD chains)."""

    def __enter__(self) -> list[str]:
        self._handler = _ErrorCollector()
        self._logger = logging.getLogger("tifffile")
        self._propagate = self._logger.propagate
        self._logger.addHandler(self._handler)
        self._logger.propagate = False
        return self._handler.messages

    def __exit__(self, *exc: object) -> None:
        self._logger.removeHandler(self._handler)
        self._logger.propagate = self._propagate
