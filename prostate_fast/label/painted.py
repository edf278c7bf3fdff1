"""Labels from a painted copy: the slide re-saved after the pathologist painted cancer on it.

The study's source of labels. A pixel is *marked* when some channel differs from the original by
more than ``threshold`` **and** the painted pixel is within ``colour_tol`` (every channel) of a
marker colour of the :class:`~.classes.ClassMap`, so JPEG noise and re-compression halos mark
nothing. :func:`painted_tile_stats` counts the marked pixels of each tile and sums their painted
colour in one native pass (``csrc/label.hpp``); :func:`nearest_colour` gives each tile the class
whose colour is nearest to the mean colour of its marked pixels, so several cancer types can be
painted in different colours. :func:`painted_coverage` is what
:func:`~prostate_fast.label.label_tiles` runs: it finds how the copy's size relates to the slide
(level 0 or the tiling scale), reads both images tile by tile (the copy on a second thread) and
returns each tile's marked share per class, its centre hit and its white fraction. It also
checks (:mod:`.marker`) that the copy registers to the slide (a warning when shifted) and that
the painting's marker colours are the classes' (refused when none is, a warning for a colour no
class has).
"""

from __future__ import annotations

import dataclasses
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._util import resolve_threads
from ..errors import AnnotationError, SlideError
from ..slide import LEVEL_TOLERANCE, LevelChoice, Slide, open_slide
from ..tile import TileGrid, read_tiles
from .classes import ClassMap
from .marker import MarkerTally, copy_shift, shift_warning
from .table import TileCoverage

__all__ = ["nearest_colour", "painted_coverage", "painted_tile_stats"]

_MAX_COLOURS = 16


def painted_tile_stats(
    original: np.ndarray,
    painted: np.ndarray,
    colours: np.ndarray,
    *,
    threshold: int = 60,
    colour_tol: int = 64,
    n_threads: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Marked pixels per tile of a painted copy, and the sums of their painted colour.

    Parameters
    ----------
    original, painted : numpy.ndarray
        (n, h, w, 3) uint8 RGB tiles of the slide and of its painted copy, same shape.
    colours : numpy.ndarray
        (k, 3) marker colours (RGB, 0-255), k <= 16.
    threshold : int
        A pixel is edited when some channel differs by more than this (0-255).
    colour_tol : int
        An edited pixel is marked when each channel is within this of some marker colour
        (0-255; 255 disables the colour test, as in the study).
    n_threads : int, optional
        Threads (None = all cores). The result does not depend on it.

    Returns
    -------
    counts : numpy.ndarray
        (n,) int64 marked pixels.
    sums : numpy.ndarray
        (n, 3) int64 sums of painted R, G, B over the marked pixels.

    Raises
    ------
    ValueError
        Arrays of the wrong type or shape, a threshold outside [0, 255], more than 16 colours.

    Notes
    -----
    One pass over both images (C++, SSE2 on x86-64, OpenMP over tiles, GIL released): about
    0.5 ns per pixel per core when nothing is painted, 1 ns when everything is.
    ``prostate_fast.baseline.label`` is the same rule written as the study's OpenCV loop.
    """
    from .. import _native

    o = _check_tiles("original", original)
    p = _check_tiles("painted", painted)
    if o.shape != p.shape:
        raise ValueError(f"painted has shape {p.shape}, original {o.shape}; they must match")
    cols = np.asarray(colours)
    if cols.ndim != 2 or cols.shape[1] != 3 or len(cols) > _MAX_COLOURS:
        raise ValueError(f"colours must have shape (k, 3) with k <= 16, got {cols.shape}")
    if cols.size and (
        cols.dtype.kind not in "iuf"
        or not np.isfinite(cols).all()
        or (cols != np.round(cols)).any()
        or cols.min() < 0
        or cols.max() > 255
    ):
        raise ValueError(f"colours must be whole numbers in [0, 255], got {colours!r}")
    for name, v in (("threshold", threshold), ("colour_tol", colour_tol)):
        if isinstance(v, bool) or not isinstance(v, int | np.integer) or not 0 <= v <= 255:
            raise ValueError(f"{name} must be an integer in [0, 255], got {v!r}")
    n = len(o)
    counts = np.zeros(n, np.int64)
    sums = np.zeros((n, 3), np.int64)
    if n:
        threads = min(resolve_threads(n_threads), n)
        c8 = np.ascontiguousarray(cols, dtype=np.uint8)
        _native.painted_tile_stats(o, p, c8, int(threshold), int(colour_tol), counts, sums, threads)
    return counts, sums


def _check_tiles(name: str, arr: np.ndarray) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.dtype != np.uint8:
        raise ValueError(f"{name} must be uint8, got {arr.dtype}")
    if arr.ndim != 4 or arr.shape[3] != 3:
        raise ValueError(f"{name} must have shape (n, h, w, 3), got {arr.shape}")
    return np.ascontiguousarray(arr)


def nearest_colour(counts: np.ndarray, sums: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """Index of the colour nearest (squared RGB distance) to each mean ``sums / counts``.

    Integer arithmetic (``|sums - counts * colour|²`` compared), ties to the lower index; -1 where
    ``counts`` is 0.
    """
    c = np.asarray(counts, np.int64)[:, None, None]
    d = np.asarray(sums, np.int64)[:, None, :] - c * np.asarray(colours, np.int64)[None, :, :]
    out = np.argmin((d * d).sum(axis=2), axis=1).astype(np.int64) if len(colours) else None
    if out is None:
        return np.full(len(counts), -1, np.int64)
    return np.where(np.asarray(counts) > 0, out, -1)


def painted_coverage(
    slide: Slide,
    annotation: str | Path | Slide,
    grid: TileGrid,
    cmap: ClassMap,
    *,
    centre: bool,
    threshold: int,
    colour_tol: int,
    batch_size: int,
    n_threads: int | None,
) -> TileCoverage:
    """Marked share of each tile per class, from the painted copy ``annotation`` (path or Slide).

    ``centre`` also tests each tile's centre pixel (for ``rule="centre"``). Raises ValueError when
    no class has a marker colour or ``annotation`` is an array, AnnotationError when the copy
    cannot be read, fits the slide at no scale, or is painted in colours none of which is a
    class's (the message names the file and the colours). Warns (``UserWarning``) when the copy
    is shifted against the slide or also painted in a colour no class has.
    """
    col_idx = np.array([i for i, c in enumerate(cmap.colours) if c is not None], np.int64)
    if len(col_idx) == 0:
        raise ValueError("a painted copy needs at least one class with a marker colour")
    colours = np.array([cmap.colours[i] for i in col_idx], np.int64)
    if isinstance(annotation, np.ndarray):
        raise ValueError("a painted copy must be a file or a Slide, not an array")
    own = not isinstance(annotation, Slide)
    path = annotation if own else getattr(annotation, "path", None)
    try:
        painted = open_slide(annotation) if own else annotation  # type: ignore[arg-type]
    except SlideError as exc:
        raise AnnotationError(f"painted copy: {exc}") from None
    where = str(path or painted.name)
    try:
        factor, choice = _painted_geometry(slide, painted, grid)
        pgrid = _painted_grid(grid, factor, choice)
        shifted = shift_warning(where, copy_shift(slide, painted, factor))
        rule = _MarkRule(colours, col_idx, threshold, colour_tol)
        tally = MarkerTally(colours, threshold, colour_tol)
        k = len(cmap.names)
        cover, inside, white = _measure(
            rule, slide, painted, grid, pgrid, k, centre, batch_size, n_threads, tally
        )
    finally:
        if own:
            painted.close()
    named = {cmap.names[i]: cmap.colours[i] for i in col_idx}
    note = shifted or tally.check(where, named)  # a shifted copy differs everywhere: no colours
    if note is not None:
        warnings.warn(note, stacklevel=3)
    return TileCoverage(cover, inside, "painted", _path_text(path), white)


def _path_text(path: object) -> str | None:
    return str(path) if isinstance(path, str | Path) else None


@dataclass(frozen=True, eq=False)
class _MarkRule:
    """The marking rule of one labelling: marker colours, the class of each, the two limits."""

    colours: np.ndarray  # (m, 3) int64 marker colours
    classes: np.ndarray  # (m,) int64 class index of each colour
    threshold: int
    colour_tol: int

    def nearest(
        self, orig: np.ndarray, pnt: np.ndarray, n_threads: int | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Marked pixels per tile, and the index into ``colours`` of the nearest colour (or -1)."""
        counts, sums = painted_tile_stats(
            orig,
            pnt,
            self.colours,
            threshold=self.threshold,
            colour_tol=self.colour_tol,
            n_threads=n_threads,
        )
        return counts, nearest_colour(counts, sums, self.colours)


def _measure(
    rule: _MarkRule,
    slide: Slide,
    painted: Slide,
    grid: TileGrid,
    pgrid: TileGrid,
    k: int,
    centre: bool,
    batch_size: int,
    n_threads: int | None,
    tally: MarkerTally,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Coverage (n, k), centre hits (n, k) and white fraction (n,), batch by batch.

    Two threads read the tiles of the slide and of the copy, the next batch's while the kernels
    run on this one; ``tally`` counts the marker colours of the changed pixels.
    """
    from ..tissue import white_fraction

    n = len(grid)
    cover = np.zeros((n, k), np.float64)
    inside = np.zeros((n, k), bool)
    white = np.zeros(n, np.float32)
    pixels = grid.tile_size * grid.tile_size
    c = grid.tile_size // 2
    batches = _batches(n, batch_size)
    pairs = ((slide, grid), (painted, pgrid))
    # the kernels share the cores with the two readers: 2 kernel threads beside them on 2 cores
    # made the labelling ~20 % slower than 1 (results do not depend on the thread count)
    threads = max(1, resolve_threads(n_threads) - len(pairs))
    with ThreadPoolExecutor(max_workers=2) as pool:

        def read(i: int) -> list:
            return [pool.submit(read_tiles, s, g, batches[i]) for s, g in pairs]

        pending = read(0) if batches else None
        for i, idx in enumerate(batches):
            orig, pnt = (f.result() for f in pending)  # type: ignore[union-attr]
            pending = read(i + 1) if i + 1 < len(batches) else None  # decoded during the kernels
            tally.add(orig, pnt, threads)
            counts, near = rule.nearest(orig, pnt, threads)
            hit = near >= 0
            cover[idx[hit], rule.classes[near[hit]]] = counts[hit] / pixels
            if centre:
                _, ci = rule.nearest(orig[:, c : c + 1, c : c + 1], pnt[:, c : c + 1, c : c + 1], 1)
                inside[idx[ci >= 0], rule.classes[ci[ci >= 0]]] = True
            white[idx] = white_fraction(orig, n_threads=threads)
    return cover, inside, white


def _batches(n: int, size: int) -> list[np.ndarray]:
    return [np.arange(s, min(s + size, n)) for s in range(0, n, size)]


def _painted_geometry(slide: Slide, painted: Slide, grid: TileGrid) -> tuple[float, LevelChoice]:
    """Level-0 scale of the painted copy relative to the slide, and how to read its tiles."""
    w, h = slide.dimensions
    pw, ph = painted.dimensions
    ds = float(grid.downsample)
    if (pw, ph) == (w, h):
        factor = 1.0
        same = painted.level_count == slide.level_count and all(
            abs(a / b - 1) <= LEVEL_TOLERANCE
            for a, b in zip(painted.level_downsamples, slide.level_downsamples, strict=True)
        )
        if same:
            return factor, grid.choice
    elif abs(pw - w / ds) <= 1 and abs(ph - h / ds) <= 1:
        factor = ds
    else:
        raise AnnotationError(
            f"{painted.path or painted.name}: painted copy is {pw} x {ph} px, but the slide "
            f"{slide.name} is {w} x {h} px at level 0 and {w / ds:.0f} x {h / ds:.0f} px at the "
            f"tiling scale (downsample {ds:g}); it matches neither"
        )
    return factor, painted.choice_for_downsample(ds / factor)


def _painted_grid(grid: TileGrid, factor: float, choice: LevelChoice) -> TileGrid:
    """The grid's tiles in the painted copy's coordinates (read with :func:`read_tiles`)."""
    if factor == 1.0 and choice is grid.choice:
        return grid
    xy = np.rint(grid.l0_xy / factor).astype(np.int64)
    return dataclasses.replace(grid, choice=choice, l0_xy=xy)
