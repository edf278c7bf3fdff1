"""Read a slide at the tiling level in full-width strips, fast where the file allows it.

OpenSlide's ``read_region`` composes large regions through ARGB buffers at about 9 megapixels per
second; for a 1-gigapixel slide that alone is two minutes. When the slide is a tiled TIFF that
tifffile can decode (generic tiled TIFF, Aperio SVS, the TIFFs :class:`~prostate_fast.slide.TiffSlide`
reads), :class:`TiffLevelReader` decodes the level's tiles itself on a thread pool (the JPEG
decoder releases the GIL): 50+ megapixels per second per core. It is used only after one of its tiles
has been checked to equal what the slide's own reader returns there, so the pixels are the same;
otherwise every strip goes through :meth:`Slide.read_scaled`. :func:`prefetch` runs the reading
(and blending) of the next strip in a thread while the current one is encoded.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

__all__ = ["TiffLevelReader", "prefetch", "strip_reader"]

#: OpenSlide vendors whose levels are plain tiled TIFF pages (in pyramid order).
_TIFF_VENDORS = {"generic-tiff", "aperio", "tiff"}


class TiffLevelReader:
    """Decode full-width row bands of one tiled TIFF level with ``n_threads`` decoders."""

    def __init__(self, tf: Any, page: Any, n_threads: int) -> None:
        self.tf = tf
        self.page = page
        self.th, self.tw = int(page.tilelength), int(page.tilewidth)
        self.lw, self.lh = int(page.imagewidth), int(page.imagelength)
        self.per_row = -(-self.lw // self.tw)
        self.offsets = np.asarray(page.dataoffsets, np.int64)
        self.counts = np.asarray(page.databytecounts, np.int64)
        self.jpegtables, self.jpegheader = page.jpegtables, page.jpegheader
        self.fd = os.open(tf.filehandle.path, os.O_RDONLY)
        self.pool = ThreadPoolExecutor(max(1, n_threads), thread_name_prefix="tiff-decode")
        self._band: tuple[int, np.ndarray] | None = None

    @classmethod
    def open(cls, slide: Any, level: int, n_threads: int) -> TiffLevelReader | None:
        """A reader for ``slide``'s ``level``, or None when the file is not such a TIFF."""
        import tifffile

        path = getattr(slide, "path", None)
        if path is None or getattr(slide, "format", None) not in _TIFF_VENDORS:
            return None
        tf = None
        try:
            tf = tifffile.TiffFile(str(path))
            levels = tf.series[0].levels
            page = levels[level].keyframe if level < len(levels) else None
            ok = (
                page is not None
                and page.is_tiled
                and page.samplesperpixel == 3
                and page.planarconfig == 1
                and page.dtype == np.uint8
                and page.imagedepth == 1
                and (page.imagewidth, page.imagelength) == tuple(slide.level_dimensions[level])
            )
            if not ok:
                tf.close()
                return None
            reader = cls(tf, page, n_threads)
        except Exception:  # noqa: BLE001 - any doubt: use the slide's own reader
            if tf is not None:
                tf.close()
            return None
        try:
            h, w = min(reader.th, reader.lh), min(reader.tw, reader.lw)
            mine = reader.read_rows(0, h)[:, :w]
            if not np.array_equal(mine, slide.read_region((0, 0), level, (w, h))):
                reader.close()
                return None
        except Exception:  # noqa: BLE001
            reader.close()
            return None
        return reader

    def _tile(self, index: int) -> np.ndarray:
        data = os.pread(self.fd, int(self.counts[index]), int(self.offsets[index]))
        seg, _, _ = self.page.decode(
            data, index, jpegtables=self.jpegtables, jpegheader=self.jpegheader
        )
        if seg is None:
            raise OSError(f"empty tile {index}")
        return np.asarray(seg).reshape(seg.shape[-3:])

    def _tile_row(self, r: int) -> np.ndarray:
        if self._band is not None and self._band[0] == r:
            return self._band[1]
        h = min(self.th, self.lh - r * self.th)
        band = np.empty((h, self.lw, 3), np.uint8)
        start = r * self.per_row

        def fill(c: int) -> None:
            t = self._tile(start + c)
            x0 = c * self.tw
            w = min(self.tw, self.lw - x0)
            band[:, x0 : x0 + w] = t[:h, :w, :3]

        list(self.pool.map(fill, range(self.per_row)))
        self._band = (r, band)
        return band

    def read_rows(self, y: int, h: int, width: int | None = None) -> np.ndarray:
        """Rows [y, y + h) of the level, ``width`` columns (white beyond the level's edges)."""
        width = self.lw if width is None else width
        out = np.full((h, width, 3), 255, np.uint8)
        w = min(width, self.lw)
        y0, y1 = max(y, 0), min(y + h, self.lh)
        for r in range(y0 // self.th, -(-y1 // self.th)) if y1 > y0 else ():
            band = self._tile_row(r)
            b0 = r * self.th
            s0, s1 = max(y0, b0), min(y1, b0 + band.shape[0])
            out[s0 - y : s1 - y, :w] = band[s0 - b0 : s1 - b0, :w]
        return out

    def close(self) -> None:
        """Release the file descriptor and the decoder threads (idempotent)."""
        if self.fd >= 0:
            self.pool.shutdown(wait=True)
            os.close(self.fd)
            self.fd = -1
            self.tf.close()
        self._band = None


def strip_reader(
    slide: Any, choice: Any, width: int, n_threads: int
) -> tuple[Callable[[int, int], np.ndarray], Callable[[], None]]:
    """``(read, close)``: ``read(y0, h)`` returns rows [y0, y0 + h) of the slide at the tiling level.

    The pixels of ``slide.read_scaled((0, round(y0 * downsample)), (width, h), choice)``, except
    that with ``choice.scale == 1`` the fast reader takes the level's rows [y0, y0 + h) exactly,
    where OpenSlide, given level-0 coordinates on a level whose downsample is not an integer
    (2.0005 say), renders a sub-pixel shifted (interpolated) region.
    """
    import cv2

    reader = TiffLevelReader.open(slide, choice.level, n_threads)
    if reader is None:

        def slow(y0: int, h: int) -> np.ndarray:
            return slide.read_scaled((0, round(y0 * choice.downsample)), (width, h), choice)

        return slow, lambda: None
    lds = slide.level_downsamples[choice.level]

    def fast(y0: int, h: int) -> np.ndarray:
        if choice.scale == 1.0:  # the tiling level is this level, row for row
            return reader.read_rows(y0, h, width)
        ly = math.floor(round(y0 * choice.downsample) / lds)
        sw, sh = max(1, round(width * choice.scale)), max(1, round(h * choice.scale))
        return cv2.resize(reader.read_rows(ly, sh, sw), (width, h), interpolation=cv2.INTER_AREA)

    return fast, reader.close


def prefetch(items: Iterator[np.ndarray], depth: int = 1) -> Iterator[np.ndarray]:
    """Run ``items`` in a thread, ``depth`` items ahead; errors are re-raised in the consumer."""
    import queue
    import threading

    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: tuple[int, Any]) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run() -> None:
        try:
            for it in items:
                if not put((0, it)):
                    return
            put((1, None))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            put((2, exc))

    worker = threading.Thread(target=run, name="overlay-reader", daemon=True)
    worker.start()
    try:
        while True:
            kind, value = q.get()
            if kind == 1:
                return
            if kind == 2:
                raise value
            yield value
    finally:
        stop.set()
        worker.join()
