"""Full-width strips of a slide at a tiling scale, and a prefetching iterator.

:meth:`Slide.strip_reader <prostate_fast.slide.Slide.strip_reader>` returns a :class:`StripReader`:
rows [y0, y0 + h) of the slide at a :class:`~prostate_fast.slide.LevelChoice`, the whole width.
OpenSlide's ``read_region`` composes large regions through ARGB buffers at about 9 megapixels per
second (two minutes for a 1-gigapixel slide). Where the slide's own TIFF decoder is proven exact on
the level (``Slide._level_decoder``: a TIFF OpenSlide rejects, or a generic-tiff / Aperio level
that equalled OpenSlide's at open), the reader decodes the level's tile rows itself on a thread pool
instead (the decoders release the GIL: 50+ megapixels per second per core), each tile row once even
when two strips share it. Otherwise every strip goes through :meth:`Slide.read_scaled`.

:func:`prefetch` runs an iterator (reading, and blending, the next strip) in a thread while the
consumer works on the current item.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np

from .pixels import white

if TYPE_CHECKING:
    from .core import LevelChoice, Slide
    from .tiff import TiffLevels

__all__ = ["StripReader", "prefetch"]


class StripReader:
    """Rows of a slide at one scale, full width (made by :meth:`Slide.strip_reader`).

    ``read(y0, h)`` returns the pixels of ``slide.read_scaled((0, round(y0 * downsample)),
    (width, h), choice)``, except that when the level is decoded directly and ``choice.scale`` is 1
    it returns the level's rows [y0, y0 + h) exactly, where OpenSlide, given level-0 coordinates on
    a level whose downsample is not a whole number (2.0005 say), renders a sub-pixel shifted
    (interpolated) region. Not for use by several threads at once; the slide may be read by other
    threads meanwhile.
    """

    def __init__(self, slide: Slide, choice: LevelChoice, width: int, n_threads: int) -> None:
        self.slide, self.choice, self.width = slide, choice, width
        self._tiff: TiffLevels | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._band: tuple[int, np.ndarray] | None = None
        tiff = slide._level_decoder(choice.level)
        self._th = tiff.band_height(choice.level) if tiff is not None else None
        if tiff is not None and self._th is not None:
            self._tiff = tiff
            self._pool = ThreadPoolExecutor(max(1, n_threads), thread_name_prefix="tiff-decode")

    @property
    def direct(self) -> bool:
        """Whether strips are decoded from the TIFF tiles (rather than read by the slide)."""
        return self._tiff is not None

    def read(self, y0: int, h: int) -> np.ndarray:
        """Rows [y0, y0 + h) of the slide at the reader's scale, ``width`` columns, RGB uint8."""
        import cv2

        choice = self.choice
        if self._tiff is None:
            return self.slide.read_scaled(
                (0, round(y0 * choice.downsample)), (self.width, h), choice
            )
        if choice.scale == 1.0:  # the tiling level is this level, row for row
            return self._level_rows(y0, h, self.width)
        lds = self.slide.level_downsamples[choice.level]
        ly = math.floor(round(y0 * choice.downsample) / lds)
        sw, sh = max(1, round(self.width * choice.scale)), max(1, round(h * choice.scale))
        rows = self._level_rows(ly, sh, sw)
        return cv2.resize(rows, (self.width, h), interpolation=cv2.INTER_AREA)

    def strips(self, height: int, rows: int) -> Iterator[np.ndarray]:
        """Strips of ``rows`` rows (the last one shorter) covering rows [0, height), in order."""
        for y0 in range(0, height, rows):
            yield self.read(y0, min(rows, height - y0))

    def _level_rows(self, y: int, h: int, width: int) -> np.ndarray:
        """Rows [y, y + h) of the level, ``width`` columns (white beyond the level's edges)."""
        assert self._tiff is not None and self._th is not None
        lw, lh = self._tiff.level_dimensions[self.choice.level]
        out = white(width, h)
        w = min(width, lw)
        y0, y1 = max(y, 0), min(y + h, lh)
        for r in range(y0 // self._th, -(-y1 // self._th)) if y1 > y0 else ():
            band = self._tile_row(r)
            b0 = r * self._th
            s0, s1 = max(y0, b0), min(y1, b0 + band.shape[0])
            out[s0 - y : s1 - y, :w] = band[s0 - b0 : s1 - b0, :w]
        return out

    def _tile_row(self, r: int) -> np.ndarray:
        if self._band is None or self._band[0] != r:
            assert self._tiff is not None and self._pool is not None
            self._band = (r, self._tiff.band(self.choice.level, r, self._pool))
        return self._band[1]

    def close(self) -> None:
        """Stop the decoder threads (idempotent); the slide stays open."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self._tiff = None
        self._band = None

    def __enter__(self) -> StripReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def prefetch(items: Iterator[np.ndarray], depth: int = 1) -> Iterator[np.ndarray]:
    """Run ``items`` in a thread, ``depth`` items ahead; errors are re-raised in the consumer.

    Parameters
    ----------
    items : iterator
        Produces the items (e.g. strips read and blended); runs in a daemon thread.
    depth : int
        Items produced ahead of the consumer.

    Yields
    ------
    numpy.ndarray
        The items, in order. Close the generator (``contextlib.closing``) to stop the thread early.
    """
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
