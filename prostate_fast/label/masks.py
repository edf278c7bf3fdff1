"""Labels from a label mask: an image of integer class codes at any downsample of level 0.

The mask's downsample is inferred from its size (a whole factor with floor or ceiling rounding, or
one consistent fractional factor per axis); codes map to classes through the
:class:`~.classes.ClassMap` (code 0, glass, marks nothing by default). The coverage of each class
is the exact area average of its code over each tile, from integral images of horizontal bands of
about 8 M mask pixels (bounded memory whatever the mask size); with ``rule="centre"`` the code
under the tile's centre decides. :func:`mask_coverage` is what
:func:`~prostate_fast.label.label_tiles` runs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import AnnotationError
from ..slide import Slide
from ..tile import TileGrid
from .classes import ClassMap
from .table import TileCoverage

__all__ = ["mask_coverage"]


def mask_coverage(
    slide: Slide,
    annotation: str | Path | np.ndarray,
    grid: TileGrid,
    cmap: ClassMap,
    *,
    centre: bool,
) -> TileCoverage:
    """Share of each tile of ``grid`` every class of the label mask ``annotation`` covers.

    Raises AnnotationError naming the file when the mask cannot be read, is a colour image, is
    not a 2-D integer image, fits the slide at no downsample, or holds a code the class map does
    not know.
    """
    arr, name = _read_mask(annotation)
    arr = _mask_plane(arr, name)
    dx, dy = _mask_downsample(arr.shape, slide, name)
    present = np.unique(arr)
    unknown = [int(c) for c in present if int(c) not in cmap.codes]
    if unknown:
        raise AnnotationError(
            f"{name}: mask codes {unknown[:10]} are not in the code map {sorted(cmap.codes)}"
        )
    xy = grid.l0_xy.astype(np.float64)
    cover = _area_cover(arr, present, cmap, xy, grid.l0_tile_size, dx, dy)
    inside = np.zeros_like(cover, bool)
    if centre:
        inside = _centre_hits(arr, cmap, xy, grid.l0_tile_size, dx, dy)
    path = str(annotation) if isinstance(annotation, str | Path) else None
    return TileCoverage(np.clip(cover, 0.0, 1.0), inside, "mask", path)


def _read_mask(annotation: object) -> tuple[np.ndarray, str]:
    if isinstance(annotation, np.ndarray):
        return annotation, "<array>"
    import cv2

    p = Path(annotation)  # type: ignore[arg-type]
    if not p.is_file():
        raise AnnotationError(f"{p}: no such mask file")
    arr = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise AnnotationError(f"{p}: cannot decode this label mask (PNG or TIFF expected)")
    return arr, str(p)


def _mask_downsample(shape: tuple[int, int], slide: Slide, name: str) -> tuple[float, float]:
    mh, mw = shape
    w, h = slide.dimensions
    d = max(1, round(w / mw))
    if mw in (w // d, -(-w // d)) and mh in (h // d, -(-h // d)):
        return float(d), float(d)
    dx, dy = w / mw, h / mh
    if abs(h / dx - mh) <= 1 and abs(w / dy - mw) <= 1:
        return dx, dy
    raise AnnotationError(
        f"{name}: label mask is {mw} x {mh} px, which is no consistent downsample of the slide "
        f"{slide.name} ({w} x {h} px at level 0)"
    )


def _mask_plane(arr: np.ndarray, name: str) -> np.ndarray:
    """The 2-D integer codes of a decoded mask (a grey image saved as RGB is taken once)."""
    if arr.ndim == 3 and arr.shape[2] in (3, 4):
        if not (arr[:, :, :1] == arr[:, :, 1:3]).all():
            raise AnnotationError(
                f"{name}: a colour image is no label mask (integer codes); "
                "use it as a painted copy instead"
            )
        arr = arr[:, :, 0]
    if arr.ndim != 2 or arr.dtype.kind not in "ui" or min(arr.shape) < 1:
        raise AnnotationError(f"{name}: a label mask must be a 2-D integer image, got {arr.shape}")
    return arr


def _area_cover(
    arr: np.ndarray,
    present: np.ndarray,
    cmap: ClassMap,
    xy: np.ndarray,
    t: float,
    dx: float,
    dy: float,
) -> np.ndarray:
    """(n, n_classes) exact area share of each class's codes over each tile (not clipped)."""
    import cv2

    n, k = len(xy), len(cmap.names)
    cover = np.zeros((n, k), np.float64)
    mh, mw = arr.shape
    order = np.argsort(xy[:, 1], kind="stable")
    rows_per_chunk = max(1, (8 << 20) // max(mw, 1))
    start = 0
    while start < n:
        # tiles whose mask rows fit in one band of about 8 M mask pixels
        top = xy[order[start], 1] / dy
        stop = int(np.searchsorted(xy[order, 1] / dy, top + rows_per_chunk, "right"))
        stop = max(stop, start + 1)
        tiles = order[start:stop]
        r0 = int(np.clip(np.floor(top), 0, mh))
        r1 = int(np.clip(np.ceil((xy[tiles, 1].max() + t) / dy), r0, mh))
        band = arr[r0:r1]
        for code, cls in cmap.codes.items():
            if cls is None or code not in present or band.size == 0:
                continue
            plane = (band == code).astype(np.uint8)
            integral = cv2.integral(plane, sdepth=cv2.CV_64F)
            u0, u1 = xy[tiles, 0] / dx, (xy[tiles, 0] + t) / dx
            v0, v1 = xy[tiles, 1] / dy - r0, (xy[tiles, 1] + t) / dy - r0
            area = _box_sum(integral, u0, v0, u1, v1) * (dx * dy) / (t * t)
            cover[tiles, cls] += area
        start = stop
    return cover


def _centre_hits(
    arr: np.ndarray, cmap: ClassMap, xy: np.ndarray, t: float, dx: float, dy: float
) -> np.ndarray:
    """(n, n_classes) bool: the code under each tile's centre maps to the class."""
    inside = np.zeros((len(xy), len(cmap.names)), bool)
    mh, mw = arr.shape
    cx = np.clip(((xy[:, 0] + t / 2) / dx).astype(np.int64), 0, mw - 1)
    cy = np.clip(((xy[:, 1] + t / 2) / dy).astype(np.int64), 0, mh - 1)
    codes = arr[cy, cx]
    for code, cls in cmap.codes.items():
        if cls is not None:
            inside[codes == code, cls] = True
    return inside


def _box_sum(
    integral: np.ndarray, u0: np.ndarray, v0: np.ndarray, u1: np.ndarray, v1: np.ndarray
) -> np.ndarray:
    """Exact sum of a piecewise-constant image over fractional boxes, from its integral image.

    The integral of a pixel-wise constant image is bilinear inside each pixel, so bilinear
    interpolation of the integral image at the box corners is exact.
    """
    hh, ww = integral.shape[0] - 1, integral.shape[1] - 1

    def at(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        u = np.clip(u, 0.0, ww)
        v = np.clip(v, 0.0, hh)
        i = np.minimum(np.floor(u).astype(np.int64), max(ww - 1, 0))
        j = np.minimum(np.floor(v).astype(np.int64), max(hh - 1, 0))
        fu, fv = u - i, v - j
        i1, j1 = np.minimum(i + 1, ww), np.minimum(j + 1, hh)
        top = integral[j, i] * (1 - fu) + integral[j, i1] * fu
        bottom = integral[j1, i] * (1 - fu) + integral[j1, i1] * fu
        return top * (1 - fv) + bottom * fv

    return at(u1, v1) - at(u0, v1) - at(u1, v0) + at(u0, v0)
