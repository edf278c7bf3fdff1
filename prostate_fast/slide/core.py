"""The :class:`Slide` interface: a pyramid of levels read as RGB uint8, and level choice.

Modules of the ``slide`` package, in import order:

* ``pixels``: decoded image → RGB uint8 (alpha composited on white), pasting, level origins;
* ``core`` (this module): :class:`Slide`, :class:`LevelChoice`, and :meth:`Slide.with_mpp`'s view;
* ``strips``: :class:`~prostate_fast.slide.strips.StripReader` (full-width strips at a tiling
  scale, what :meth:`Slide.strip_reader` returns) and :func:`~prostate_fast.slide.strips.prefetch`;
* ``tiff``: the one TIFF decoder (:class:`~prostate_fast.slide.tiff.TiffLevels`) and
  :class:`~prostate_fast.slide.tiff.TiffSlide`;
* ``vendor``: :class:`~prostate_fast.slide.vendor.OpenSlideSlide` (every OpenSlide format, with
  the TIFF decoder where it is proven exact);
* ``memory``: :class:`~prostate_fast.slide.memory.ImageSlide` (JPEG/PNG/BMP) and
  :class:`~prostate_fast.slide.memory.ArraySlide` (in-memory arrays);
* ``dispatch``: :func:`~prostate_fast.slide.dispatch.open_slide`;
* ``pyramid``: the streaming pyramidal TIFF writer.

Coordinates follow OpenSlide: ``l0_xy`` is the (x, y) of a region's top-left corner in level-0
pixels, ``size`` is (width, height) in pixels of the level read. Every reader returns RGB uint8
arrays of shape (height, width, 3); transparent pixels (outside the scanned area, or alpha in PNGs)
are composited on white, so glass and "no data" look the same to every later stage.

Magnification: a slide knows its microns per pixel (``mpp``, None when the file has none) and its
objective power. :meth:`Slide.choose_level` turns a requested magnification (the study used 20x) or
mpp into a :class:`LevelChoice`: the pyramid level to read and the factor by which to shrink it when
no level matches exactly. :meth:`Slide.read_scaled` reads with that choice.

Threads: reads of one slide may run in several threads at once (the readers lock what they share);
a :class:`~prostate_fast.slide.strips.StripReader` belongs to one thread at a time.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._util import resolve_threads
from ..errors import SlideError
from .strips import StripReader

if TYPE_CHECKING:
    from .tiff import TiffLevels

__all__ = ["LEVEL_TOLERANCE", "THUMBNAIL_READ_PIXELS", "LevelChoice", "Slide"]

#: Relative tolerance within which a pyramid level counts as matching the requested scale.
LEVEL_TOLERANCE = 0.02
#: Level pixels :meth:`Slide.get_thumbnail` reads at once (larger levels are read in bands).
THUMBNAIL_READ_PIXELS = 16 << 20


@dataclass(frozen=True)
class LevelChoice:
    """How to read a slide at a target scale.

    Attributes
    ----------
    level : int
        Pyramid level to read from.
    downsample : float
        Level-0 pixels per output pixel at the target scale.
    scale : float
        Level pixels per output pixel (1.0: the level is read as is; > 1: it is shrunk).
    mpp : float or None
        Microns per output pixel, when the slide knows its mpp.
    magnification : float or None
        Equivalent objective magnification of the output, when known.
    """

    level: int
    downsample: float
    scale: float
    mpp: float | None
    magnification: float | None


class Slide(ABC):
    """A whole-slide image: a pyramid of levels, read as RGB uint8 regions.

    Subclasses fill ``_level_dimensions`` (list of (width, height), level 0 first),
    ``_mpp`` ((x, y) microns per level-0 pixel, or None), ``_objective`` (float or None) and
    implement :meth:`_read`; those backed by the TIFF decoder also override
    :meth:`_level_decoder`, which :meth:`strip_reader` asks for.
    """

    format: str = "unknown"

    def __init__(self, path: Path | None, n_threads: int | None = None) -> None:
        self.path = path
        self.n_threads = n_threads
        self._level_dimensions: list[tuple[int, int]] = []
        self._mpp: tuple[float, float] | None = None
        self._mpp_source: str | None = None
        self._objective: float | None = None
        self.properties: dict[str, str] = {}
        #: What the reader had to infer or work around (``info`` prints them).
        self.notes: list[str] = []

    # -- geometry -------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        """File name, or ``<array>`` for in-memory slides."""
        return self.path.name if self.path is not None else "<array>"

    @property
    def dimensions(self) -> tuple[int, int]:
        """(width, height) of level 0 in pixels."""
        return self._level_dimensions[0]

    @property
    def level_count(self) -> int:
        """Number of pyramid levels."""
        return len(self._level_dimensions)

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        """(width, height) of every level, level 0 first."""
        return tuple(self._level_dimensions)

    @property
    def level_downsamples(self) -> tuple[float, ...]:
        """Level-0 pixels per level pixel, for every level (mean of x and y, as OpenSlide)."""
        w0, h0 = self.dimensions
        return tuple((w0 / w + h0 / h) / 2.0 for w, h in self._level_dimensions)

    @property
    def mpp(self) -> tuple[float, float] | None:
        """(x, y) microns per level-0 pixel, or None when the file does not say."""
        return self._mpp

    @property
    def mpp_source(self) -> str | None:
        """Where :attr:`mpp` came from (e.g. ``"OpenSlide properties"``, ``"TIFF resolution
        tags"``, ``"given"`` for :meth:`with_mpp`), None when there is no mpp."""
        return self._mpp_source if self._mpp else None

    @property
    def objective_power(self) -> float | None:
        """Scanner objective power of level 0 (e.g. 20.0 or 40.0), or None when unknown."""
        return self._objective

    @property
    def associated_images(self) -> tuple[str, ...]:
        """Names of the associated images (label, macro, thumbnail) the file carries."""
        return ()

    def read_associated(self, name: str) -> np.ndarray:
        """Read an associated image (see :attr:`associated_images`) as RGB uint8."""
        raise KeyError(f"{self.name}: no associated image {name!r}")

    def best_level_for_downsample(self, downsample: float) -> int:
        """Highest-resolution-saving level whose downsample does not exceed ``downsample``."""
        if not downsample > 0:
            raise ValueError(f"downsample must be positive, got {downsample!r}")
        best = 0
        for i, ds in enumerate(self.level_downsamples):
            if ds <= downsample * (1 + LEVEL_TOLERANCE):
                best = i if ds >= self.level_downsamples[best] else best
        return best

    # -- reading --------------------------------------------------------------------------------
    @abstractmethod
    def _read(self, l0_xy: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        """Read an in-bounds-or-not region; return RGB uint8 (h, w, 3). Arguments are checked."""

    def read_region(self, l0_xy: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        """Read a region of one level.

        Parameters
        ----------
        l0_xy : (int, int)
            Top-left corner (x, y) in level-0 pixels. May lie outside the slide.
        level : int
            Pyramid level, 0 <= level < level_count.
        size : (int, int)
            (width, height) in pixels of ``level``; both positive.

        Returns
        -------
        numpy.ndarray
            RGB uint8 of shape (height, width, 3), C-contiguous. Pixels outside the slide or
            transparent in the file are white.

        Raises
        ------
        ValueError
            Bad level or size.
        SlideError
            The file cannot be decoded there (damaged tile data).
        """
        if not 0 <= int(level) < self.level_count:
            raise ValueError(f"level must be in [0, {self.level_count}), got {level!r}")
        w, h = (int(v) for v in size)
        if w <= 0 or h <= 0:
            raise ValueError(f"size must be two positive integers, got {size!r}")
        x, y = (int(v) for v in l0_xy)
        try:
            out = self._read((x, y), int(level), (w, h))
        except SlideError:
            raise
        except (OSError, RuntimeError, ValueError) as exc:
            raise SlideError(
                f"{self.path}: cannot read level {level} at {(x, y)} size {(w, h)}: {exc}"
            ) from exc
        return out

    def get_thumbnail(self, max_size: tuple[int, int] = (1024, 1024)) -> np.ndarray:
        """Whole slide as RGB uint8, fitting in ``max_size`` (width, height), aspect kept.

        Read from the coarsest level not coarser than the thumbnail: whole when that level has at
        most :data:`THUMBNAIL_READ_PIXELS` pixels, else in bands of about that many pixels, each
        shrunk as it is read (a single-level slide of any size stays in bounded memory).
        """
        import cv2

        w0, h0 = self.dimensions
        factor = max(w0 / max_size[0], h0 / max_size[1], 1.0)
        tw, th = max(1, round(w0 / factor)), max(1, round(h0 / factor))
        level = self.best_level_for_downsample(factor)
        lw, lh = self._level_dimensions[level]
        if lw * lh <= THUMBNAIL_READ_PIXELS:
            img = self.read_region((0, 0), level, (lw, lh))
            if (lw, lh) != (tw, th):
                img = cv2.resize(img, (tw, th), interpolation=cv2.INTER_AREA)
            return img
        out = np.empty((th, tw, 3), np.uint8)
        lds = self.level_downsamples[level]
        rows = max(1, THUMBNAIL_READ_PIXELS * th // (lw * lh))  # thumbnail rows per band
        for r0 in range(0, th, rows):
            r1 = min(th, r0 + rows)
            y0, y1 = r0 * lh // th, max(r0 * lh // th + 1, r1 * lh // th)
            l0_y = math.floor(y0 * lds) if level else y0
            band = self.read_region((0, l0_y), level, (lw, y1 - y0))
            out[r0:r1] = cv2.resize(band, (tw, r1 - r0), interpolation=cv2.INTER_AREA)
        return out

    def read_low_res(self, downsample: float) -> tuple[np.ndarray, float]:
        """Whole slide as RGB uint8 at about ``downsample`` level-0 px per pixel, and its exact
        downsample: a level read in bands (bounded memory), each block-mean shrunk by the whole
        factor k that brings the level's downsample nearest ``downsample`` (the tissue mask's and
        the label table fingerprint's image). With several threads (``n_threads``) the bands
        are read side by side, at least one per thread: the same pixels (each output pixel is
        the mean of its own k x k block)."""
        import cv2

        level = self.best_level_for_downsample(downsample)
        lds = self.level_downsamples[level]
        k = max(1, int(round(downsample / lds)))
        lw, lh = self.level_dimensions[level]
        mw, mh = -(-lw // k), -(-lh // k)
        out = np.empty((mh, mw, 3), np.uint8)
        threads = resolve_threads(self.n_threads)
        band = max(1, min((16 << 20) // (mw * k * k * threads), -(-mh // threads)))

        def read_band(r0: int) -> None:
            r1 = min(mh, r0 + band)
            l0_y = math.ceil(r0 * k * lds) if level else r0 * k
            img = self.read_region((0, l0_y), level, (mw * k, (r1 - r0) * k))
            if k > 1:
                img = cv2.resize(img, (mw, r1 - r0), interpolation=cv2.INTER_AREA)
            out[r0:r1] = img

        starts = range(0, mh, band)
        if threads > 1 and len(starts) > 1:
            with ThreadPoolExecutor(min(threads, len(starts)), thread_name_prefix="pf-low") as pool:
                list(pool.map(read_band, starts))
        else:
            for r0 in starts:
                read_band(r0)
        return out, lds * k

    # -- magnification --------------------------------------------------------------------------
    @property
    def base_magnification(self) -> float | None:
        """Magnification of level 0: objective power, else 10 / mpp (0.5 µm/px ≈ 20x), else None."""
        if self._objective:
            return float(self._objective)
        if self._mpp:
            return 10.0 / ((self._mpp[0] + self._mpp[1]) / 2.0)
        return None

    def choose_level(
        self,
        *,
        magnification: float | None = None,
        mpp: float | None = None,
        level: int | None = None,
    ) -> LevelChoice:
        """Pick the pyramid level and resampling factor for a target scale.

        Give exactly one of ``magnification`` (e.g. 20 for the study's 20x), ``mpp`` (microns per
        output pixel) or ``level`` (read a level as it is). The level chosen is the smallest one
        (fewest pixels) that is still at least as fine as the target; the factor ``scale`` shrinks
        it to the target when no level matches within 2 %.

        Raises
        ------
        ValueError
            Not exactly one target given, a non-positive target, or a target finer than level 0
            (prostate-fast never upsamples).
        SlideError
            A magnification or mpp was asked of a slide whose file records neither; pass
            ``level`` (or the slide's mpp) instead.
        """
        given = [v is not None for v in (magnification, mpp, level)]
        if sum(given) != 1:
            raise ValueError("give exactly one of magnification, mpp or level")
        base_mpp = (self._mpp[0] + self._mpp[1]) / 2.0 if self._mpp else None
        base_mag = self.base_magnification
        if level is not None:
            if not 0 <= int(level) < self.level_count:
                raise ValueError(f"level must be in [0, {self.level_count}), got {level!r}")
            return self.choice_for_downsample(self.level_downsamples[int(level)], int(level))
        if magnification is not None:
            if not magnification > 0:
                raise ValueError(f"magnification must be positive, got {magnification!r}")
            if base_mag is None:
                raise SlideError(
                    f"{self.path}: the file records neither objective power nor mpp; "
                    "pass --slide-mpp or --level"
                )
            target_ds = base_mag / float(magnification)
        else:
            assert mpp is not None
            if not mpp > 0:
                raise ValueError(f"mpp must be positive, got {mpp!r}")
            if base_mpp is None:
                raise SlideError(
                    f"{self.path}: the file records no microns per pixel; pass --slide-mpp or --level"
                )
            target_ds = float(mpp) / base_mpp
        if target_ds < 1 - LEVEL_TOLERANCE:
            what = f"{magnification}x" if magnification is not None else f"{mpp} µm/px"
            raise ValueError(
                f"{self.name}: {what} is finer than level 0 "
                f"({base_mag:.4g}x, {base_mpp or float('nan'):.4g} µm/px); upsampling is refused"
            )
        target_ds = max(target_ds, 1.0) if abs(target_ds - 1) <= LEVEL_TOLERANCE else target_ds
        lvl = self.best_level_for_downsample(target_ds)
        lds = self.level_downsamples[lvl]
        if abs(target_ds / lds - 1.0) <= LEVEL_TOLERANCE:
            target_ds = lds  # a level matches: read it as it is
        return self.choice_for_downsample(target_ds, lvl)

    def choice_for_downsample(self, downsample: float, level: int | None = None) -> LevelChoice:
        """The :class:`LevelChoice` reading ``downsample`` level-0 pixels per output pixel.

        From ``level`` when given, else from the level :meth:`best_level_for_downsample` picks;
        ``scale`` is ``downsample`` over that level's downsample, 1.0 within 2 %, and ``mpp`` and
        ``magnification`` follow from the slide's own. Used to rebuild a stage's stored scale.
        """
        if not downsample > 0:
            raise ValueError(f"downsample must be positive, got {downsample!r}")
        lvl = self.best_level_for_downsample(downsample) if level is None else int(level)
        if not 0 <= lvl < self.level_count:
            raise ValueError(f"level must be in [0, {self.level_count}), got {level!r}")
        scale = downsample / self.level_downsamples[lvl]
        if abs(scale - 1.0) <= LEVEL_TOLERANCE:
            scale = 1.0
        base_mpp = (self._mpp[0] + self._mpp[1]) / 2.0 if self._mpp else None
        base_mag = self.base_magnification
        return LevelChoice(
            lvl,
            float(downsample),
            float(scale),
            base_mpp * downsample if base_mpp else None,
            base_mag / downsample if base_mag else None,
        )

    def read_scaled(
        self, l0_xy: tuple[int, int], size: tuple[int, int], choice: LevelChoice
    ) -> np.ndarray:
        """Read ``size`` (width, height) output pixels at ``choice``'s scale from ``l0_xy``.

        When ``choice.scale`` is 1 this is :meth:`read_region`; otherwise the covering region of
        ``choice.level`` is read and shrunk with area interpolation.
        """
        import cv2

        if choice.scale == 1.0:
            return self.read_region(l0_xy, choice.level, size)
        w, h = (int(v) for v in size)
        src = (max(1, round(w * choice.scale)), max(1, round(h * choice.scale)))
        img = self.read_region(l0_xy, choice.level, src)
        return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)

    # -- views and strips -----------------------------------------------------------------------
    def with_mpp(self, mpp: float) -> Slide:
        """This slide with its level-0 microns per pixel replaced (what ``--slide-mpp`` does).

        Parameters
        ----------
        mpp : float
            Microns per level-0 pixel, in x and y. The view has no objective power: its
            magnification follows from ``mpp`` (10 / mpp).

        Returns
        -------
        Slide
            A view of the same open slide: reads, strips and associated images go to this slide,
            which stays the owner (closing the view does nothing; close this slide when done).

        Raises
        ------
        ValueError
            ``mpp`` is not a positive number.
        """
        if isinstance(mpp, bool) or not isinstance(mpp, int | float | np.number) or not mpp > 0:
            raise ValueError(f"mpp must be a positive number, got {mpp!r}")
        return _MppView(self, float(mpp))

    def strip_reader(
        self, choice: LevelChoice, width: int, *, n_threads: int | None = None
    ) -> StripReader:
        """A reader of full-width strips of this slide at ``choice``'s scale.

        Parameters
        ----------
        choice : LevelChoice
            The scale (the tiling level, and the factor shrinking it).
        width : int
            Columns per strip (the slide's width at that scale); white beyond the level's edge.
        n_threads : int, optional
            Tile decoders (None = all cores).

        Returns
        -------
        StripReader
            ``read(y0, h)`` gives rows [y0, y0 + h) at that scale; ``strips(height, rows)`` yields
            them top to bottom. A context manager: close it (or leave the ``with``) to stop its
            decoder threads, before closing the slide.

        Notes
        -----
        Where this slide's TIFF decoder is proven exact on ``choice.level`` (a TIFF OpenSlide
        rejects, or a generic-tiff / Aperio level equal to OpenSlide's at open), the level's tile
        rows are decoded on ``n_threads`` threads (50+ megapixels per second per core) and each
        row band is decoded once; otherwise strips are read with :meth:`read_scaled`.
        """
        from .._util import resolve_threads

        if isinstance(width, bool) or not isinstance(width, int | np.integer) or width <= 0:
            raise ValueError(f"width must be a positive integer, got {width!r}")
        return StripReader(self, choice, int(width), resolve_threads(n_threads))

    def _level_decoder(self, level: int) -> TiffLevels | None:
        """The TIFF decoder whose pixels of ``level`` are this slide's own, or None."""
        return None

    # -- lifetime -------------------------------------------------------------------------------
    def close(self) -> None:  # noqa: B027 - in-memory slides hold nothing to release
        """Release the file handle (idempotent)."""

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def describe(self) -> dict[str, Any]:
        """Facts about the slide as a JSON-friendly dict (what ``prostate-fast info`` prints)."""
        return {
            "path": str(self.path) if self.path else None,
            "format": self.format,
            "dimensions": list(self.dimensions),
            "level_count": self.level_count,
            "level_dimensions": [list(d) for d in self.level_dimensions],
            "level_downsamples": [round(d, 4) for d in self.level_downsamples],
            "mpp": list(self.mpp) if self.mpp else None,
            "mpp_source": self.mpp_source,
            "objective_power": self.objective_power,
            "associated_images": list(self.associated_images),
            "notes": list(self.notes),
        }

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {self.name} {self.format} {self.dimensions[0]}x"
            f"{self.dimensions[1]} levels={self.level_count} mpp={self.mpp}>"
        )


class _MppView(Slide):
    """A view of a slide with its level-0 mpp replaced (:meth:`Slide.with_mpp`)."""

    def __init__(self, base: Slide, mpp: float) -> None:
        super().__init__(base.path, base.n_threads)
        self._base = base
        self.format = base.format
        self.properties = base.properties
        self._level_dimensions = list(base.level_dimensions)
        self._mpp = (mpp, mpp)
        self._mpp_source = "given"
        self.notes = list(base.notes)
        self._objective = None  # the magnification follows from the mpp given

    @property
    def level_downsamples(self) -> tuple[float, ...]:
        return self._base.level_downsamples

    @property
    def associated_images(self) -> tuple[str, ...]:
        return self._base.associated_images

    def read_associated(self, name: str) -> np.ndarray:
        return self._base.read_associated(name)

    def _read(self, l0_xy: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        return self._base._read(l0_xy, level, size)

    def _level_decoder(self, level: int) -> TiffLevels | None:
        return self._base._level_decoder(level)
