"""Tile one slide end to end: :func:`tile_slide`, what the ``tiles`` command runs.

Tissue detection (:func:`prostate_fast.tissue.detect_tissue`), the grid of the tiles on tissue
(:func:`~.grid.build_grid`), each tile's white fraction (:func:`~.grid.tile_white_fraction`) and
the thumbnail (:func:`~.thumbnail.render_grid_thumbnail`), returned together as a
:class:`TiledSlide`; writing the tile table and the picture is left to the caller.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from ..slide import Slide, open_slide
from .grid import MIN_TISSUE, TileGrid, build_grid, tile_white_fraction
from .thumbnail import render_grid_thumbnail

if TYPE_CHECKING:
    from ..tissue import TissueMask

__all__ = ["TiledSlide", "tile_slide"]


@dataclass(frozen=True, eq=False)
class TiledSlide:
    """What :func:`tile_slide` found on one slide.

    Attributes
    ----------
    slide_name : str
        File name of the slide.
    dimensions : (int, int)
        Level-0 (width, height) of the slide.
    tissue : TissueMask
        The low-resolution tissue mask and its regions.
    grid : TileGrid
        The tiles kept (empty when no tile lies on tissue).
    min_tissue : float
        The tissue share a tile needed to be kept.
    white_fraction : numpy.ndarray
        (n,) float32 white fraction of each kept tile.
    thumbnail : numpy.ndarray
        RGB uint8 picture: mask outline, kept tiles, region ids.
    seconds : dict
        Wall time of the steps ``"mask"`` (opening the slide included), ``"grid"`` and
        ``"white_fraction"``; the thumbnail is not timed.
    """

    slide_name: str
    dimensions: tuple[int, int]
    tissue: TissueMask
    grid: TileGrid
    min_tissue: float
    white_fraction: np.ndarray
    thumbnail: np.ndarray
    seconds: dict[str, float]

    @property
    def n_full(self) -> int:
        """Tiles of the full grid at the same scale, tissue or not."""
        rows, cols = self.grid.grid_shape
        return rows * cols


def tile_slide(
    slide: Slide | str | os.PathLike[str],
    *,
    magnification: float | None = 20.0,
    mpp: float | None = None,
    level: int | None = None,
    tile_size: int = 128,
    stride: int | None = None,
    min_tissue: float = MIN_TISSUE,
    regions: list[int] | tuple[int, ...] | None = None,
    method: Literal["otsu", "fixed"] = "otsu",
    threshold: float | None = None,
    thumbnail_size: int = 1600,
    n_threads: int | None = None,
) -> TiledSlide:
    """Find the tissue of a slide, tile it, measure each tile's white fraction, draw a thumbnail.

    Parameters
    ----------
    slide : Slide or path
        The slide (a path is opened here, with ``n_threads``, and closed again).
    magnification, mpp, level : float, float, int, optional
        Tile scale: target magnification (default 20x), or microns per tile pixel, or a pyramid
        level read as it is; ``mpp`` or ``level`` overrides ``magnification``.
    tile_size : int
        Tile side in pixels at the target scale (default 128).
    stride : int, optional
        Pixels between tile origins at the target scale (default ``tile_size``).
    min_tissue : float
        Share of a tile the tissue mask must cover for the tile to be kept (default 0.25).
    regions : sequence of int, optional
        Keep only tiles of these tissue region ids; None keeps all.
    method : {"otsu", "fixed"}
        Tissue threshold method of :func:`prostate_fast.tissue.detect_tissue`.
    threshold : float, optional
        With ``method="fixed"``: the chroma cut (default 20).
    thumbnail_size : int
        Largest side of the thumbnail in pixels (default 1600).
    n_threads : int, optional
        Threads for tissue detection and white fractions (None = all cores); the result does
        not depend on it.

    Returns
    -------
    TiledSlide
        An empty grid (and white fractions) when no tile lies on tissue: the caller decides
        whether that is an error.

    Raises
    ------
    SlideError
        The slide cannot be read, or a magnification or mpp is asked of a slide that records
        neither (checked before the tissue is detected).
    ValueError
        Bad tile size, stride, ``min_tissue``, threshold or region id.

    Notes
    -----
    Warnings of the tissue detection (e.g. a fluorescence slide) are issued with
    :func:`warnings.warn`. Cost: reading the slide at low resolution for the mask and the
    thumbnail, and every kept tile once for its white fraction (which dominates).
    """
    from ..tissue import detect_tissue

    t0 = time.perf_counter()
    own = not isinstance(slide, Slide)
    sl = open_slide(slide, n_threads=n_threads) if own else slide
    try:
        if mpp is not None or level is not None:
            magnification = None
        scale = {"magnification": magnification, "mpp": mpp, "level": level}
        sl.choose_level(**scale)  # fails fast on a slide without a recorded scale
        tissue = detect_tissue(sl, method=method, threshold=threshold, n_threads=n_threads)
        t1 = time.perf_counter()
        grid = build_grid(
            sl,
            tissue,
            tile_size=tile_size,
            stride=stride,
            min_tissue=min_tissue,
            regions=regions,
            **scale,
        )
        t2 = time.perf_counter()
        white = tile_white_fraction(sl, grid, n_threads=n_threads)
        t3 = time.perf_counter()
        thumb = render_grid_thumbnail(sl, grid, tissue, max_size=thumbnail_size)
    finally:
        if own:
            sl.close()
    seconds = {"mask": t1 - t0, "grid": t2 - t1, "white_fraction": t3 - t2}
    return TiledSlide(sl.name, sl.dimensions, tissue, grid, min_tissue, white, thumb, seconds)
