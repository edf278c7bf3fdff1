"""Tile grids: which square tiles of a slide are processed, at which magnification.

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
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .slide import LevelChoice, Slide

__all__ = ["TileGrid", "full_grid", "read_tiles"]


@dataclass(frozen=True, eq=False)
class TileGrid:
    """A set of tiles of one slide at one magnification.

    Attributes
    ----------
    slide_name : str
        File name of the slide (for messages and tables).
    choice : LevelChoice
        Level read and resampling factor (see :meth:`Slide.choose_level`).
    tile_size : int
        Tile side in pixels at the target magnification.
    stride : int
        Pixels (at the target magnification) between tile origins; < tile_size means overlap.
    grid_shape : (int, int)
        (rows, cols) of the full grid over the slide.
    tile_rc : numpy.ndarray
        (n, 2) int32 grid (row, column) of each kept tile, in row-major order.
    l0_xy : numpy.ndarray
        (n, 2) int64 level-0 (x, y) of each kept tile's top-left corner.
    tissue_fraction : numpy.ndarray
        (n,) float32 share of the tile covered by the tissue mask (1.0 when no mask was used).
    region : numpy.ndarray
        (n,) int32 id of the tissue region (biopsy core) the tile belongs to; -1 when none.
    """

    slide_name: str
    choice: LevelChoice
    tile_size: int
    stride: int
    grid_shape: tuple[int, int]
    tile_rc: np.ndarray
    l0_xy: np.ndarray
    tissue_fraction: np.ndarray
    region: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.tile_rc)
        for name, arr, width in (("tile_rc", self.tile_rc, 2), ("l0_xy", self.l0_xy, 2)):
            if arr.shape != (n, width):
                raise ValueError(f"{name} must have shape ({n}, {width}), got {arr.shape}")
        for name, arr in (("tissue_fraction", self.tissue_fraction), ("region", self.region)):
            if arr.shape != (n,):
                raise ValueError(f"{name} must have shape ({n},), got {arr.shape}")

    def __len__(self) -> int:
        return len(self.tile_rc)

    @property
    def level(self) -> int:
        """Slide level the tiles are read from."""
        return self.choice.level

    @property
    def downsample(self) -> float:
        """Level-0 pixels per tile pixel."""
        return self.choice.downsample

    @property
    def l0_tile_size(self) -> float:
        """Side of a tile in level-0 pixels."""
        return self.tile_size * self.choice.downsample

    def subset(self, keep: np.ndarray) -> TileGrid:
        """A grid with only the tiles selected by a boolean mask or index array."""
        keep = np.asarray(keep)
        return TileGrid(
            self.slide_name,
            self.choice,
            self.tile_size,
            self.stride,
            self.grid_shape,
            self.tile_rc[keep],
            self.l0_xy[keep],
            self.tissue_fraction[keep],
            self.region[keep],
        )


def _grid_origins(
    rows: int, cols: int, stride: int, downsample: float
) -> tuple[np.ndarray, np.ndarray]:
    rr, cc = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    tile_rc = np.stack([rr.ravel(), cc.ravel()], axis=1).astype(np.int32)
    l0_xy = np.rint(tile_rc[:, ::-1].astype(np.float64) * stride * downsample).astype(np.int64)
    return tile_rc, l0_xy


def full_grid(
    slide: Slide, choice: LevelChoice, tile_size: int = 128, stride: int | None = None
) -> TileGrid:
    """Every whole tile of the slide at ``choice``'s scale, no tissue filtering.

    The grid has ``floor((W/downsample - tile_size) / stride) + 1`` columns (likewise rows), so no
    tile runs past the slide's edge. This is the grid the 2018 study cut (every 128 px tile).
    """
    if not isinstance(tile_size, int | np.integer) or tile_size <= 0:
        raise ValueError(f"tile_size must be a positive integer, got {tile_size!r}")
    stride = tile_size if stride is None else stride
    if not isinstance(stride, int | np.integer) or stride <= 0:
        raise ValueError(f"stride must be a positive integer, got {stride!r}")
    w0, h0 = slide.dimensions
    wt, ht = w0 / choice.downsample, h0 / choice.downsample
    cols = max(0, int((wt - tile_size) // stride) + 1) if wt >= tile_size else 0
    rows = max(0, int((ht - tile_size) // stride) + 1) if ht >= tile_size else 0
    tile_rc, l0_xy = _grid_origins(rows, cols, stride, choice.downsample)
    n = len(tile_rc)
    return TileGrid(
        slide.name,
        choice,
        int(tile_size),
        int(stride),
        (rows, cols),
        tile_rc,
        l0_xy,
        np.ones(n, np.float32),
        np.full(n, -1, np.int32),
    )


def read_tiles(slide: Slide, grid: TileGrid, indices: np.ndarray | None = None) -> np.ndarray:
    """Read tiles of ``grid`` from ``slide`` as one (k, tile_size, tile_size, 3) uint8 array.

    Parameters
    ----------
    slide : Slide
        The slide the grid was built on (or a painted copy with the same geometry).
    grid : TileGrid
    indices : array of int, optional
        Which tiles (positions in the grid); all when None.
    """
    idx = np.arange(len(grid)) if indices is None else np.asarray(indices, dtype=np.int64)
    t = grid.tile_size
    out = np.empty((len(idx), t, t, 3), dtype=np.uint8)
    for k, i in enumerate(idx):
        x, y = grid.l0_xy[i]
        out[k] = slide.read_scaled((int(x), int(y)), (t, t), grid.choice)
    return out
