"""Find tissue on a slide at low resolution, and measure how white tiles are.

Tissue mask
-----------
:func:`detect_tissue` reads the slide at about 1/32 of level 0 (16 µm per pixel at 20x) and calls
:func:`tissue_mask_from_rgb`, which works on any RGB image:

1. **Pixel classes**: *dark* pixels (brightest channel < ``DARK_MAX``: black borders and marker)
   and *pen ink* are never tissue. Ink: chroma >= ``PEN_MIN_CHROMA``, hue outside the usual H&E
   band ``HE_HUE_RANGE`` (240° to 345°), and either a hue no stain takes (``NEVER_STAIN_HUE``) or
   flat (``INK_MAX_STD``): bluish H-heavy and red E-heavy stains leave the band too, but nuclei
   and fibres texture them, while marker ink is flat.
2. **Score and threshold.** The score is the chroma ``max(R, G, B) - min(R, G, B)``: it ignores
   every grey, so glass, grey scan-area borders, black borders and black ink score near 0 while
   stain scores 20 to 150. The threshold is Otsu's over the other pixels, clipped to
   ``OTSU_RANGE`` (Otsu splits noise on an all-glass or all-tissue image), with hysteresis (faint
   stain joined to stain above the threshold counts), or fixed (``method="fixed"``).
3. **Morphology**: closing (``close_um``), filling of holes under ``min_hole_um2`` (lumina,
   small tears), removal of objects under ``min_object_um2``, of objects bordered mostly by ink
   (the fringe of a marker stroke) and of objects darker on average than ``DARK_OBJECT_MAX``.
4. **Regions**: connected sections (fragments closer than ``merge_um`` join) are numbered 1, 2,
   ... along the direction in which they are spread (top to bottom for cores laid one above the
   other, else left to right, by box centre), so a user can keep one biopsy core or all.

Dark-field slides (fluorescence: bright stain on black) are recognised when at least half of the
image is dark and under 5 % is glass: ``background="auto"`` then warns and detects bright objects
(score = brightest channel, no pen rejection), so the black background is neither silently taken
for a scanner border nor called tissue. ``background="bright"``/``"dark"`` forces either.

White fraction
--------------
:func:`white_fraction`: share of white pixels (``min(R, G, B) >= 200``, ``max - min <= 18``; integer
tests, so kernel and baseline agree bit for bit) per tile. Bare glass is 225 to 245 with a spread
under 10; the palest stain (loose stroma, fat septa) spreads 20 or more.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from ._util import resolve_threads
from .slide.core import Slide
from .slide.pixels import to_rgb as _to_rgb

__all__ = [
    "DEFAULT_MASK_DOWNSAMPLE",
    "TILE_TISSUE_SHARE",
    "WHITE_MAX_SATURATION",
    "WHITE_MIN_BRIGHTNESS",
    "TissueMask",
    "TissueRegion",
    "detect_tissue",
    "tissue_mask_from_rgb",
    "white_fraction",
]

#: Level-0 pixels per mask pixel when none is asked for (16 µm per mask pixel at 20x).
DEFAULT_MASK_DOWNSAMPLE = 32.0
#: µm per pixel assumed by :func:`tissue_mask_from_rgb` when ``mpp`` is not given.
DEFAULT_MASK_MPP = 16.0
#: White pixel: smallest channel at least this bright ...
WHITE_MIN_BRIGHTNESS = 200
#: ... and channel spread (max - min) at most this.
WHITE_MAX_SATURATION = 18
#: Pixels whose brightest channel is below this are dark (scanner border, black ink), never tissue.
DARK_MAX = 60
#: Objects whose mean brightest channel is below this are ink (dark marker, ink overlaps), not H&E.
DARK_OBJECT_MAX = 110
#: Pixels with at least this chroma have their hue checked against the H&E band.
PEN_MIN_CHROMA = 10
#: Usual hue band (degrees, HSV) of H&E; chromatic pixels outside it may be ink (module docstring).
HE_HUE_RANGE = (240, 345)
#: Flat: std of the brightest channel over the stained pixels of the window under this (real pen
#: tiles: median std under 4; blue-violet H&E pixels in ucsb_breast: over 8 for 90 %).
INK_WINDOW = 15
INK_MAX_STD = 6
#: Hues (degrees) no H&E stain takes, textured or not: yellow, green, cyan (ink, tinted glass).
NEVER_STAIN_HUE = (30, 180)
#: Otsu's threshold on chroma is clipped to this range.
OTSU_RANGE = (10.0, 40.0)
#: Chroma threshold of ``method="fixed"`` (bright field) when none is given.
FIXED_THRESHOLD = 20.0
#: Brightness threshold of ``method="fixed"`` on dark-field slides when none is given.
FIXED_DARK_THRESHOLD = 40.0
#: A tile image is tissue when ``tissue_mask_from_rgb(tile).fraction`` exceeds this share (the 13
#: real tiles of shared/data: tissue >= 0.69, background, pen marks included, <= 0.01).
TILE_TISSUE_SHARE = 0.3

Method = Literal["otsu", "fixed"]
Background = Literal["auto", "bright", "dark"]


@dataclass(frozen=True)
class TissueRegion:
    """One tissue section (e.g. a biopsy core): ``id`` (its value in ``TissueMask.labels``),
    ``bbox_l0`` (x0, y0, x1, y1 level-0 box, x1/y1 exclusive, clipped to the slide), ``area_px``
    (mask pixels) and ``area_um2`` (None when the mpp is unknown)."""

    id: int
    bbox_l0: tuple[int, int, int, int]
    area_px: int
    area_um2: float | None


@dataclass(frozen=True, eq=False)
class TissueMask:
    """A low-resolution tissue mask of a slide, split into regions.

    Attributes
    ----------
    mask : numpy.ndarray
        (rows, cols) bool, ``mask_rc`` frame: pixel (r, c) covers level-0 x in
        [c * downsample, (c + 1) * downsample), likewise y.
    labels : numpy.ndarray
        (rows, cols) int32 region id of every mask pixel, 0 outside tissue.
    downsample : float
        Level-0 pixels per mask pixel.
    regions : tuple of TissueRegion
        Every region, by id.
    threshold, method, background : float, str, str
        Score threshold used (chroma on bright field, brightness on dark field), ``"otsu"`` or
        ``"fixed"``, ``"bright"`` (H&E on glass) or ``"dark"`` (fluorescence).
    slide_name, mpp : str, float or None
        File name of the slide (``<array>`` for an image); microns per mask pixel, if known.
    """

    mask: np.ndarray
    labels: np.ndarray
    downsample: float
    regions: tuple[TissueRegion, ...]
    threshold: float
    method: str
    background: str
    slide_name: str
    mpp: float | None

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols) of the mask."""
        return self.mask.shape  # type: ignore[return-value]

    @property
    def fraction(self) -> float:
        """Share of mask pixels that are tissue."""
        return float(self.mask.mean()) if self.mask.size else 0.0

    @property
    def region_ids(self) -> tuple[int, ...]:
        """Ids of the regions, ascending."""
        return tuple(r.id for r in self.regions)

    def select(self, ids: Iterable[int]) -> TissueMask:
        """The mask restricted to the regions ``ids`` (kept, not renumbered); ValueError for an
        id that is not a region of this mask."""
        ids = sorted({int(i) for i in ids})
        missing = [i for i in ids if i not in self.region_ids]
        if missing:
            raise ValueError(f"regions {missing} not in {self.slide_name}: has {self.region_ids}")
        keep = np.isin(self.labels, ids)
        return replace(
            self,
            mask=keep,
            labels=np.where(keep, self.labels, 0).astype(np.int32),
            regions=tuple(r for r in self.regions if r.id in ids),
        )


# -- white fraction -----------------------------------------------------------------------------
def _check_byte(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or not 0 <= value <= 255:
        raise ValueError(f"{name} must be an integer in [0, 255], got {value!r}")
    return int(value)


def white_fraction(
    tiles: np.ndarray,
    *,
    min_brightness: int = WHITE_MIN_BRIGHTNESS,
    max_saturation: int = WHITE_MAX_SATURATION,
    n_threads: int | None = None,
) -> np.ndarray:
    """Share of white pixels in each tile of a batch, in one native pass.

    Parameters
    ----------
    tiles : numpy.ndarray
        (n, height, width, 3) uint8 RGB tiles (as :func:`prostate_fast.tile.read_tiles` returns).
    min_brightness, max_saturation : int
        A white pixel has every channel >= ``min_brightness`` and max(R, G, B) - min(R, G, B)
        <= ``max_saturation`` (0-255 each; defaults 200 and 18, see the module docstring).
    n_threads : int, optional
        Threads (None = all cores); the result does not depend on it.

    Returns
    -------
    numpy.ndarray
        (n,) float32: white pixels / (height * width) per tile, the count divided in float64
        and rounded once to float32.

    Raises
    ------
    ValueError
        Tiles that are not uint8 (n, h, w, 3) with h, w >= 1, or a threshold outside [0, 255].

    Notes
    -----
    C++ (``csrc/tissue.cpp``). Tiles are split between threads (OpenMP, GIL released); the inner
    loop is vectorised (an AVX2 copy is picked at run time on x86-64): about 0.3 ns per pixel per
    core (bench_tissue.py).
    """
    lo = _check_byte("min_brightness", min_brightness)
    spread = _check_byte("max_saturation", max_saturation)
    arr = np.asarray(tiles)
    if arr.dtype != np.uint8:
        raise ValueError(f"tiles must be uint8, got {arr.dtype}")
    if arr.ndim != 4 or arr.shape[3] != 3 or arr.shape[1] < 1 or arr.shape[2] < 1:
        raise ValueError(f"tiles must have shape (n, height, width, 3), got {arr.shape}")
    threads = resolve_threads(n_threads)
    n, pixels = arr.shape[0], arr.shape[1] * arr.shape[2]
    counts = np.zeros(n, np.int64)
    if n:
        from . import _native

        flat = np.ascontiguousarray(arr).reshape(n, pixels * 3)
        _native.count_white(flat, lo, spread, counts, min(threads, n))
    return (counts / pixels).astype(np.float32)


# -- tissue mask --------------------------------------------------------------------------------
def _otsu(values: np.ndarray, lo: float, hi: float) -> float:
    """Otsu's threshold of uint8 values (values above it are the upper class), clipped."""
    import cv2

    if values.size == 0:
        return lo
    t, _ = cv2.threshold(values.reshape(1, -1), 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return float(np.clip(t, lo, hi))


def _disk(radius: int) -> np.ndarray:
    import cv2

    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def _check_num(name: str, value: object, lo: float = 0.0, strict: bool = False) -> float:
    """``value`` as a float >= lo (> lo when strict), or ValueError naming it."""
    ok = not isinstance(value, bool) and isinstance(value, int | float | np.number)
    if not ok or not (value > lo if strict else value >= lo):  # type: ignore[operator]
        raise ValueError(f"{name} must be a number {'>' if strict else '>='} {lo:g}, got {value!r}")
    return float(value)


def _score_bright(
    rgb: np.ndarray, method: str, threshold: float | None, reject_pen: bool, threads: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(candidate tissue, pen-ink pixels, dark pixels, threshold) of a bright-field image."""
    import cv2

    from . import _tissue_cy

    rows, cols = rgb.shape[:2]
    chroma = np.empty((rows, cols), np.uint8)
    cls = np.empty((rows, cols), np.uint8)
    pen_chroma = PEN_MIN_CHROMA
    if method == "fixed":
        t = FIXED_THRESHOLD if threshold is None else float(threshold)
        pen_chroma = max(1, min(PEN_MIN_CHROMA, math.ceil(t)))
    lo, hi = HE_HUE_RANGE
    _tissue_cy.classify_pixels(rgb, chroma, cls, DARK_MAX, pen_chroma, lo, hi, reject_pen, threads)
    pen = cls == 2
    # Textured blue-violet or red (stain of an unusual balance) is tissue after all.
    if reject_pen and pen.any():
        hue = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV_FULL)[..., 0].astype(np.int32) * 360 // 256
        never = (hue >= NEVER_STAIN_HUE[0]) & (hue <= NEVER_STAIN_HUE[1])
        pen &= never | _flat(rgb.max(axis=2), (cls != 1) & (chroma >= pen_chroma), INK_WINDOW)
    valid = (cls == 0) | ((cls == 2) & ~pen)
    # A 3x3 median of the score removes JPEG and sensor speckle on glass at full resolution.
    chroma = cv2.medianBlur(np.where(valid, chroma, 0).astype(np.uint8), 3)
    if method == "otsu":
        t = _otsu(chroma[valid], *OTSU_RANGE)
    # JPEG ringing gives the pixels next to black a little colour: keep a 1-pixel margin.
    dark = cv2.dilate((cls == 1).view(np.uint8), _disk(1)).view(bool)
    # Hysteresis: faint stain (thin strands, pale edges) joined to stain above t is tissue too.
    weak = valid & ~dark & (chroma > max(OTSU_RANGE[0], t / 2) if method == "otsu" else chroma > t)
    n, lab = cv2.connectedComponents(weak.view(np.uint8), connectivity=8)
    seeded = np.zeros(n, bool)
    seeded[lab[weak & (chroma > t)]] = True
    seeded[0] = False
    return seeded[lab], pen, dark, t


def _flat(value: np.ndarray, stained: np.ndarray, size: int) -> np.ndarray:
    """Pixels whose ``size``-square window's ``stained`` pixels have a ``value`` std under
    ``INK_MAX_STD`` (window sums of integers < 2**24 in float32: exact, thread-independent)."""
    import cv2

    v = np.where(stained, value, 0).astype(np.float32)
    n, s, s2 = (
        cv2.boxFilter(a, -1, (size, size), normalize=False, borderType=cv2.BORDER_CONSTANT)
        for a in (stained.astype(np.float32), v, v * v)
    )
    return n.astype(np.float64) * s2 - s.astype(np.float64) * s < (INK_MAX_STD * n) ** 2


def _score_dark(
    rgb: np.ndarray, method: str, threshold: float | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    bright = rgb.max(axis=2)
    t = FIXED_DARK_THRESHOLD if threshold is None else float(threshold)
    t = _otsu(bright, 10.0, 200.0) if method == "otsu" else t
    none = np.zeros(bright.shape, bool)
    return bright > t, none, none, t


def _looks_dark_field(rgb: np.ndarray, threads: int) -> tuple[bool, float]:
    """(dark field?, dark share): at least half dark and under 5 % glass."""
    dark = float(np.mean(rgb.max(axis=2) < DARK_MAX))
    glass = float(white_fraction(rgb[None], n_threads=threads)[0])
    return dark >= 0.5 and glass < 0.05, dark


def _fill_small_holes(mask: np.ndarray, max_area: int) -> np.ndarray:
    import cv2

    holes = (~mask).view(np.uint8)
    n, lab, stats, _ = cv2.connectedComponentsWithStats(holes, connectivity=4)
    rows, cols = mask.shape
    x, y, w, h, area = (stats[:, i] for i in range(5))
    inner = (x > 0) & (y > 0) & (x + w < cols) & (y + h < rows)
    fill = inner & (area < max_area)
    fill[0] = False
    return mask | fill[lab]


def _drop_components(
    mask: np.ndarray, min_area: int, ink: np.ndarray | None, bright: np.ndarray | None
) -> np.ndarray:
    """Remove objects smaller than ``min_area``, bordered mostly by ink, or too dark for H&E.

    The border of an object is the 2-pixel ring around it: tissue is bordered by glass, the
    faint fringe of a marker stroke by the stroke itself.
    """
    import cv2

    n, lab, stats, _ = cv2.connectedComponentsWithStats(mask.view(np.uint8), connectivity=8)
    keep = stats[:, 4] >= min_area
    if n > 1 and ink is not None:
        near = cv2.dilate(lab.astype(np.uint16) if n < 65536 else lab.astype(np.float32), _disk(2))
        ring = ~mask & (near > 0)
        owner = near[ring].astype(np.int64)
        ring_all = np.bincount(owner, minlength=n)
        ring_ink = np.bincount(owner[ink[ring]], minlength=n)
        keep &= ring_ink * 2 <= ring_all
    if n > 1 and bright is not None:
        total = np.bincount(lab.ravel(), weights=bright.ravel(), minlength=n)
        keep &= total >= DARK_OBJECT_MAX * stats[:, 4]
    keep[0] = False
    return keep[lab]


def _regions(
    mask: np.ndarray, merge_px: int, downsample: float, mpp: float | None, l0_size: tuple[int, int]
) -> tuple[np.ndarray, tuple[TissueRegion, ...]]:
    """Label sections, merging those closer than 2 * ``merge_px``; ids in reading order."""
    import cv2

    m8 = mask.view(np.uint8)
    n_sub, sub, stats, _ = cv2.connectedComponentsWithStats(m8, connectivity=8)
    if n_sub <= 1:
        return np.zeros(mask.shape, np.int32), ()
    parent = np.arange(n_sub, dtype=np.int64)
    if merge_px > 0:
        _, big = cv2.connectedComponents(cv2.dilate(m8, _disk(merge_px)), connectivity=8)
        parent[sub[mask]] = big[mask]
    groups, inverse = np.unique(parent[1:], return_inverse=True)
    k = len(groups)
    s = stats[1:].astype(np.int64)
    s[:, 2:4] += s[:, 0:2]  # x0, y0, x1, y1, area of every piece
    b = np.array([[*s[inverse == g, :2].min(0), *s[inverse == g, 2:4].max(0)] for g in range(k)])
    x0, y0, x1, y1 = b.T
    area = np.bincount(inverse, weights=s[:, 4], minlength=k).astype(np.int64)
    cx, cy = x0 + x1, y0 + y1  # twice the centres
    order = np.lexsort((cx, cy) if np.ptp(cy) >= np.ptp(cx) else (cy, cx))
    new_id = np.empty(k, np.int32)
    new_id[order] = np.arange(1, k + 1, dtype=np.int32)
    lut = np.zeros(n_sub, np.int32)
    lut[1:] = new_id[inverse]
    labels = lut[sub]
    lo = np.floor(b[:, :2] * downsample).clip(0).astype(np.int64)
    hi = np.minimum(np.ceil(b[:, 2:] * downsample), l0_size).astype(np.int64)
    regions = tuple(
        TissueRegion(
            int(new_id[g]),
            (*map(int, lo[g]), *map(int, hi[g])),
            int(area[g]),
            float(area[g]) * mpp * mpp if mpp else None,
        )
        for g in order
    )
    return labels, regions


def tissue_mask_from_rgb(
    rgb: np.ndarray,
    *,
    mpp: float | None = None,
    downsample: float = 1.0,
    method: Method = "otsu",
    threshold: float | None = None,
    min_object_um2: float = 20_000.0,
    min_hole_um2: float = 100_000.0,
    close_um: float = 32.0,
    merge_um: float = 100.0,
    reject_pen: bool = True,
    background: Background = "auto",
    slide_name: str = "<array>",
    l0_size: tuple[int, int] | None = None,
    n_threads: int | None = None,
) -> TissueMask:
    """Tissue mask of an RGB image (a thumbnail, a low level, or a tile).

    Parameters
    ----------
    rgb : numpy.ndarray
        (rows, cols, 3) or (rows, cols, 4) uint8; alpha is composited on white.
    mpp : float, optional
        Microns per pixel of ``rgb``, to convert the µm sizes below. None: 16 µm per pixel
        (``DEFAULT_MASK_MPP``, a 20x scan at 1/32), and region areas in µm² are None.
    downsample : float
        Level-0 pixels per pixel of ``rgb`` (for the regions' level-0 boxes).
    method : {"otsu", "fixed"}
        Otsu's threshold (clipped to ``OTSU_RANGE``, with hysteresis) or a fixed one.
    threshold : float, optional
        The fixed threshold, only with ``method="fixed"``: chroma 0-255 (default 20), or
        brightness on dark field (default 40).
    min_object_um2, min_hole_um2 : float
        Objects smaller than ``min_object_um2`` are dropped; holes smaller than ``min_hole_um2``
        that do not touch the image edge are filled.
    close_um, merge_um : float
        Radius of the closing that joins stained fragments; sections closer than ``merge_um``
        form one region.
    reject_pen : bool
        Drop pen-ink pixels and the objects bordered mostly by ink.
    background : {"auto", "bright", "dark"}
        Bright field (H&E on glass), dark field (fluorescence), or decide from the image; a
        dark-field decision is announced with a ``UserWarning`` (see the module docstring).
    slide_name : str
        Name for messages and for the result.
    l0_size : (int, int), optional
        Level-0 (width, height) to clip region boxes to (default: image size times downsample).
    n_threads : int, optional
        Threads for the pixel kernel (None = all cores); the result does not depend on it.

    Returns
    -------
    TissueMask
        Call a tile image tissue when its ``fraction`` exceeds ``TILE_TISSUE_SHARE`` (0.3).

    Raises
    ------
    ValueError
        Bad image, unknown method or background, a threshold with ``method="otsu"``, sizes < 0.
    """
    arr = np.asarray(rgb)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] not in (3, 4) or 0 in arr.shape:
        raise ValueError(f"rgb must be uint8 (rows, cols, 3 or 4), got {arr.dtype} {arr.shape}")
    if method not in ("otsu", "fixed"):
        raise ValueError(f"method must be 'otsu' or 'fixed', got {method!r}")
    if background not in ("auto", "bright", "dark"):
        raise ValueError(f"background must be 'auto', 'bright' or 'dark', got {background!r}")
    if method == "otsu" and threshold is not None:
        raise ValueError("threshold is only used with method='fixed'")
    if threshold is not None:
        _check_num("threshold", threshold)
    unit = DEFAULT_MASK_MPP if mpp is None else _check_num("mpp", mpp, strict=True)
    _check_num("downsample", downsample, strict=True)
    min_object_px = math.ceil(_check_num("min_object_um2", min_object_um2) / unit**2)
    min_hole_px = math.ceil(_check_num("min_hole_um2", min_hole_um2) / unit**2)
    close_px = round(_check_num("close_um", close_um) / unit)
    merge_px = round(_check_num("merge_um", merge_um) / 2 / unit)
    threads = resolve_threads(n_threads)
    import cv2

    rgb3 = np.ascontiguousarray(_to_rgb(arr, n_threads))
    rows, cols = rgb3.shape[:2]
    if threads > 1 and rows * cols < 1 << 16:
        threads = 1
    if background == "auto":
        dark_field, dark_share = _looks_dark_field(rgb3, threads)
        background = "dark" if dark_field else "bright"
        if dark_field:
            msg = f"{slide_name}: {dark_share:.0%} dark, almost no glass: treated as dark field"
            warnings.warn(msg + " (fluorescence); background='bright' forces H&E", stacklevel=2)
    if background == "dark":
        cand, pen, dark, t = _score_dark(rgb3, method, threshold)
    else:
        cand, pen, dark, t = _score_bright(rgb3, method, threshold, reject_pen, threads)
    mask = cand
    if close_px > 0:
        mask = cv2.morphologyEx(mask.view(np.uint8), cv2.MORPH_CLOSE, _disk(close_px)).view(bool)
    mask = _fill_small_holes(mask, min_hole_px)
    ink = pen | dark if background == "bright" and reject_pen else None
    bright = rgb3.max(axis=2) if background == "bright" else None
    mask = _drop_components(mask, min_object_px, ink, bright)
    size0 = l0_size or (math.ceil(cols * downsample), math.ceil(rows * downsample))
    labels, regions = _regions(mask, merge_px, float(downsample), mpp, size0)
    return TissueMask(
        mask=np.ascontiguousarray(mask),
        labels=labels,
        downsample=float(downsample),
        regions=regions,
        threshold=float(t),
        method=method,
        background=background,
        slide_name=slide_name,
        mpp=float(mpp) if mpp else None,
    )


def detect_tissue(
    slide: Slide,
    *,
    mask_downsample: float | None = None,
    method: Method = "otsu",
    threshold: float | None = None,
    min_object_um2: float = 20_000.0,
    min_hole_um2: float = 100_000.0,
    close_um: float = 32.0,
    merge_um: float = 100.0,
    reject_pen: bool = True,
    background: Background = "auto",
    n_threads: int | None = None,
) -> TissueMask:
    """Tissue mask of a whole slide, computed at low resolution.

    Parameters
    ----------
    slide : Slide
    mask_downsample : float, optional
        Target level-0 pixels per mask pixel (default 32). The coarsest level not coarser than
        this is read and shrunk by a whole factor: the result's downsample is exact.
    method, threshold, min_object_um2, min_hole_um2, close_um, merge_um, reject_pen, background
        As in :func:`tissue_mask_from_rgb`. Sizes are in µm; without an mpp in the file, level 0
        is taken as 0.5 µm per pixel (20x).
    n_threads : int, optional
        Threads for the pixel kernels (None = all cores); the result does not depend on it.

    Returns
    -------
    TissueMask

    Raises
    ------
    ValueError
        Bad arguments (see :func:`tissue_mask_from_rgb`), ``mask_downsample`` < 1.
    SlideError
        The slide cannot be read.

    Notes
    -----
    Reading the low-resolution level dominates the cost; memory stays under ~50 MB.
    """
    target = DEFAULT_MASK_DOWNSAMPLE if mask_downsample is None else mask_downsample
    rgb, ds = slide.read_low_res(_check_num("mask_downsample", target, 1.0))
    base_mpp = (slide.mpp[0] + slide.mpp[1]) / 2.0 if slide.mpp else None
    result = tissue_mask_from_rgb(
        rgb,
        mpp=(base_mpp or 0.5) * ds,
        downsample=ds,
        method=method,
        threshold=threshold,
        min_object_um2=min_object_um2,
        min_hole_um2=min_hole_um2,
        close_um=close_um,
        merge_um=merge_um,
        reject_pen=reject_pen,
        background=background,
        slide_name=slide.name,
        l0_size=slide.dimensions,
        n_threads=n_threads,
    )
    if base_mpp is None:  # sizes used 0.5 µm/px; areas in µm² would be made up
        regions = tuple(replace(r, area_um2=None) for r in result.regions)
        result = replace(result, mpp=None, regions=regions)
    return result
