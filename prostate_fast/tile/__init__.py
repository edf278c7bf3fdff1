"""The tile stage: which square tiles of a slide are processed, at which magnification.

Coordinate frames (used by every module; names carry the frame):

* ``l0_xy``: (x, y) of a pixel in **level-0** pixels of the slide, x to the right, y down, origin at
  the top-left corner: the frame of OpenSlide's ``read_region`` and of QuPath/ASAP annotations.
* ``tile_rc``: (row, column) of a tile in the grid; tile (r, c) has its top-left corner at
  ``l0_xy = (round(c * stride * downsample), round(r * stride * downsample))``.
* ``mask_rc``: (row, column) of a pixel of a low-resolution mask whose pixel covers
  ``mask_downsample`` level-0 pixels per side.

A tile is ``tile_size`` x ``tile_size`` pixels **at the target magnification**; it covers
``tile_size * downsample`` level-0 pixels per side, where ``downsample`` is level-0 pixels per tile
pixel (2.0 for 20x tiles from a 40x scan). Tiles are read straight from the slide, never written as
files.

Modules: :mod:`.grid` (:class:`TileGrid`, :func:`full_grid`, :func:`build_grid` over a
:class:`~prostate_fast.tissue.TissueMask` with ``min_tissue``, :func:`read_tiles`,
:func:`tile_white_fraction`), :mod:`.table` (:func:`save_tile_table` / :func:`load_tile_table`: a
grid with each tile's white fraction as a ``.csv`` or ``.npz`` table), :mod:`.thumbnail`
(:func:`render_grid_thumbnail`: the mask outline and the kept tiles on a thumbnail) and
:mod:`.core` (:func:`tile_slide`: tissue, grid, white fraction and thumbnail of one slide, what
the ``tiles`` command runs).
"""

from __future__ import annotations

from .core import TiledSlide, tile_slide
from .grid import MIN_TISSUE, TileGrid, build_grid, full_grid, read_tiles, tile_white_fraction
from .table import TABLE_COLUMNS, load_tile_table, save_tile_table
from .thumbnail import render_grid_thumbnail

__all__ = [
    "MIN_TISSUE",
    "TABLE_COLUMNS",
    "TileGrid",
    "TiledSlide",
    "build_grid",
    "full_grid",
    "load_tile_table",
    "read_tiles",
    "render_grid_thumbnail",
    "save_tile_table",
    "tile_slide",
    "tile_white_fraction",
]
