"""Slides held in memory: plain images (:class:`ImageSlide`) and arrays (:class:`ArraySlide`).

The 2018 study worked on a 20x JPEG exported from the scanner file; :class:`ImageSlide` reads such
JPEG/PNG/BMP images (and single-page stripped TIFFs) with OpenCV as one level without an mpp.
:class:`ArraySlide` wraps an in-memory array, with an optional area-averaged pyramid, for tests and
synthetic regions.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import SlideError
from .core import Slide
from .pixels import level_origin, paste, to_rgb, white

__all__ = ["ArraySlide", "ImageSlide"]


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
            self._image = to_rgb(arr, n_threads)
        except ValueError as exc:
            raise SlideError(f"{path}: {exc}") from exc
        self._level_dimensions = [(self._image.shape[1], self._image.shape[0])]

    def _read(self, l0_xy: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        out = white(*size)
        paste(out, self._image, -l0_xy[0], -l0_xy[1])
        return out


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
    name : str, optional
        A file name to report (``<array>`` when not given).
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
        base = to_rgb(np.asarray(image))
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
        lx, ly = level_origin(l0_xy, self.level_downsamples[level])
        out = white(*size)
        paste(out, self._levels[level], -lx, -ly)
        return out
