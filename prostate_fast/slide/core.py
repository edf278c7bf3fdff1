"""Open whole-slide images and read regions at a chosen magnification.

``open_slide(path)`` returns a :class:`Slide` for every format OpenSlide reads (Aperio SVS, Hamamatsu
NDPI/VMS, Leica SCN, MIRAX MRXS, Philips TIFF, Ventana BIF, generic tiled TIFF, DICOM), for tiled or
pyramidal TIFFs that OpenSlide rejects (read with tifffile), and for plain JPEG/PNG/BMP images (the
2018 study worked on a 20x JPEG exported from the scanner file). :class:`ArraySlide` wraps an
in-memory array for tests.

Coordinates follow OpenSlide: ``l0_xy`` is the (x, y) of a region's top-left corner in level-0
pixels, ``size`` is (width, height) in pixels of the level read. Every reader returns RGB uint8
arrays of shape (height, width, 3); transparent pixels (outside the scanned area, or alpha in PNGs)
are composited on white, so glass and "no data" look the same to every later stage.

Magnification: a slide knows its microns per pixel (``mpp``, None when the file has none) and its
objective power. :meth:`Slide.choose_level` turns a requested magnification (the study used 20x) or
mpp into a :class:`LevelChoice`: the pyramid level to read and the factor by which to shrink it when
no level matches exactly. :meth:`Slide.read_scaled` reads with that choice.
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
from abc import ABC, abstractmethod
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._util import resolve_threads
from ..errors import SlideError

__all__ = [
    "ArraySlide",
    "ImageSlide",
    "LevelChoice",
    "OpenSlideSlide",
    "Slide",
    "TiffSlide",
    "open_slide",
]

#: Relative tolerance within which a pyramid level counts as matching the requested scale.
LEVEL_TOLERANCE = 0.02

#: Decoded TIFF tiles kept per slide (tiles of neighbouring regions are decoded once).
SEGMENT_CACHE_BYTES = 64 << 20

#: OpenSlide vendors whose levels are plain tiled TIFF pages that tifffile decodes identically.
_DIRECT_TIFF_VENDORS = ("generic-tiff", "aperio")

_TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_IMAGE_MAGICS = {b"\xff\xd8\xff": "jpeg", b"\x89PNG\r\n\x1a\n": "png", b"BM": "bmp"}


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


def _composite_on_white(rgba: np.ndarray, n_threads: int | None) -> np.ndarray:
    """RGBA (straight alpha) → RGB on white, with the native kernel."""
    from . import _slide_cy

    rgba = np.ascontiguousarray(rgba, dtype=np.uint8)
    out = np.empty(rgba.shape[:2] + (3,), dtype=np.uint8)
    threads = 1 if rgba.shape[0] * rgba.shape[1] < 1 << 16 else resolve_threads(n_threads)
    _slide_cy.composite_on_white(rgba, out, threads)
    return out


def _to_rgb(arr: np.ndarray, n_threads: int | None = None) -> np.ndarray:
    """Any decoded image (gray, gray+alpha, RGB, RGBA; uint8 or uint16) → RGB uint8."""
    if arr.dtype == np.uint16:
        arr = (arr >> 8).astype(np.uint8)
    elif arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * 255
    elif arr.dtype != np.uint8:
        raise ValueError(f"unsupported pixel type {arr.dtype}")
    if arr.ndim == 2:
        arr = arr[:, :, None]
    c = arr.shape[2]
    if c == 1:
        return np.ascontiguousarray(np.repeat(arr, 3, axis=2))
    if c == 2:
        arr = np.concatenate([np.repeat(arr[:, :, :1], 3, axis=2), arr[:, :, 1:2]], axis=2)
        c = 4
    if c == 3:
        return np.ascontiguousarray(arr)
    return _composite_on_white(arr[:, :, :4], n_threads)


class Slide(ABC):
    """A whole-slide image: a pyramid of levels, read as RGB uint8 regions.

    Subclasses fill ``_level_dimensions`` (list of (width, height), level 0 first),
    ``_mpp`` ((x, y) microns per level-0 pixel, or None), ``_objective`` (float or None) and
    implement :meth:`_read`.
    """

    format: str = "unknown"

    def __init__(self, path: Path | None, n_threads: int | None = None) -> None:
        self.path = path
        self.n_threads = n_threads
        self._level_dimensions: list[tuple[int, int]] = []
        self._mpp: tuple[float, float] | None = None
        self._objective: float | None = None
        self.properties: dict[str, str] = {}

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
        """Whole slide as RGB uint8, fitting in ``max_size`` (width, height), aspect kept."""
        import cv2

        w0, h0 = self.dimensions
        factor = max(w0 / max_size[0], h0 / max_size[1], 1.0)
        tw, th = max(1, round(w0 / factor)), max(1, round(h0 / factor))
        level = self.best_level_for_downsample(factor)
        lw, lh = self._level_dimensions[level]
        img = self.read_region((0, 0), level, (lw, lh))
        if (lw, lh) != (tw, th):
            img = cv2.resize(img, (tw, th), interpolation=cv2.INTER_AREA)
        return img

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
                    "pass --mpp or --level"
                )
            target_ds = base_mag / float(magnification)
        else:
            assert mpp is not None
            if not mpp > 0:
                raise ValueError(f"mpp must be positive, got {mpp!r}")
            if base_mpp is None:
                raise SlideError(
                    f"{self.path}: the file records no microns per pixel; pass --mpp or --level"
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
            "objective_power": self.objective_power,
            "associated_images": list(self.associated_images),
        }

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {self.name} {self.format} {self.dimensions[0]}x"
            f"{self.dimensions[1]} levels={self.level_count} mpp={self.mpp}>"
        )


def _paste(out: np.ndarray, src: np.ndarray, x: int, y: int) -> None:
    """Copy ``src`` into ``out`` with its top-left at (x, y) of ``out``, clipped to ``out``."""
    h, w = out.shape[:2]
    x0, y0 = max(x, 0), max(y, 0)
    x1, y1 = min(x + src.shape[1], w), min(y + src.shape[0], h)
    if x1 > x0 and y1 > y0:
        out[y0:y1, x0:x1] = src[y0 - y : y1 - y, x0 - x : x1 - x]


def _level_origin(l0_xy: tuple[int, int], downsample: float) -> tuple[int, int]:
    """Level-0 corner → pixel of a level of ``downsample`` (floor of l0 / downsample, as OpenSlide)."""
    return math.floor(l0_xy[0] / downsample), math.floor(l0_xy[1] / downsample)


class ArraySlide(Slide):
    """An in-memory slide (tests, synthetic regions).

    Parameters
    ----------
    image : numpy.ndarray
        Level 0, (height, width) or (height, width, 1|3|4), uint8.
    mpp : float or (float, float), optional
        Microns per level-0 pixel.
    objective_power : float, optional
    downsamples : sequence of int
        Pyramid levels to build by area averaging (1 must come first).
    """

    format = "array"

    def __init__(
        self,
        image: np.ndarray,
        *,
        mpp: float | tuple[float, float] | None = None,
        objective_power: float | None = None,
        downsamples: tuple[int, ...] = (1,),
        name: str | None = None,
    ) -> None:
        import cv2

        super().__init__(Path(name) if name else None)
        base = _to_rgb(np.asarray(image))
        if not downsamples or downsamples[0] != 1 or any(d < 1 for d in downsamples):
            raise ValueError(f"downsamples must start with 1 and be >= 1, got {downsamples!r}")
        self._levels = [base]
        for d in downsamples[1:]:
            size = (max(1, base.shape[1] // d), max(1, base.shape[0] // d))
            self._levels.append(cv2.resize(base, size, interpolation=cv2.INTER_AREA))
        self._level_dimensions = [(a.shape[1], a.shape[0]) for a in self._levels]
        if mpp is not None:
            self._mpp = (float(mpp), float(mpp)) if np.isscalar(mpp) else tuple(map(float, mpp))
        self._objective = float(objective_power) if objective_power else None

    def _read(self, l0_xy: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        arr = self._levels[level]
        lx, ly = _level_origin(l0_xy, self.level_downsamples[level])
        out = np.full((size[1], size[0], 3), 255, dtype=np.uint8)
        _paste(out, arr, -lx, -ly)
        return out


class OpenSlideSlide(Slide):
    """A slide read by OpenSlide (every vendor format it supports)."""

    def __init__(
        self,
        path: Path,
        vendor: str,
        n_threads: int | None = None,
        direct: TiffSlide | None = None,
    ) -> None:
        import openslide

        super().__init__(path, n_threads)
        self._direct: TiffSlide | None = None
        self._direct_levels: dict[int, int] = {}
        try:
            self._osr = openslide.OpenSlide(str(path))
        except openslide.OpenSlideError as exc:
            raise SlideError(f"{path}: OpenSlide cannot open it ({vendor}): {exc}") from exc
        self.format = vendor
        self.properties = dict(self._osr.properties)
        self._level_dimensions = [tuple(map(int, d)) for d in self._osr.level_dimensions]
        mx = self.properties.get("openslide.mpp-x")
        my = self.properties.get("openslide.mpp-y")
        if mx and my and float(mx) > 0 and float(my) > 0:
            self._mpp = (float(mx), float(my))
        obj = self.properties.get("openslide.objective-power")
        self._objective = (
            float(obj)
            if obj
            else _objective_from_description(self.properties.get("tiff.ImageDescription", ""))
        )
        self._lock = threading.Lock()
        if direct is not None and vendor in _DIRECT_TIFF_VENDORS:
            self._attach_direct(direct)
        elif direct is not None:
            direct.close()

    def _attach_direct(self, direct: TiffSlide) -> None:
        """Read with tifffile where that gives OpenSlide's pixels exactly, several times faster.

        OpenSlide composes regions through premultiplied ARGB buffers (about 9 megapixels per
        second); decoding the TIFF tiles directly is much faster. It is exact on level 0 and on
        levels whose downsample is a whole number when the region starts on a level pixel (elsewhere
        OpenSlide interpolates sub-pixel offsets, so OpenSlide is used). One region per level is
        compared at open; any difference keeps OpenSlide for that level.
        """
        w0, h0 = self._level_dimensions[0]
        for level, (lw, lh) in enumerate(self._level_dimensions):
            if level >= direct.level_count or direct.level_dimensions[level] != (lw, lh):
                continue
            d = round(self.level_downsamples[level])
            if abs(self.level_downsamples[level] - d) > 1e-9 or (w0, h0) != (lw * d, lh * d):
                continue
            x, y = (lw // 2 // 64) * 64 * d, (lh // 2 // 64) * 64 * d
            size = (min(96, lw), min(96, lh))
            try:
                same = np.array_equal(
                    direct._read((x, y), level, size), self._read_openslide((x, y), level, size)
                )
            except Exception:  # noqa: BLE001 - any failure: keep OpenSlide for this level
                same = False
            if same:
                self._direct_levels[level] = d
        if self._direct_levels:
            self._direct = direct
        else:
            direct.close()

    @property
    def level_downsamples(self) -> tuple[float, ...]:
        return tuple(float(d) for d in self._osr.level_downsamples)

    @property
    def associated_images(self) -> tuple[str, ...]:
        return tuple(self._osr.associated_images.keys())

    def read_associated(self, name: str) -> np.ndarray:
        if name not in self._osr.associated_images:
            raise KeyError(f"{self.name}: no associated image {name!r}")
        return _to_rgb(np.asarray(self._osr.associated_images[name]), self.n_threads)

    def _read(self, l0_xy: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        d = self._direct_levels.get(level)
        if d is not None and l0_xy[0] % d == 0 and l0_xy[1] % d == 0:
            assert self._direct is not None
            return self._direct._read(l0_xy, level, size)
        return self._read_openslide(l0_xy, level, size)

    def _read_openslide(
        self, l0_xy: tuple[int, int], level: int, size: tuple[int, int]
    ) -> np.ndarray:
        import openslide

        try:
            img = self._osr.read_region(l0_xy, level, size)
        except openslide.OpenSlideError as exc:
            raise SlideError(f"{self.path}: OpenSlide read failed: {exc}") from exc
        return _to_rgb(np.asarray(img), self.n_threads)

    def close(self) -> None:
        self._osr.close()
        if self._direct is not None:
            self._direct.close()


class TiffSlide(Slide):
    """A tiled or stripped (pyramidal) TIFF read with tifffile, for files OpenSlide rejects.

    Only the tiles a region touches are read and decoded, so memory does not grow with the slide.
    """

    format = "tiff"

    def __init__(self, path: Path, n_threads: int | None = None) -> None:
        import tifffile

        super().__init__(path, n_threads)
        try:
            with _capture_tifffile_errors() as errors:
                self._tf = tifffile.TiffFile(str(path))
                series = self._tf.series[0]
                self._pages = [lvl.keyframe for lvl in series.levels]
                _ = len(self._tf.pages)  # walks every IFD: a truncated chain is logged
        except IndexError as exc:  # no series, no page: tifffile found no image in the file
            raise SlideError(f"{path}: damaged or truncated TIFF (no readable image)") from exc
        except (tifffile.TiffFileError, OSError, ValueError) as exc:
            raise SlideError(f"{path}: damaged or truncated TIFF ({exc})") from exc
        if errors:
            self._tf.close()
            raise SlideError(f"{path}: damaged or truncated TIFF: {errors[0]}")
        size = path.stat().st_size
        for page in self._pages:
            if page.compression == 1 and not page.dataoffsets:
                continue
            ends = np.asarray(page.dataoffsets, np.int64) + np.asarray(
                page.databytecounts, np.int64
            )
            if len(ends) and int(ends.max()) > size:
                self._tf.close()
                raise SlideError(f"{path}: truncated: image data runs past the end of the file")
            if page.planarconfig != 1 and page.samplesperpixel > 1:
                self._tf.close()
                raise SlideError(f"{path}: planar (separate-plane) TIFFs are not supported")
        self._level_dimensions = [(int(p.imagewidth), int(p.imagelength)) for p in self._pages]
        desc = self._pages[0].description or ""
        self._mpp = _mpp_from_tiff(self._pages[0], desc)
        self._objective = _objective_from_description(desc)
        self.properties = {"tiff.ImageDescription": desc}
        self._lock = threading.Lock()
        self._cache: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()
        self._cache_bytes = 0

    def _segment(self, page: Any, index: int) -> np.ndarray:
        key = (page.index, index)
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
            fh = self._tf.filehandle
            fh.seek(page.dataoffsets[index])
            data = fh.read(page.databytecounts[index])
        # Decoding (JPEG, JPEG 2000, deflate) releases the GIL: threads decode in parallel.
        seg, _, _ = page.decode(data, index, jpegtables=page.jpegtables, jpegheader=page.jpegheader)
        if seg is None:
            raise SlideError(f"{self.path}: empty tile {index}")
        rgb = _to_rgb(np.asarray(seg).reshape(seg.shape[-3:]))
        rgb.setflags(write=False)
        with self._lock:
            if key not in self._cache:
                self._cache[key] = rgb
                self._cache_bytes += rgb.nbytes
            while self._cache_bytes > SEGMENT_CACHE_BYTES and len(self._cache) > 1:
                _, old = self._cache.popitem(last=False)
                self._cache_bytes -= old.nbytes
        return rgb

    def _read(self, l0_xy: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        page = self._pages[level]
        lw, lh = self._level_dimensions[level]
        lx, ly = _level_origin(l0_xy, self.level_downsamples[level])
        out = np.full((size[1], size[0], 3), 255, dtype=np.uint8)
        if page.is_tiled:
            th, tw = int(page.tilelength), int(page.tilewidth)
        else:
            th, tw = int(page.rowsperstrip or lh), lw
            th = min(th, lh)
        per_row = -(-lw // tw)
        r0, r1 = max(ly, 0) // th, min(ly + size[1], lh) - 1
        c0, c1 = max(lx, 0) // tw, min(lx + size[0], lw) - 1
        if r1 < 0 or c1 < 0:
            return out
        for r in range(r0, r1 // th + 1):
            for c in range(c0, c1 // tw + 1):
                seg = self._segment(page, r * per_row + c)
                seg = seg[: lh - r * th, : lw - c * tw]
                _paste(out, seg, c * tw - lx, r * th - ly)
        return out

    def close(self) -> None:
        self._tf.close()


class ImageSlide(Slide):
    """A plain JPEG/PNG/BMP/TIFF image held in memory as one level (no mpp)."""

    def __init__(self, path: Path, kind: str, n_threads: int | None = None) -> None:
        import cv2

        super().__init__(path, n_threads)
        self.format = kind
        arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if arr is None:
            raise SlideError(f"{path}: cannot decode this {kind.upper()} image (damaged?)")
        if arr.ndim == 3 and arr.shape[2] == 3:
            arr = cv2.cvtColor(arr, cv2.COLOR_BGR2RGB)
        elif arr.ndim == 3 and arr.shape[2] == 4:
            arr = cv2.cvtColor(arr, cv2.COLOR_BGRA2RGBA)
        try:
            self._image = _to_rgb(arr, n_threads)
        except ValueError as exc:
            raise SlideError(f"{path}: {exc}") from exc
        self._level_dimensions = [(self._image.shape[1], self._image.shape[0])]

    def _read(self, l0_xy: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        out = np.full((size[1], size[0], 3), 255, dtype=np.uint8)
        _paste(out, self._image, -l0_xy[0], -l0_xy[1])
        return out


_APERIO_MAG = re.compile(r"AppMag\s*=\s*([0-9.]+)")
_APERIO_MPP = re.compile(r"MPP\s*=\s*([0-9.]+)")


def _objective_from_description(desc: str) -> float | None:
    """Objective power from our synthetic JSON description or an Aperio description."""
    if desc.startswith("{"):
        try:
            meta = json.loads(desc).get("prostate_fast", {})
            if meta.get("objective_power"):
                return float(meta["objective_power"])
        except (ValueError, AttributeError):
            pass
    m = _APERIO_MAG.search(desc)
    return float(m.group(1)) if m else None


def _mpp_from_tiff(page: Any, desc: str) -> tuple[float, float] | None:
    """(x, y) µm per pixel from an Aperio description or the TIFF resolution tags."""
    m = _APERIO_MPP.search(desc)
    if m and float(m.group(1)) > 0:
        return float(m.group(1)), float(m.group(1))
    tags = page.tags
    unit = tags.get("ResolutionUnit")
    xr, yr = tags.get("XResolution"), tags.get("YResolution")
    if unit is None or xr is None or yr is None:
        return None
    per = {2: 25400.0, 3: 10000.0}.get(int(unit.value))
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


@dataclass
class _Sniff:
    kind: str | None = None
    head: bytes = field(default=b"")


def _sniff(path: Path) -> _Sniff:
    with open(path, "rb") as fh:
        head = fh.read(136)
    if head[:4] in _TIFF_MAGICS:
        return _Sniff("tiff", head)
    for magic, kind in _IMAGE_MAGICS.items():
        if head.startswith(magic):
            return _Sniff(kind, head)
    if len(head) >= 132 and head[128:132] == b"DICM":
        return _Sniff("dicom", head)
    return _Sniff(None, head)


def open_slide(path: str | Path, *, n_threads: int | None = None) -> Slide:
    """Open a whole-slide image or plain image for reading.

    Parameters
    ----------
    path : str or pathlib.Path
        A slide file: anything OpenSlide reads (SVS, NDPI, VMS, SCN, MRXS, Philips TIFF, BIF,
        generic tiled TIFF, DICOM), another tiled/pyramidal TIFF, or a JPEG/PNG/BMP image.
    n_threads : int, optional
        Threads for pixel conversion (None = all cores).

    Returns
    -------
    Slide

    Raises
    ------
    SlideError
        Missing path, a directory, a zero-byte file, a truncated or damaged file, or a file that is
        no slide or image. The message names the path.

    Notes
    -----
    Opening checks the file's structure (every TIFF tile must lie inside the file) and decodes a
    small region of the smallest level, so a damaged file fails here rather than mid-run.
    """
    p = Path(path)
    if not p.exists():
        raise SlideError(f"{p}: no such file")
    if p.is_dir():
        raise SlideError(f"{p}: is a directory, not a slide file")
    try:
        if p.stat().st_size == 0:
            raise SlideError(f"{p}: empty file (0 bytes)")
        sniff = _sniff(p)
    except PermissionError as exc:
        raise SlideError(f"{p}: permission denied") from exc
    slide = _open_any(p, sniff, n_threads)
    try:
        lw, lh = slide.level_dimensions[-1]
        slide.read_region((0, 0), slide.level_count - 1, (min(lw, 64), min(lh, 64)))
    except SlideError:
        slide.close()
        raise
    return slide


def _open_any(p: Path, sniff: _Sniff, n_threads: int | None) -> Slide:
    import openslide

    vendor = None
    try:
        vendor = openslide.OpenSlide.detect_format(str(p))
    except openslide.OpenSlideError:
        vendor = None
    if vendor is not None:
        # TIFF-based formats: TiffSlide checks the structure (truncation, a broken IFD chain) and
        # then serves as the direct reader where it matches OpenSlide exactly.
        direct = TiffSlide(p, n_threads) if sniff.kind == "tiff" else None
        return OpenSlideSlide(p, vendor, n_threads, direct)
    if sniff.kind == "tiff":
        ts = TiffSlide(p, n_threads)
        if ts.level_count == 1 and not ts._pages[0].is_tiled:
            ts.close()
            return ImageSlide(p, "tiff", n_threads)
        return ts
    if sniff.kind in ("jpeg", "png", "bmp"):
        return ImageSlide(p, sniff.kind, n_threads)
    if p.suffix.lower() in {".svs", ".ndpi", ".scn", ".mrxs", ".bif", ".vms", ".tif", ".tiff"}:
        raise SlideError(
            f"{p}: not a valid {p.suffix.lstrip('.').upper()} slide "
            f"(unrecognised content, starts with {sniff.head[:8]!r})"
        )
    raise SlideError(f"{p}: not a slide or image format prostate-fast can read")
