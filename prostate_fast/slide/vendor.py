"""Slides read by OpenSlide (every vendor format it supports), with tifffile where it is exact.

OpenSlide composes regions through premultiplied ARGB buffers (about 9 megapixels per second).
For the vendors in :data:`~prostate_fast.slide.tiff.DIRECT_VENDORS` (generic tiled TIFF, Aperio
SVS) the levels are plain TIFF pages that the package's TIFF decoder
(:class:`~prostate_fast.slide.tiff.TiffLevels`) reads several times faster. Whether it may is
decided once, at open, per level, by comparing one region decoded both ways (:meth:`_prove_levels`):

* a level whose pixels are equal is *exact*: strips in level pixels
  (:class:`~prostate_fast.slide.strips.StripReader`) are decoded directly;
* an exact level whose downsample is a whole number ``d`` that divides level 0 evenly is also
  *direct*: regions whose level-0 corner is a multiple of ``d`` are decoded directly. Elsewhere
  OpenSlide interpolates sub-pixel offsets, so OpenSlide reads them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import SlideError
from .core import Slide
from .pixels import to_rgb
from .tiff import DIRECT_VENDORS, TiffLevels, mpp_from_tiff, objective_from_description

__all__ = ["OpenSlideSlide"]

#: Edge of the region compared at open (level pixels).
_PROOF_SIZE = 96


class OpenSlideSlide(Slide):
    """A slide read by OpenSlide (every vendor format it supports).

    Parameters
    ----------
    path : pathlib.Path
        The slide file.
    vendor : str
        What ``openslide.OpenSlide.detect_format`` said (becomes :attr:`format`).
    n_threads : int, optional
        Threads for pixel conversion (None = all cores).
    tiff : TiffLevels, optional
        The file opened by the TIFF decoder (TIFF-based formats). Kept, and owned, when the vendor is
        in ``DIRECT_VENDORS`` and at least one level decodes exactly as OpenSlide; closed otherwise.
    """

    def __init__(
        self,
        path: Path,
        vendor: str,
        n_threads: int | None = None,
        tiff: TiffLevels | None = None,
    ) -> None:
        import openslide

        super().__init__(path, n_threads)
        self._tiff: TiffLevels | None = None
        self._direct_levels: dict[int, int] = {}
        self._exact_levels: frozenset[int] = frozenset()
        try:
            self._osr = openslide.OpenSlide(str(path))
        except openslide.OpenSlideError as exc:
            if tiff is not None:
                tiff.close()
            raise SlideError(f"{path}: OpenSlide cannot open it ({vendor}): {exc}") from exc
        self.format = vendor
        self.properties = dict(self._osr.properties)
        self._level_dimensions = [tuple(map(int, d)) for d in self._osr.level_dimensions]
        mx = self.properties.get("openslide.mpp-x")
        my = self.properties.get("openslide.mpp-y")
        desc = self.properties.get("tiff.ImageDescription", "")
        if mx and my and float(mx) > 0 and float(my) > 0:
            self._mpp, self._mpp_source = (float(mx), float(my)), "OpenSlide properties"
        elif tiff is not None:  # e.g. resolution tags in inches, which OpenSlide ignores
            self._mpp, self._mpp_source = mpp_from_tiff(tiff.pages[0], desc)
        obj = self.properties.get("openslide.objective-power")
        self._objective = float(obj) if obj else objective_from_description(desc)
        if tiff is not None and vendor in DIRECT_VENDORS:
            self._prove_levels(tiff)
        if self._exact_levels:
            self._tiff = tiff
        elif tiff is not None:
            tiff.close()

    def _prove_levels(self, tiff: TiffLevels) -> None:
        """Compare one region per level, decoded by ``tiff`` and by OpenSlide; keep the equal ones.

        Where a level's downsample ``d`` is whole, the region is near the middle at a level-0
        corner that is a multiple of ``d``; elsewhere it is the level's origin, the one corner
        where OpenSlide maps level-0 coordinates onto level pixels without interpolating.
        """
        w0, h0 = self._level_dimensions[0]
        exact = set()
        for level, (lw, lh) in enumerate(self._level_dimensions):
            if level >= tiff.level_count or tiff.level_dimensions[level] != (lw, lh):
                continue
            d = round(self.level_downsamples[level])
            whole = abs(self.level_downsamples[level] - d) <= 1e-9 and (w0, h0) == (lw * d, lh * d)
            lx, ly = ((lw // 2 // 64) * 64, (lh // 2 // 64) * 64) if whole else (0, 0)
            size = (min(_PROOF_SIZE, lw), min(_PROOF_SIZE, lh))
            try:
                mine = tiff.read(level, lx, ly, size)
                same = np.array_equal(mine, self._read_openslide((lx * d, ly * d), level, size))
            except Exception:  # noqa: BLE001 - any failure: keep OpenSlide for this level
                same = False
            if same:
                exact.add(level)
                if whole:
                    self._direct_levels[level] = d
        self._exact_levels = frozenset(exact)

    @property
    def level_downsamples(self) -> tuple[float, ...]:
        return tuple(float(d) for d in self._osr.level_downsamples)

    @property
    def associated_images(self) -> tuple[str, ...]:
        return tuple(self._osr.associated_images.keys())

    def read_associated(self, name: str) -> np.ndarray:
        if name not in self._osr.associated_images:
            raise KeyError(f"{self.name}: no associated image {name!r}")
        return to_rgb(np.asarray(self._osr.associated_images[name]), self.n_threads)

    def _read(self, l0_xy: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        d = self._direct_levels.get(level)
        if d is not None and l0_xy[0] % d == 0 and l0_xy[1] % d == 0:
            assert self._tiff is not None
            return self._tiff.read(level, l0_xy[0] // d, l0_xy[1] // d, size)
        return self._read_openslide(l0_xy, level, size)

    def _read_openslide(
        self, l0_xy: tuple[int, int], level: int, size: tuple[int, int]
    ) -> np.ndarray:
        import openslide

        try:
            img = self._osr.read_region(l0_xy, level, size)
        except openslide.OpenSlideError as exc:
            raise SlideError(f"{self.path}: OpenSlide read failed: {exc}") from exc
        return to_rgb(np.asarray(img), self.n_threads)

    def _level_decoder(self, level: int) -> TiffLevels | None:
        return self._tiff if level in self._exact_levels else None

    def close(self) -> None:
        self._osr.close()
        if self._tiff is not None:
            self._tiff.close()
