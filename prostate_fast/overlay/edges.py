"""Tiles partly off tissue: the overlay tints their tissue pixels only.

A tile is scored when the tissue mask covers at least ``min_tissue`` of it (25 % by default), so a
tinted edge tile can be mostly glass. When the :class:`~prostate_fast.predict.ScoreGrid` records
the tissue mask (score grids of version 2, ``.npz``), :func:`write_overlay
<prostate_fast.overlay.write_overlay>` blends every strip with the native kernel as before and
then puts back the slide's own pixels on the off-tissue pixels of tinted cells (the tissue rule of
:meth:`ScoreGrid.tissue_window <prostate_fast.predict.ScoreGrid.tissue_window>`, the one
prediction scored them with), so the glass around a biopsy stays untinted. Cells fully on tissue
keep the blend kernel's bytes exactly; a grid without a mask (version 1, or a ``.csv``) tints whole
tiles as before.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["GlassCells", "glass_cells"]


class GlassCells:
    """The tinted cells of a grid that are partly off tissue, and how to untint their glass.

    Parameters
    ----------
    scores : ScoreGrid
        Carries ``tissue_mask`` (and, for speed, ``tissue_fraction``).
    rc : numpy.ndarray
        (m, 2) int64 (row, column) of the cells to check, sorted by row.
    tile_size, stride : int
        Tiling-level pixels.
    """

    def __init__(self, scores: Any, rc: np.ndarray, tile_size: int, stride: int) -> None:
        self.scores, self.rc, self.tile, self.stride = scores, rc, int(tile_size), int(stride)

    def save(self, strip: np.ndarray, y0: int) -> list[tuple[Any, np.ndarray, np.ndarray]]:
        """The original off-tissue pixels of the cells crossing ``strip`` (rows ``y0`` on)."""
        h, w = strip.shape[:2]
        t, s = self.tile, self.stride
        top = self.rc[:, 0] * s
        near = self.rc[(top < y0 + h) & (top + t > y0)]
        saved = []
        for r, c in near.tolist():
            ya, yb = max(r * s, y0), min(r * s + t, y0 + h)
            xa, xb = c * s, min(c * s + t, w)
            if yb <= ya or xb <= xa:
                continue
            off = ~self.scores.tissue_window(xa, ya, xb - xa, yb - ya)
            if off.any():
                box = (slice(ya - y0, yb - y0), slice(xa, xb))
                saved.append((box, off, strip[box][off].copy()))
        return saved

    @staticmethod
    def restore(strip: np.ndarray, saved: list[tuple[Any, np.ndarray, np.ndarray]]) -> None:
        """Put the saved original pixels back (after blending)."""
        for box, off, pixels in saved:
            strip[box][off] = pixels


def glass_cells(scores: Any, tables: Any) -> GlassCells | None:
    """The tinted cells of ``scores`` partly off tissue (a :class:`GlassCells`), None when the
    grid records no tissue mask or no such cell is tinted."""
    if getattr(scores, "tissue_mask", None) is None or len(scores.tile_rc) == 0:
        return None
    rc = np.asarray(scores.tile_rc, np.int64)
    frac = getattr(scores, "tissue_fraction", None)
    partial = np.ones(len(rc), bool) if frac is None else np.asarray(frac) < 1.0
    r, c = rc[:, 0], rc[:, 1]
    tinted = (tables.cls[r, c] >= 0) & ((tables.alpha[r, c] > 0) | (tables.outline[r, c] > 0))
    keep = rc[partial & tinted]
    if len(keep) == 0:
        return None
    keep = keep[np.argsort(keep[:, 0], kind="stable")]
    return GlassCells(scores, keep, tables.tile_size, tables.stride)
