"""Polygons -> tiles: the share of each tile every class of an annotation covers.

:func:`polygon_coverage` is the exact line-sampling computation (no raster, any slide size);
:func:`polygon_tile_coverage` is what :func:`~prostate_fast.label.label_tiles` runs for polygons:
it groups an :class:`~.shapes.Annotation`'s polygons by class through the
:class:`~.classes.ClassMap`, rescales them when the file records another resolution than the
slide's, refuses an annotation that lies off the slide, and measures the tiles.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from ..errors import AnnotationError
from ..slide import LEVEL_TOLERANCE, Slide
from ..tile import TileGrid
from .classes import ClassMap
from .shapes import Annotation, Polygon
from .table import TileCoverage

__all__ = ["MAX_CROSSINGS", "TooComplexError", "polygon_coverage", "polygon_tile_coverage"]


def polygon_tile_coverage(
    slide: Slide,
    ann: Annotation,
    grid: TileGrid,
    cmap: ClassMap,
    *,
    centre: bool,
    samples: int,
) -> TileCoverage:
    """Share of each tile of ``grid`` every class of ``ann`` covers (see the module docstring).

    Raises AnnotationError naming the file for a class name the class map does not know, or when
    no polygon lies on the slide.
    """
    pos, neg = _by_class(ann, cmap, _mpp_factor(ann, slide))
    w, h = slide.dimensions
    boxes = [p.bounds for group in pos for p in group]
    if boxes and not any(x0 < w and y0 < h and x1 > 0 and y1 > 0 for x0, y0, x1, y1 in boxes):
        raise AnnotationError(
            f"{ann.path}: no polygon lies on the slide {slide.name} ({w} x {h} px at level 0); "
            "is it the annotation of another slide?"
        )
    try:
        cover, inside = polygon_coverage(
            pos, neg, grid.l0_xy, grid.l0_tile_size, samples=samples, centres=centre
        )
    except TooComplexError as exc:
        raise AnnotationError(
            f"{ann.path}: {exc} on the {len(grid)} tiles; simplify the polygons (fewer "
            "vertices) or use a label mask"
        ) from None
    path = str(ann.path) if isinstance(ann.path, str | Path) else None
    return TileCoverage(cover, inside, ann.format, path)


def _mpp_factor(ann: Annotation, slide: Slide) -> float:
    """Level-0 pixels of the slide per annotation pixel (1 unless both record a different mpp)."""
    if ann.mpp and slide.mpp:
        ratio = ann.mpp / ((slide.mpp[0] + slide.mpp[1]) / 2)
        return 1.0 if abs(ratio - 1) <= LEVEL_TOLERANCE else ratio
    return 1.0


def _by_class(
    ann: Annotation, cmap: ClassMap, factor: float
) -> tuple[list[list[Polygon]], list[list[Polygon]]]:
    """Positive and negative polygons per class index; unnamed negatives subtract from all."""
    k = len(cmap.names)
    pos: list[list[Polygon]] = [[] for _ in range(k)]
    neg: list[list[Polygon]] = [[] for _ in range(k)]
    for poly in ann.polygons:
        if factor != 1.0:
            holes = tuple(h * factor for h in poly.holes)
            poly = dataclasses.replace(poly, exterior=poly.exterior * factor, holes=holes)
        if poly.negative and poly.name is None:
            for group in neg:
                group.append(poly)
            continue
        idx = cmap.resolve(poly.name, ann.path)
        if idx is not None:
            (neg if poly.negative else pos)[idx].append(poly)
    return pos, neg


#: Most edge crossings of the sample lines (64 per tile row) one annotation may need: the work of
#: :func:`polygon_coverage` is proportional to them (a polygon whose edges zig-zag across the whole
#: slide crosses every line at every edge). About 10 s of work at the limit.
MAX_CROSSINGS = 50_000_000
#: Crossings handled at once (bounds memory to some 100 MB whatever the annotation).
_CHUNK_CROSSINGS = 1 << 20


class TooComplexError(ValueError):
    """The polygons cross the sample lines more than ``max_crossings`` times."""

    def __init__(self, crossings: int, limit: int) -> None:
        super().__init__(
            f"the polygons cross the sample lines {crossings:,} times (limit {limit:,})"
        )
        self.crossings, self.limit = crossings, limit


def polygon_coverage(
    positive: list[list[Polygon]],
    negative: list[list[Polygon]],
    l0_xy: np.ndarray,
    l0_tile_size: float,
    *,
    samples: int = 64,
    centres: bool = False,
    max_crossings: int = MAX_CROSSINGS,
) -> tuple[np.ndarray, np.ndarray]:
    """Share of each square tile covered by the union of each group of polygons.

    Parameters
    ----------
    positive : list of list of Polygon
        One group per class: the union of the group's polygons (holes excluded) is the class.
    negative : list of list of Polygon
        Per class, polygons whose area (holes excluded) is removed from the class.
    l0_xy : numpy.ndarray
        (n, 2) level-0 (x, y) of each tile's top-left corner; a tile covers
        ``[x, x + l0_tile_size) x [y, y + l0_tile_size)``.
    l0_tile_size : float
        Tile side in level-0 pixels.
    samples : int
        Sample rows per tile (default 64).
    centres : bool
        Also test whether each tile's centre lies inside each class.
    max_crossings : int
        Refuse polygons whose edges cross the sample lines more often (default
        :data:`MAX_CROSSINGS`).

    Returns
    -------
    coverage : numpy.ndarray
        (n, n_classes) float64 in [0, 1].
    inside : numpy.ndarray
        (n, n_classes) bool: tile centre inside the class (all False unless ``centres``).

    Raises
    ------
    TooComplexError
        More than ``max_crossings`` crossings (counted before any is computed).

    Notes
    -----
    Each tile is cut into ``samples`` horizontal lines (centres of equal bands); on each line the
    polygons' even-odd spans are intersected **exactly** with the tile, so the only error is the
    vertical sampling: at most ``1 / (2 * samples)`` of the tile per horizontal edge (0.8 % at
    64), far less for slanted or curved edges. Unions, holes and negative regions are resolved
    per line by counting span starts and ends; nothing is rasterised. Only the lines of the tile
    rows are sampled, and the crossings are counted first (O(edges log lines)) then computed in
    chunks of about a million, so memory is O(tiles x samples + edges + chunk) whatever the
    slide size and time O(crossings + tiles x samples).
    """
    xy = np.asarray(l0_xy, dtype=np.float64).reshape(-1, 2)
    n, k = len(xy), len(positive)
    cover = np.zeros((n, k), np.float64)
    inside = np.zeros((n, k), bool)
    if n == 0 or k == 0:
        return cover, inside
    t = float(l0_tile_size)
    uy, inv = np.unique(xy[:, 1], return_inverse=True)
    offs = (np.arange(samples) + 0.5) * (t / samples)
    if centres:
        offs = np.append(offs, t / 2)
    ys, row_of = np.unique((uy[:, None] + offs[None, :]).ravel(), return_inverse=True)
    row_of = row_of.reshape(len(uy), len(offs))[inv]  # (n, samples[+1]) line index per tile
    edges = [(_edges(positive[c]), _edges(negative[c])) for c in range(k)]
    per_line = [_per_line(pe, ys) + _per_line(ne, ys) for pe, ne in edges]
    total = int(sum(int(v.sum()) for v in per_line))
    if total > max_crossings:
        raise TooComplexError(total, max_crossings)
    for c in range(k):
        if not positive[c] or not per_line[c].any():
            continue
        b = np.array([p.bounds for p in positive[c]])
        box = (b[:, 0].min(), b[:, 1].min(), b[:, 2].max(), b[:, 3].max())
        near = (xy[:, 0] < box[2]) & (xy[:, 0] + t > box[0])
        hit = np.flatnonzero(near & (xy[:, 1] < box[3]) & (xy[:, 1] + t > box[1]))
        for l0, l1 in _chunks(per_line[c]):
            pieces = _class_pieces(*edges[c], ys, l0, l1)
            if pieces is None:
                continue
            first, last = row_of[hit, 0], row_of[hit, samples - 1]
            band = hit[(first < l1) & (last >= l0)]
            for s in range(0, len(band), 2048):
                tiles = band[s : s + 2048]
                rows = row_of[tiles, :samples]
                x0 = np.broadcast_to(xy[tiles, 0:1], rows.shape)
                covered = _covered(pieces, rows, x0 + t) - _covered(pieces, rows, x0)
                cover[tiles, c] += covered.sum(axis=1) / (t * samples)
                if centres:
                    mid = row_of[tiles, samples]
                    own = (mid >= l0) & (mid < l1)
                    inside[tiles[own], c] = _contains(pieces, mid[own], xy[tiles[own], 0] + t / 2)
    return np.clip(cover, 0.0, 1.0), inside


_Edges = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _edges(polys: list[Polygon]) -> _Edges:
    """The non-horizontal edges of every ring: (polygon id, xa, ya, xb, yb)."""
    rings = [(pid, r) for pid, poly in enumerate(polys) for r in (poly.exterior, *poly.holes)]
    if not rings:
        z = np.zeros(0)
        return z.astype(np.int64), z, z, z, z
    lengths = np.array([len(r) for _, r in rings], np.int64)
    a = np.concatenate([r for _, r in rings])
    starts = np.cumsum(lengths) - lengths
    nxt = np.arange(len(a)) + 1
    nxt[starts + lengths - 1] = starts  # each ring closes on its first vertex
    pid = np.repeat(np.array([p for p, _ in rings], np.int64), lengths)
    keep = a[:, 1] != a[nxt, 1]
    b = a[nxt]
    return pid[keep], a[keep, 0], a[keep, 1], b[keep, 0], b[keep, 1]


def _line_range(e: _Edges, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First line index each edge crosses, and the index past its last.

    An edge crosses line y when min(ya, yb) <= y < max(ya, yb): each closed ring then crosses
    every line an even number of times.
    """
    _, _, ya, _, yb = e
    k0 = np.searchsorted(ys, np.minimum(ya, yb), "left")
    return k0, np.searchsorted(ys, np.maximum(ya, yb), "left")


def _per_line(e: _Edges, ys: np.ndarray) -> np.ndarray:
    """Crossings on each line (int64, len(ys))."""
    k0, k1 = _line_range(e, ys)
    diff = np.bincount(k0, minlength=len(ys) + 1) - np.bincount(k1, minlength=len(ys) + 1)
    return np.cumsum(diff[:-1])


def _chunks(per_line: np.ndarray) -> list[tuple[int, int]]:
    """Consecutive line ranges of about ``_CHUNK_CROSSINGS`` crossings (at least one line)."""
    cum = np.cumsum(per_line)
    cuts = np.searchsorted(cum, np.arange(_CHUNK_CROSSINGS, int(cum[-1]), _CHUNK_CROSSINGS))
    bounds = np.unique(np.r_[0, cuts + 1, len(per_line)].clip(0, len(per_line)))
    return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def _spans(e: _Edges, ys: np.ndarray, l0: int, l1: int) -> tuple[np.ndarray, ...]:
    """Even-odd spans of each polygon on the lines [l0, l1) of ``ys``: (line, start x, end x)."""
    pid, xa, ya, xb, yb = e
    k0, k1 = _line_range(e, ys)
    k0, k1 = np.clip(k0, l0, l1), np.clip(k1, l0, l1)
    cnt = k1 - k0
    total = int(cnt.sum())
    if total == 0:
        empty = np.zeros(0)
        return empty.astype(np.int64), empty, empty
    i = np.repeat(np.arange(len(cnt)), cnt)
    line = k0[i] + np.arange(total) - np.repeat(np.cumsum(cnt) - cnt, cnt)
    x = xa[i] + (ys[line] - ya[i]) * (xb[i] - xa[i]) / (yb[i] - ya[i])
    order = np.lexsort((x, line, pid[i]))
    line, x = line[order], x[order]
    return line[0::2], x[0::2], x[1::2]


def _class_pieces(
    pos: _Edges, neg: _Edges, ys: np.ndarray, l0: int, l1: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """Disjoint covered pieces per line of [l0, l1), sorted: (line, start, end, length before)."""
    lines, xs, dp, dq = [], [], [], []
    for e, is_neg in ((pos, False), (neg, True)):
        if not len(e[0]):
            continue
        line, a, b = _spans(e, ys, l0, l1)
        one = np.ones(len(line), np.int64)
        lines += [line, line]
        xs += [a, b]
        (dq if is_neg else dp).extend([one, -one])
        (dp if is_neg else dq).extend([0 * one, 0 * one])
    if not lines:
        return None
    line, x = np.concatenate(lines), np.concatenate(xs)
    if len(line) == 0:
        return None
    order = np.lexsort((x, line))
    line, x = line[order], x[order]
    depth_pos = np.cumsum(np.concatenate(dp)[order])
    depth_neg = np.cumsum(np.concatenate(dq)[order])
    # Between event i and i + 1 (same line: every line's events sum to zero) the union of the
    # positive spans minus the negative ones is covered when depth_pos > 0 and depth_neg == 0.
    on = np.flatnonzero((depth_pos[:-1] > 0) & (depth_neg[:-1] == 0) & (x[1:] > x[:-1]))
    if len(on) == 0:
        return None
    pl, pa, pb = line[on], x[on], x[on + 1]
    length = pb - pa
    cum = np.cumsum(length)
    first = np.r_[True, pl[1:] != pl[:-1]]
    base = np.maximum.accumulate(np.where(first, cum - length, 0.0))
    return pl, pa, pb, cum - length - base


def _lookup(pieces: tuple, rows: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of the last piece on ``rows`` starting at or before ``x`` (-1 if none), and validity."""
    pl, pa = pieces[0], pieces[1]
    # Lexicographic (line, x) search: pieces are sorted by line, then start.
    lo = np.searchsorted(pl, rows, "left")
    hi = np.searchsorted(pl, rows, "right")
    idx = lo - 1
    has = hi > lo
    if has.any():
        # Binary search inside each line's block, vectorised: narrow [lo, hi) by bisection.
        a, b = lo.copy(), hi.copy()
        while True:
            active = has & (a < b)
            if not active.any():
                break
            mid = (a + b) // 2
            go_right = active & (pa[np.minimum(mid, len(pa) - 1)] <= x)
            a = np.where(go_right, mid + 1, a)
            b = np.where(active & ~go_right, mid, b)
        idx = a - 1
    valid = has & (idx >= lo)
    return np.where(valid, idx, 0), valid


def _covered(pieces: tuple, rows: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Covered length on each line ``rows`` left of ``x``."""
    _, pa, pb, before = pieces
    idx, valid = _lookup(pieces, rows, x)
    inner = np.clip(x - pa[idx], 0.0, pb[idx] - pa[idx])
    return np.where(valid, before[idx] + inner, 0.0)


def _contains(pieces: tuple, rows: np.ndarray, x: np.ndarray) -> np.ndarray:
    idx, valid = _lookup(pieces, rows, x)
    return valid & (x < pieces[2][idx])
