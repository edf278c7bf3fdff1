"""Slides held in memory: plain images (:class:`ImageSlide`) and arrays (:class:`ArraySlide`).

The 2018 study worked on a 20x JPEG exported from the scanner file; :class:`ImageSlide` reads such
JPEG/PNG/BMP images (and single-page TIFFs tifffile cannot decode by strips) with OpenCV as one
level without an mpp, after checking from the header that decoding it whole stays under
:data:`~.headers.MAX_DECODE_BYTES` (a larger JPEG gets a reduced level instead).
:class:`ArraySlide` wraps an in-memory array, with an optional area-averaged pyramid, for tests and
synthetic regions.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import SlideError
from .core import Slide
from .headers import MAX_DECODE_BYTES, check_decode, image_header
from .pixels import level_origin, paste, to_rgb, white

__all__ = ["ArraySlide", "ImageSlide"]


class ImageSlide(Slide):
    """A plain JPEG/PNG/BMP/TIFF image decoded whole with OpenCV (no mpp).

    The size is read from the header first (:func:`~.headers.image_header`): an image whose whole
    decoding would exceed :data:`~.headers.MAX_DECODE_BYTES` is refused at open, except a JPEG,
    which is then decoded at 1/2, 1/4 or 1/8 (libjpeg's DCT scaling, the largest that fits) as a
    second level (of at most a quarter of the limit): ``info``, the tissue mask and thumbnails work, and reading level 0 raises a
    :class:`SlideError` that says why.
    """

    def __init__(self, path: Path, kind: str, n_threads: int | None = None) -> None:
        super().__init__(path, n_threads)
        self.format = kind
        header = image_header(path, kind)
        self._too_big: str | None = None
        try:
            check_decode(path, kind, header)
        except SlideError as exc:
            if kind != "jpeg":
                raise
            self._too_big = str(exc)
        if self._too_big is None:
            self._levels = [self._decode(_cv2_flag("unchanged"))]
            self._level_dimensions = [(self._levels[0].shape[1], self._levels[0].shape[0])]
            return
        w, h = header.width, header.height
        # the largest reduction that keeps the decoder's working copies well under the limit
        fits = [r for r in (2, 4) if -(-w // r) * -(-h // r) * 3 <= MAX_DECODE_BYTES // 4]
        r = fits[0] if fits else 8
        reduced = self._decode(_cv2_flag(f"reduced{r}"))
        self._levels = [None, reduced]
        self._level_dimensions = [(w, h), (reduced.shape[1], reduced.shape[0])]

    def _decode(self, flag: int) -> np.ndarray:
        import cv2

        try:
            arr = cv2.imread(str(self.path), flag)
        except cv2.error as exc:  # a size OpenCV refuses (its own pixel limit)
            raise SlideError(f"{self.path}: OpenCV cannot decode it ({exc.err})") from None
        if arr is None:
            raise SlideError(
                f"{self.path}: cannot decode this {self.format.upper()} image (damaged?)"
            )
        if arr.ndim == 3 and arr.shape[2] == 3 and arr.dtype == np.uint8:
            return cv2.cvtColor(arr, cv2.COLOR_BGR2RGB, dst=arr)  # in place: no second copy
        if arr.ndim == 3 and arr.shape[2] == 3:
            arr = arr[:, :, ::-1]
        elif arr.ndim == 3 and arr.shape[2] == 4:
            arr = arr[:, :, [2, 1, 0, 3]]
        out = np.empty(arr.shape[:2] + (3,), np.uint8)
        rows = max(1, (16 << 20) // max(1, arr.shape[1] * 4))
        try:
            for r0 in range(0, arr.shape[0], rows):  # by bands: one full-size copy at most
                out[r0 : r0 + rows] = to_rgb(
                    np.ascontiguousarray(arr[r0 : r0 + rows]), self.n_threads
                )
        except ValueError as exc:
            raise SlideError(f"{self.path}: {exc}") from exc
        return out

    def _read(self, l0_xy: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        img = self._levels[level]
        if img is None:
            raise SlideError(
                f"{self._too_big}; only its 1/{self.level_downsamples[1]:.0f} level is read"
            )
        lx, ly = level_origin(l0_xy, self.level_downsamples[level])
        out = white(*size)
        paste(out, img, -lx, -ly)
        return out


def _cv2_flag(name: str) -> int:
    """The ``cv2.imread`` flag: ``unchanged`` or ``reduced2``/``reduced4``/``reduced8`` (colour)."""
    import cv2

    return {
        "unchanged": cv2.IMREAD_UNCHANGED,
        "reduced2": cv2.IMREAD_REDUCED_COLOR_2,
        "reduced4": cv2.IMREAD_REDUCED_COLOR_4,
        "reduced8": cv2.IMREAD_REDUCED_COLOR_8,
    }[name]


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
