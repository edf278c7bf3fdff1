"""What a painted copy was painted with, and whether it lies on its slide.

Two checks that keep a painted copy from labelling tiles wrongly without a word
(:func:`~prostate_fast.label.painted.painted_coverage` runs both):

* **Marker colours** (:class:`MarkerTally`). While the tiles are compared, the *changed* pixels
  (some channel differs by more than ``threshold``) that are saturated like a marker (max - min
  channel >= :data:`MIN_SATURATION`) are counted per hue (12 bins of 30 degrees centred on red,
  yellow, green, cyan, blue, magenta...), with how many of them lie within ``colour_tol`` of a
  class's marker colour. A hue holding at least :data:`CLUSTER_SHARE` of them is a marker colour
  of the painting. When the painting has marker colours and none of them is a class's, the copy
  is refused (:class:`~prostate_fast.errors.AnnotationError` naming the colours): a blue or yellow
  painting read with the default green class would label every tile benign. A marker colour that
  no class has, beside one that matches, gets a warning (those marks are ignored).
* **Registration** (:func:`copy_shift`). The slide and the copy are read at low resolution
  (about 1024 px on the long side), marker-saturated pixels are set to the image's median, and
  the phase correlation of the two gives the copy's shift. A shift over :data:`MAX_SHIFT`
  level-0 pixels (and half a low-resolution pixel) gets a warning: the labels would land on
  neighbouring tiles. The marker test is then skipped, since every edge of the tissue differs.
"""

from __future__ import annotations

import colorsys
import math
from typing import Any

import numpy as np

from .._util import resolve_threads
from ..errors import AnnotationError

__all__ = ["CLUSTER_SHARE", "MAX_SHIFT", "MIN_SATURATION", "MarkerTally", "copy_shift"]

MIN_SATURATION = 100
"""Max - min channel of a changed pixel that counts as marker paint (H&E tissue stays below)."""
CLUSTER_SHARE = 0.15
"""Share of the marker-like changed pixels a hue needs to count as a marker colour."""
MIN_MARKED = 64
"""Marker-like changed pixels (sampled) below which nothing counts as painted."""
MAX_SHIFT = 4.0
"""Largest shift (level-0 pixels) of a painted copy against its slide that passes unremarked."""
_HUES = 12
_STEP = 2  # every 2nd row and column of a tile is tallied


def _hue_bins(rgb: np.ndarray) -> np.ndarray:
    """Hue bin (0-11, bin 0 centred on red) of each (n, 3) uint8 pixel."""
    c = rgb.astype(np.float32)
    mx, mn = c.max(axis=1), c.min(axis=1)
    d = np.maximum(mx - mn, 1e-6)
    r, g, b = c[:, 0], c[:, 1], c[:, 2]
    h = np.where(mx == r, (g - b) / d % 6, np.where(mx == g, (b - r) / d + 2, (r - g) / d + 4))
    return (np.floor((h * 60 + 15) / 30).astype(np.int64)) % _HUES


def colour_name(rgb: Any) -> str:
    """A plain name for an RGB colour: ``blue (0, 0, 255)``."""
    r, g, b = (int(v) for v in rgb)
    hue, light, sat = colorsys.rgb_to_hls(r / 255, g / 255, b / 255)
    names = ("red", "orange", "yellow", "yellow-green", "green", "green", "cyan", "blue", "blue")
    names += ("violet", "magenta", "pink")
    name = "grey" if sat < 0.2 else names[int((hue * 360 + 15) // 30) % 12]
    return f"{name} ({r}, {g}, {b})"


def _check_pair(original: np.ndarray, painted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both batches as C-contiguous uint8 (n, h, w, 3) of one shape, else ValueError."""
    out = []
    for name, arr in (("original", original), ("painted", painted)):
        arr = np.asarray(arr)
        if arr.dtype != np.uint8:
            raise ValueError(f"{name} must be uint8, got {arr.dtype}")
        if arr.ndim != 4 or arr.shape[3] != 3:
            raise ValueError(f"{name} must have shape (n, h, w, 3), got {arr.shape}")
        out.append(np.ascontiguousarray(arr))
    if out[0].shape != out[1].shape:
        raise ValueError(
            f"painted has shape {out[1].shape}, original {out[0].shape}; they must match"
        )
    return out[0], out[1]


class MarkerTally:
    """Counts of the marker-like changed pixels per hue, over the batches of a painted copy.

    Parameters
    ----------
    colours : numpy.ndarray
        (m, 3) the classes' marker colours.
    threshold, colour_tol : int
        The marking rule (see :func:`~prostate_fast.label.painted.painted_tile_stats`).
    """

    def __init__(self, colours: np.ndarray, threshold: int, colour_tol: int) -> None:
        self.colours = np.asarray(colours, np.int16).reshape(-1, 3)
        self.threshold = int(threshold)
        self.colour_tol = int(colour_tol)
        self.count = np.zeros(_HUES, np.int64)
        self.matched = np.zeros(_HUES, np.int64)
        self.sums = np.zeros((_HUES, 3), np.int64)

    def add(self, original: np.ndarray, painted: np.ndarray, n_threads: int | None = None) -> None:
        """Tally one batch of (n, h, w, 3) uint8 tiles of the slide and of its copy.

        One native pass (``csrc/marker.hpp``: OpenMP over tiles, GIL released); the counts are
        those of the NumPy rule :meth:`_add_numpy`, bit for bit, for any ``n_threads`` (None =
        all cores). Raises ValueError for arrays that are not uint8 (n, h, w, 3) of one shape.
        """
        from .. import _native

        o, p = _check_pair(original, painted)
        if o.size == 0:
            return
        threads = min(resolve_threads(n_threads), len(o))
        cols = np.ascontiguousarray(self.colours, np.int32)
        rule = (self.threshold, MIN_SATURATION, self.colour_tol, _STEP)
        _native.marker_tally(o, p, cols, *rule, self.count, self.matched, self.sums, threads)

    def _add_numpy(self, original: np.ndarray, painted: np.ndarray) -> None:
        """:meth:`add` in NumPy: the reference the native kernel is tested against."""
        o = original[:, ::_STEP, ::_STEP].reshape(-1, 3)
        p = painted[:, ::_STEP, ::_STEP].reshape(-1, 3)
        # per channel, elementwise: NumPy's max/min along a 3-wide axis cost 5x the decoding
        oc, pc = [o[:, k].astype(np.int16) for k in range(3)], [p[:, k] for k in range(3)]
        changed = np.abs(oc[0] - pc[0]) > self.threshold
        for k in (1, 2):
            changed |= np.abs(oc[k] - pc[k]) > self.threshold
        hi = np.maximum(np.maximum(pc[0], pc[1]), pc[2])
        lo = np.minimum(np.minimum(pc[0], pc[1]), pc[2])
        keep = changed & (hi - lo >= MIN_SATURATION)  # uint8: hi >= lo, no wrap
        if not keep.any():
            return
        px = p[keep].astype(np.int16)
        bins = _hue_bins(px)
        near = np.zeros(len(px), bool)
        for c in self.colours:
            near |= (np.abs(px - c) <= self.colour_tol).all(axis=1)
        self.count += np.bincount(bins, minlength=_HUES)
        self.matched += np.bincount(bins, weights=near, minlength=_HUES).astype(np.int64)
        for ch in range(3):
            self.sums[:, ch] += np.bincount(bins, weights=px[:, ch], minlength=_HUES).astype(
                np.int64
            )

    def clusters(self) -> list[tuple[tuple[int, int, int], bool]]:
        """The painting's marker colours: (mean RGB, whether a class has it), largest first."""
        total = int(self.count.sum())
        if total < MIN_MARKED:
            return []
        out = []
        for k in np.argsort(-self.count, kind="stable"):
            n = int(self.count[k])
            if n < CLUSTER_SHARE * total:
                break
            mean = tuple(int(round(v)) for v in self.sums[k] / n)
            out.append((mean, self.matched[k] >= 0.25 * n))
        return out  # type: ignore[return-value]

    def check(self, where: str, class_colours: dict[str, Any]) -> str | None:
        """AnnotationError when no marker colour of the painting is a class's; a warning text
        (or None) when some are not."""
        found = self.clusters()
        if not found:
            return None
        unmatched = [colour_name(c) for c, ok in found if not ok]
        if len(unmatched) == len(found):
            have = ", ".join(f"{k} = {colour_name(v)}" for k, v in class_colours.items())
            raise AnnotationError(
                f"{where}: painted in {', '.join(unmatched)}, but no class has that marker "
                f"colour ({have}); give the classes the painting's colours, e.g. --classes "
                f"'cancer={','.join(str(v) for v in found[0][0])}'"
            )
        if unmatched:
            return (
                f"{where}: also painted in {', '.join(unmatched)}, a colour no class has; "
                "those marks are ignored"
            )
        return None


def _low_res_grey(slide: Any, target: float, shape: tuple[int, int] | None) -> np.ndarray:
    """Grey float32 image of ``slide`` at about ``target`` level-0 px per pixel, marker paint
    set to the median (resized to ``shape`` (w, h) when given)."""
    import cv2

    rgb, _ = slide.read_low_res(max(1.0, target))
    if shape is not None and (rgb.shape[1], rgb.shape[0]) != shape:
        rgb = cv2.resize(rgb, shape, interpolation=cv2.INTER_AREA)
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]  # elementwise: max(axis=2) is 10x slower
    paint = np.maximum(np.maximum(r, g), b) - np.minimum(np.minimum(r, g), b) >= MIN_SATURATION
    grey[paint] = float(np.median(grey))
    return grey


def copy_shift(slide: Any, painted: Any, factor: float) -> tuple[float, float, float]:
    """Shift of the painted copy against the slide: (dx, dy) in level-0 px, and the low-res step.

    ``factor``: slide level-0 pixels per copy level-0 pixel (1 for a level-0 copy). Phase
    correlation of the two low-resolution images (about 1024 px on the long side).
    """
    import cv2

    w, h = slide.dimensions
    target = max(1.0, max(w, h) / 1024)
    a = _low_res_grey(slide, target, None)
    b = _low_res_grey(painted, target / factor, (a.shape[1], a.shape[0]))
    if min(a.shape) < 16:
        return 0.0, 0.0, target
    window = cv2.createHanningWindow((a.shape[1], a.shape[0]), cv2.CV_32F)
    (dx, dy), _ = cv2.phaseCorrelate(a, b, window)
    step = w / a.shape[1]
    return float(dx * step), float(dy * step), float(step)


def shift_warning(where: str, shift: tuple[float, float, float]) -> str | None:
    """The warning text for a copy shifted by more than :data:`MAX_SHIFT` px (else None)."""
    dx, dy, step = shift
    d = math.hypot(dx, dy)
    if d <= max(MAX_SHIFT, 0.5 * step):
        return None
    return (
        f"{where}: the painted copy is shifted by about ({dx:+.0f}, {dy:+.0f}) px against the "
        "slide; it does not register, so labels land on the wrong tiles (re-save the copy from "
        "the slide itself)"
    )
