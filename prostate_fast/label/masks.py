"""Labels from a label mask: an image of integer class codes at any downsample of level 0.

The mask's downsample is inferred from its size (a whole factor with floor or ceiling rounding, or
one consistent fractional factor per axis); codes map to classes through the
:class:`~.classes.ClassMap` (code 0, glass, marks nothing by default). The coverage of each class
is the exact area average of its code over each tile, from integral images of horizontal bands of
about 8 M mask pixels (bounded memory whatever the mask size); with ``rule="centre"`` the code
under the tile's centre decides. :func:`mask_coverage` is what
:func:`~prostate_fast.label.label_tiles` runs.

Size limits: a TIFF mask (striped or tiled, any size: a level-0 mask of a 40,000 x 30,000 slide is
1.2 gigapixels) is read by strips with tifffile, a band at a time, without decoding it whole; its
strips or tiles may each take up to :data:`~prostate_fast.slide.tiff.MAX_SEGMENT_BYTES` decoded.
A PNG/BMP mask is decoded whole by OpenCV, so its header is checked first: decoding must stay
under :data:`~prostate_fast.slide.headers.MAX_DECODE_BYTES` (1 GiB; an 8-bit grey mask up to 268
megapixels, 16,384 px square); a larger one is refused with a line that says to save it as TIFF.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import AnnotationError, SlideError
from ..slide import Slide
from ..slide.headers import check_decode, image_header, sniff
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

    A colour (RGB) mask, as PANDA's TIFFs, gives the codes of its red channel when green and blue
    are zero (or equal to red, a grey image saved as RGB); an array mask is read as RGB.

    Raises AnnotationError naming the file when the mask cannot be read, is too large to decode
    whole (a PNG; see the module docstring), is another colour image, is not 2-D integer codes, fits
    the slide at no downsample, or holds a code the class map does not know.
    """
    src = _open_mask(annotation)
    try:
        dx, dy = _mask_downsample(src.shape, slide, src.name)
        present = src.codes()
        unknown = [int(c) for c in present if int(c) not in cmap.codes]
        if unknown:
            raise AnnotationError(_unknown_codes(src.name, unknown, cmap))
        xy = grid.l0_xy.astype(np.float64)
        cover = _area_cover(src, present, cmap, xy, grid.l0_tile_size, dx, dy)
        inside = np.zeros_like(cover, bool)
        if centre:
            inside = _centre_hits(src, cmap, xy, grid.l0_tile_size, dx, dy)
    finally:
        src.close()
    path = str(annotation) if isinstance(annotation, str | Path) else None
    return TileCoverage(np.clip(cover, 0.0, 1.0), inside, "mask", path)


#: Mask pixels per band read at once.
_BAND_PIXELS = 8 << 20


class _MaskRows:
    """A label mask read by rows: an array in memory, or a TIFF decoded strip by strip."""

    def __init__(self, name: str, shape: tuple[int, int], arr: np.ndarray | None = None) -> None:
        self.name, self.shape, self._arr = name, shape, arr

    def rows(self, r0: int, r1: int) -> np.ndarray:
        """Codes of mask rows [r0, r1), (r1 - r0, width) integers."""
        assert self._arr is not None
        return self._arr[r0:r1]

    def bands(self) -> list[tuple[int, int]]:
        """Row ranges of about :data:`_BAND_PIXELS` pixels covering the mask."""
        h, w = self.shape
        step = max(1, _BAND_PIXELS // max(w, 1))
        return [(r, min(h, r + step)) for r in range(0, h, step)]

    def codes(self) -> np.ndarray:
        """The distinct codes of the mask, ascending."""
        found: set[int] = set()
        for r0, r1 in self.bands():
            band = self.rows(r0, r1)
            if band.dtype.kind == "u" and band.dtype.itemsize <= 2:  # a count is faster
                found.update(np.flatnonzero(np.bincount(band.ravel())).tolist())
            else:
                found.update(np.unique(band).tolist())
        return np.array(sorted(found), np.int64)

    def close(self) -> None:
        """Release the file (in-memory masks hold none)."""


class _TiffMaskRows(_MaskRows):
    """A TIFF label mask decoded a strip (or tile row) at a time with tifffile."""

    def __init__(self, path: Path) -> None:
        from ..slide.tiff import TiffLevels

        try:
            self._levels = TiffLevels(path)  # structure and strip-size checks
        except SlideError as exc:
            raise AnnotationError(f"label mask: {exc}") from None
        page = self._levels.pages[0]
        if (
            page.dtype is None
            or page.dtype.kind not in "ui"
            or page.samplesperpixel not in (1, 3, 4)
        ):
            self._levels.close()
            what = f"{page.samplesperpixel} samples of {page.dtype}"
            raise AnnotationError(f"{path}: a label mask must be a 2-D integer image, got {what}")
        super().__init__(str(path), (int(page.imagelength), int(page.imagewidth)))
        self._page = page

    def rows(self, r0: int, r1: int) -> np.ndarray:
        page, (h, w) = self._page, self.shape
        th, tw, per_row = self._levels._geometry(0)
        out = np.empty((r1 - r0, w), page.dtype)
        for r in range(r0 // th, -(-r1 // th)):
            for c in range(per_row):
                i = r * per_row + c
                data = self._levels._bytes(int(page.dataoffsets[i]), int(page.databytecounts[i]))
                try:
                    seg, _, _ = page.decode(data, i, jpegtables=page.jpegtables)
                except (RuntimeError, ValueError, OSError) as exc:  # imagecodecs errors
                    raise AnnotationError(f"{self.name}: cannot decode strip {i} ({exc})") from None
                if seg is None:
                    raise AnnotationError(f"{self.name}: empty strip {i}")
                seg = np.asarray(seg).reshape(seg.shape[-3:])
                seg = seg[:, :, 0] if seg.shape[2] == 1 else _red_codes(seg, self.name, 0)
                a, b = max(r0, r * th), min(r1, r * th + th, h)
                x1 = min(w, c * tw + tw)
                out[a - r0 : b - r0, c * tw : x1] = seg[a - r * th : b - r * th, : x1 - c * tw]
        return out

    def close(self) -> None:
        self._levels.close()


def _unknown_codes(name: object, unknown: list[int], cmap: ClassMap) -> str:
    """The error for mask codes the class map does not know, with a --mask-codes example."""
    known = [
        f"{c}={'ignore' if i is None else cmap.names[i]}" for c, i in sorted(cmap.codes.items())
    ]
    example = ",".join(known + [f"{c}=CLASS" for c in unknown[:3]])
    return (
        f"{name}: mask codes {unknown[:10]} are not in the code map {sorted(cmap.codes)}; "
        f"say what each code means with --mask-codes, e.g. --mask-codes '{example}' (CLASS: a "
        "class name or ignore), or name a scheme: --mask-scheme panda-radboud|panda-karolinska"
    )


def _open_mask(annotation: object) -> _MaskRows:
    if isinstance(annotation, np.ndarray):
        arr = _mask_plane(annotation, "<array>")
        return _MaskRows("<array>", arr.shape, arr)  # type: ignore[arg-type]
    p = Path(annotation)  # type: ignore[arg-type]
    if not p.is_file():
        raise AnnotationError(f"{p}: no such mask file")
    kind, _ = sniff(p)
    if kind == "tiff":
        return _TiffMaskRows(p)
    arr = _mask_plane(_decode_flat(p, kind), str(p), red=2)  # OpenCV decodes BGR
    return _MaskRows(str(p), arr.shape, arr)  # type: ignore[arg-type]


def _decode_flat(p: Path, kind: str | None) -> np.ndarray:
    """A PNG/BMP/JPEG mask decoded whole, after its header showed that stays under the limit."""
    import cv2

    try:
        if kind in ("png", "bmp", "jpeg"):
            check_decode(p, kind, image_header(p, kind), "label mask")
        arr = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
    except SlideError as exc:
        raise AnnotationError(str(exc)) from None
    except cv2.error as exc:
        raise AnnotationError(f"{p}: OpenCV cannot decode this label mask ({exc.err})") from None
    if arr is None:
        raise AnnotationError(f"{p}: cannot decode this label mask (PNG or TIFF expected)")
    return arr


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


def _red_codes(arr: np.ndarray, name: str, red: int) -> np.ndarray:
    """The codes of an (h, w, 3 or 4) mask: its red channel (index ``red``: 0 for RGB, 2 for
    OpenCV's BGR), when the other two colour channels are zero everywhere (a PANDA mask keeps its
    code in red) or equal to it (a grey image saved as RGB); alpha is ignored."""
    codes, others = arr[:, :, red], arr[:, :, [1, 2 - red]]
    if not ((others == 0).all() or (others == codes[:, :, None]).all()):
        raise AnnotationError(
            f"{name}: a colour image is no label mask (integer codes in the red channel, green "
            "and blue zero or equal to it); use it as a painted copy instead"
        )
    return codes


def _mask_plane(arr: np.ndarray, name: str, red: int = 0) -> np.ndarray:
    """The 2-D integer codes of a decoded mask (an RGB mask: :func:`_red_codes`)."""
    if arr.ndim == 3 and arr.shape[2] in (3, 4):
        arr = _red_codes(arr, name, red)
    if arr.ndim != 2 or arr.dtype.kind not in "ui" or min(arr.shape) < 1:
        raise AnnotationError(f"{name}: a label mask must be a 2-D integer image, got {arr.shape}")
    return arr


def _area_cover(
    src: _MaskRows,
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
    mh, mw = src.shape
    order = np.argsort(xy[:, 1], kind="stable")
    rows_per_chunk = max(1, _BAND_PIXELS // max(mw, 1))
    start = 0
    while start < n:
        # tiles whose mask rows fit in one band of about 8 M mask pixels
        top = xy[order[start], 1] / dy
        stop = int(np.searchsorted(xy[order, 1] / dy, top + rows_per_chunk, "right"))
        stop = max(stop, start + 1)
        tiles = order[start:stop]
        r0 = int(np.clip(np.floor(top), 0, mh))
        r1 = int(np.clip(np.ceil((xy[tiles, 1].max() + t) / dy), r0, mh))
        band = src.rows(r0, r1)
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
    src: _MaskRows, cmap: ClassMap, xy: np.ndarray, t: float, dx: float, dy: float
) -> np.ndarray:
    """(n, n_classes) bool: the code under each tile's centre maps to the class."""
    inside = np.zeros((len(xy), len(cmap.names)), bool)
    mh, mw = src.shape
    cx = np.clip(((xy[:, 0] + t / 2) / dx).astype(np.int64), 0, mw - 1)
    cy = np.clip(((xy[:, 1] + t / 2) / dy).astype(np.int64), 0, mh - 1)
    codes = np.zeros(len(xy), np.int64)
    for r0, r1 in src.bands():
        sel = np.flatnonzero((cy >= r0) & (cy < r1))
        if len(sel):
            codes[sel] = src.rows(r0, r1)[cy[sel] - r0, cx[sel]]
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
