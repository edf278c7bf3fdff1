"""Tile grids: which square tiles of a slide are processed, at which scale, and reading them.

:class:`TileGrid` is the stage's artefact (coordinate frames: see :mod:`prostate_fast.tile`).
:func:`full_grid` cuts every whole tile at a :class:`~prostate_fast.slide.LevelChoice`'s scale;
:func:`build_grid` keeps those a :class:`~prostate_fast.tissue.TissueMask` covers enough
(``min_tissue``), with each tile's tissue fraction and region from exact summed-area tables.
:func:`read_tiles` reads tiles (neighbours grouped into one region read at level 0) and
:func:`tile_white_fraction` measures their white share batch by batch.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..slide import LevelChoice, Slide

if TYPE_CHECKING:
    from ..tissue import TissueMask

__all__ = [
    "MIN_TISSUE",
    "TileGrid",
    "build_grid",
    "full_grid",
    "read_tiles",
    "tile_white_fraction",
]

MIN_TISSUE = 0.25


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


#: Level-0 side of the blocks in which :func:`read_tiles` groups neighbouring tiles.
_BLOCK = 1024


def read_tiles(
    slide: Slide, grid: TileGrid, indices: np.ndarray | None = None, *, n_threads: int = 1
) -> np.ndarray:
    """Read tiles of ``grid`` from ``slide`` as one (k, tile_size, tile_size, 3) uint8 array.

    Parameters
    ----------
    slide : Slide
        The slide the grid was built on (or a painted copy with the same geometry).
    grid : TileGrid
    indices : array of int, optional
        Which tiles (positions in the grid); all when None.
    n_threads : int
        Threads reading (and decoding) at once; 1 reads on the calling thread.

    Notes
    -----
    When the tiles are level-0 pixels read as they are (``choice.level == 0`` and
    ``choice.scale == 1``), neighbouring tiles are read together, one region per block of about
    1024 x 1024 level-0 pixels holding enough of them, and cut out of it: the pixels are the same
    as reading every tile alone (level-0 coordinates are whole pixels), with far fewer reads and
    tile decodings. Other grids are read tile by tile with :meth:`Slide.read_scaled`. With
    ``n_threads`` > 1 the blocks (and the lone tiles, in runs) are shared among threads: no
    slide tile is split between two threads within a block, and the pixels are the same.
    """
    idx = np.arange(len(grid)) if indices is None else np.asarray(indices, dtype=np.int64)
    if isinstance(n_threads, bool) or not isinstance(n_threads, int | np.integer) or n_threads < 1:
        raise ValueError(f"n_threads must be a positive integer, got {n_threads!r}")
    t = grid.tile_size
    out = np.empty((len(idx), t, t, 3), dtype=np.uint8)
    jobs = _read_jobs(grid, idx)
    if n_threads == 1 or len(jobs) < 2:
        for job in jobs:
            _read_job(slide, grid, idx, out, job)
        return out
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(min(int(n_threads), len(jobs)), thread_name_prefix="pf-tiles") as pool:
        list(pool.map(lambda job: _read_job(slide, grid, idx, out, job), jobs))
    return out


def _read_jobs(grid: TileGrid, idx: np.ndarray) -> list[tuple[bool, np.ndarray]]:
    """(is a block, positions into ``idx``): blocks read as one region, then runs of lone tiles."""
    t = grid.tile_size
    done = np.zeros(len(idx), bool)
    jobs: list[tuple[bool, np.ndarray]] = []
    if grid.choice.level == 0 and grid.choice.scale == 1.0 and len(idx) > 1:
        xy = grid.l0_xy[idx]
        block = (xy[:, 1] // _BLOCK) * (1 << 32) + xy[:, 0] // _BLOCK
        order = np.argsort(block, kind="stable")
        starts = np.flatnonzero(np.r_[True, np.diff(block[order]) != 0])
        for members in np.split(order, starts[1:]):
            x0, y0 = xy[members].min(axis=0)
            x1, y1 = xy[members].max(axis=0) + t
            if len(members) < 2 or len(members) * t * t * 4 < (x1 - x0) * (y1 - y0):
                continue  # too sparse: read these tiles alone
            jobs.append((True, members))
            done[members] = True
    lone = np.flatnonzero(~done)
    jobs += [(False, lone[s : s + 16]) for s in range(0, len(lone), 16)]
    return jobs


def _read_job(
    slide: Slide, grid: TileGrid, idx: np.ndarray, out: np.ndarray, job: tuple[bool, np.ndarray]
) -> None:
    """Fill ``out`` at the positions of one job of :func:`_read_jobs`."""
    t = grid.tile_size
    is_block, members = job
    if is_block:
        xy = grid.l0_xy[idx[members]]
        (x0, y0), (x1, y1) = xy.min(axis=0), xy.max(axis=0) + t
        region = slide.read_region((int(x0), int(y0)), 0, (int(x1 - x0), int(y1 - y0)))
        for k, (x, y) in zip(members, xy - (x0, y0), strict=True):
            out[k] = region[y : y + t, x : x + t]
        return
    for k in members:
        x, y = grid.l0_xy[idx[k]]
        out[k] = slide.read_scaled((int(x), int(y)), (t, t), grid.choice)


def tile_white_fraction(
    slide: Slide, grid: TileGrid, *, batch: int = 1024, n_threads: int | None = None, **white: int
) -> np.ndarray:
    """(n,) float32 white fraction of every tile of ``grid``, read ``batch`` tiles at a time.

    Tiles come from :func:`read_tiles` and are measured by
    :func:`prostate_fast.tissue.white_fraction` (``white``: its ``min_brightness`` and
    ``max_saturation``); memory is ``batch`` tiles.
    """
    from ..tissue import white_fraction

    if isinstance(batch, bool) or not isinstance(batch, int | np.integer) or batch <= 0:
        raise ValueError(f"batch must be a positive integer, got {batch!r}")
    out = np.zeros(len(grid), np.float32)
    for i in range(0, len(grid), batch):
        idx = np.arange(i, min(i + batch, len(grid)))
        out[idx] = white_fraction(read_tiles(slide, grid, idx), n_threads=n_threads, **white)
    return out


# -- grid over a tissue mask ----------------------------------------------------------------------
def _integral(mask: np.ndarray) -> np.ndarray:
    """(rows + 1, cols + 1) float64 summed-area table of a boolean mask."""
    ii = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), np.float64)
    np.cumsum(mask, axis=0, dtype=np.float64, out=ii[1:, 1:])
    np.cumsum(ii[1:, 1:], axis=1, out=ii[1:, 1:])
    return ii


def _area_at(ii: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Mask area left of x = u and above y = v (mask pixels, fractional u, v).

    The mask is piecewise constant, so the area is bilinear inside each pixel: bilinear
    interpolation of the summed-area table gives it exactly.
    """
    rows, cols = ii.shape[0] - 1, ii.shape[1] - 1
    u = np.clip(u, 0.0, cols)
    v = np.clip(v, 0.0, rows)
    c = np.minimum(np.floor(u).astype(np.int64), max(cols - 1, 0))
    r = np.minimum(np.floor(v).astype(np.int64), max(rows - 1, 0))
    fu, fv = u - c, v - r
    return (
        ii[r, c] * (1 - fu) * (1 - fv)
        + ii[r, c + 1] * fu * (1 - fv)
        + ii[r + 1, c] * (1 - fu) * fv
        + ii[r + 1, c + 1] * fu * fv
    )


def _box_share(ii: np.ndarray, x0: np.ndarray, y0: np.ndarray, side: float) -> np.ndarray:
    """Share of each square [x0, x0 + side) x [y0, y0 + side) (mask pixels) covered by the mask."""
    x1, y1 = x0 + side, y0 + side
    area = _area_at(ii, x1, y1) - _area_at(ii, x0, y1) - _area_at(ii, x1, y0) + _area_at(ii, x0, y0)
    return np.clip(area / (side * side), 0.0, 1.0)


def _tile_regions(
    tissue: TissueMask, x0: np.ndarray, y0: np.ndarray, side: float, candidates: np.ndarray
) -> np.ndarray:
    """Region id covering most of each tile (lowest id on ties), -1 for tiles without tissue."""
    region = np.full(len(x0), -1, np.int32)
    best = np.zeros(len(x0), np.float64)
    rows, cols = tissue.shape
    for reg in tissue.regions:
        bx0, by0, bx1, by1 = (v / tissue.downsample for v in reg.bbox_l0)
        c0, r0 = max(0, math.floor(bx0) - 1), max(0, math.floor(by0) - 1)
        c1, r1 = min(cols, math.ceil(bx1) + 1), min(rows, math.ceil(by1) + 1)
        near = candidates & (x0 < c1) & (x0 + side > c0) & (y0 < r1) & (y0 + side > r0)
        if not near.any():
            continue
        ii = _integral(tissue.labels[r0:r1, c0:c1] == reg.id)
        share = _box_share(ii, x0[near] - c0, y0[near] - r0, side)
        pos = np.flatnonzero(near)
        better = share > best[pos]
        best[pos[better]] = share[better]
        region[pos[better]] = reg.id
    return region


def build_grid(
    slide: Slide,
    tissue: TissueMask | None = None,
    *,
    magnification: float | None = 20.0,
    mpp: float | None = None,
    level: int | None = None,
    tile_size: int = 128,
    stride: int | None = None,
    min_tissue: float = MIN_TISSUE,
    regions: list[int] | tuple[int, ...] | None = None,
) -> TileGrid:
    """The tiles of a slide that lie on tissue, at a chosen magnification.

    Parameters
    ----------
    slide : Slide
    tissue : TissueMask, optional
        Mask of this slide (default: :func:`prostate_fast.tissue.detect_tissue`'s).
    magnification, mpp, level : float, float, int, optional
        Target magnification (default 20, the study's 20x), or microns per tile pixel, or a
        pyramid level read as it is; ``mpp`` or ``level`` overrides ``magnification``.
    tile_size : int
        Tile side in pixels at the target scale (default 128).
    stride : int, optional
        Pixels between tile origins at the target scale (default ``tile_size``; smaller overlaps).
    min_tissue : float
        Keep tiles whose tissue fraction (share of the tile covered by the mask) is at least
        this (default 0.25, in (0, 1]). On synthetic slides this keeps every tile that is at least
        half tissue, and under 2 % of the kept tiles are bare glass (tests/test_tile.py).
    regions : sequence of int, optional
        Keep only tiles of these region ids (see ``TissueMask.regions``); None keeps all.

    Returns
    -------
    TileGrid
        Kept tiles in row-major order, with their tissue fraction and region id (the region
        covering most of the tile).

    Raises
    ------
    ValueError
        Bad tile size, stride or ``min_tissue``, a region id the mask does not have, a mask made
        for another slide, or no target scale (see :meth:`Slide.choose_level`).
    SlideError
        A magnification or mpp asked of a slide that records neither.

    Notes
    -----
    The tissue fraction of every tile of the full grid comes from a summed-area table of the mask
    (exact fractional-pixel areas), in a few vectorised passes: milliseconds for a gigapixel slide.
    """
    if not (isinstance(min_tissue, int | float | np.number) and 0 < min_tissue <= 1):
        raise ValueError(f"min_tissue must be in (0, 1], got {min_tissue!r}")
    if mpp is not None or level is not None:
        magnification = None
    choice = slide.choose_level(magnification=magnification, mpp=mpp, level=level)
    full = full_grid(slide, choice, tile_size, stride)
    if tissue is None:
        from ..tissue import detect_tissue

        tissue = detect_tissue(slide)
    rows, cols = tissue.shape
    w0, h0 = slide.dimensions
    ds = tissue.downsample
    tol = 1.01 * ds + 1
    if not (abs(cols * ds - w0) <= tol and abs(rows * ds - h0) <= tol):
        raise ValueError(
            f"the tissue mask ({tissue.slide_name}, {cols}x{rows} at 1/{ds:g}) does not cover "
            f"{slide.name} ({w0}x{h0})"
        )
    if regions is not None:
        wanted = sorted({int(r) for r in regions})
        missing = [r for r in wanted if r not in tissue.region_ids]
        if missing:
            raise ValueError(f"regions {missing} not in {slide.name}: has {tissue.region_ids}")
    x0 = full.l0_xy[:, 0] / ds
    y0 = full.l0_xy[:, 1] / ds
    side = full.l0_tile_size / ds
    frac = _box_share(_integral(tissue.mask), x0, y0, side).astype(np.float32)
    keep = frac >= np.float32(min_tissue)
    region = _tile_regions(tissue, x0, y0, side, keep)
    if regions is not None:
        keep &= np.isin(region, wanted)
    return dataclasses.replace(full, tissue_fraction=frac, region=region).subset(keep)
