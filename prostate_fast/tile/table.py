"""Tile tables: a grid and each tile's white fraction on disk, as ``.csv`` or ``.npz``.

:func:`save_tile_table` writes (atomically) and :func:`load_tile_table` reads them back; the
``tiles`` command writes one per slide. Columns: :data:`TABLE_COLUMNS`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from pathlib import Path

import numpy as np

from .._util import atomic_path, write_npz
from ..errors import DatasetError
from ..slide import LevelChoice
from .grid import TileGrid

__all__ = ["TABLE_COLUMNS", "load_tile_table", "save_tile_table"]

#: Columns of a tile table, in order.
TABLE_COLUMNS = tuple(
    "l0_x l0_y level downsample tile_size row col tissue_fraction white_fraction region".split()
)


def _meta(grid: TileGrid) -> dict:
    return {
        "format": "prostate-fast tile table",
        "version": 1,
        "slide_name": grid.slide_name,
        "tile_size": grid.tile_size,
        "stride": grid.stride,
        "grid_shape": list(grid.grid_shape),
        **dataclasses.asdict(grid.choice),
    }


def _table_kind(path: Path) -> str:
    kind = path.suffix.lower()
    if kind not in (".csv", ".npz"):
        raise ValueError(f"a tile table must end in .csv or .npz, got {path}")
    return kind


def save_tile_table(
    grid: TileGrid,
    white_fraction: np.ndarray | None,
    path: str | os.PathLike[str],
    *,
    overwrite: bool = False,
) -> Path:
    """Write a grid and the tiles' white fractions as a ``.csv`` or ``.npz`` tile table.

    Parameters
    ----------
    grid : TileGrid
    white_fraction : numpy.ndarray or None
        (n,) white fraction of each tile (:func:`prostate_fast.tissue.white_fraction`); None
        writes NaN.
    path : str or PathLike
        Ending in ``.csv`` (text: two ``#`` lines, the second the grid's JSON metadata, then a
        header line with :data:`TABLE_COLUMNS` and one line per tile) or ``.npz`` (one array per
        column plus ``meta``, the JSON metadata).
    overwrite : bool
        Replace an existing file (refused otherwise).

    Returns
    -------
    pathlib.Path
        The path, written atomically (complete or absent).

    Raises
    ------
    ValueError
        A suffix other than .csv/.npz, or a white fraction of the wrong length.
    FileExistsError
        ``path`` exists and ``overwrite`` is false.
    """
    path = Path(path)
    kind = _table_kind(path)
    n = len(grid)
    if white_fraction is None:
        white = np.full(n, np.nan, np.float32)
    else:
        white = np.asarray(white_fraction, dtype=np.float32)
        if white.shape != (n,):
            raise ValueError(f"white_fraction must have shape ({n},), got {white.shape}")
    c = grid.choice
    cols = {
        "l0_x": grid.l0_xy[:, 0].astype(np.int64),
        "l0_y": grid.l0_xy[:, 1].astype(np.int64),
        "level": np.full(n, c.level, np.int32),
        "downsample": np.full(n, c.downsample, np.float64),
        "tile_size": np.full(n, grid.tile_size, np.int32),
        "row": grid.tile_rc[:, 0].astype(np.int32),
        "col": grid.tile_rc[:, 1].astype(np.int32),
        "tissue_fraction": grid.tissue_fraction.astype(np.float32),
        "white_fraction": white,
        "region": grid.region.astype(np.int32),
    }
    meta = json.dumps(_meta(grid))
    with atomic_path(path, overwrite=overwrite) as tmp:
        if kind == ".npz":
            write_npz(tmp, meta=np.array(meta), **cols)
        else:
            lines = [f"# prostate-fast tile table: {grid.slide_name}", f"# {meta}"]
            lines.append(",".join(TABLE_COLUMNS))
            fmt = f"{{}},{{}},{c.level},{float(c.downsample)!r},{grid.tile_size},{{}},{{}},"
            fmt += "{:.9g},{:.9g},{}"  # float32 fractions round-trip exactly with 9 digits
            names = ("l0_x", "l0_y", "row", "col", "tissue_fraction", "white_fraction", "region")
            rows = zip(*(cols[k].tolist() for k in names), strict=True)
            lines += [fmt.format(*row) for row in rows]
            tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _read_table(path: Path, kind: str) -> tuple[dict, dict[str, np.ndarray]]:
    if kind == ".npz":
        with np.load(path, allow_pickle=False) as z:
            return json.loads(str(z["meta"])), {k: z[k] for k in TABLE_COLUMNS}
    with open(path, encoding="utf-8") as fh:
        first, second, header = fh.readline(), fh.readline(), fh.readline()
    if not first.startswith("#") or not second.startswith("#"):
        raise ValueError("no metadata lines")
    names = header.strip().split(",")
    if tuple(names) != TABLE_COLUMNS:
        raise ValueError(f"columns {names} are not {list(TABLE_COLUMNS)}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # an empty table
        data = np.loadtxt(path, delimiter=",", skiprows=3, ndmin=2, dtype=np.float64)
    data = data.reshape(-1, len(TABLE_COLUMNS))
    return json.loads(second[1:]), {k: data[:, i] for i, k in enumerate(TABLE_COLUMNS)}


def load_tile_table(path: str | os.PathLike[str]) -> tuple[TileGrid, np.ndarray]:
    """Read a table written by :func:`save_tile_table`.

    Returns
    -------
    grid : TileGrid
        The grid (slide name, level choice, tile size, stride, tiles, fractions, regions).
    white_fraction : numpy.ndarray
        (n,) float32 white fraction per tile (NaN where none was stored).

    Raises
    ------
    ValueError
        A suffix other than .csv/.npz.
    DatasetError
        The file is missing, unreadable, or not a tile table (the message names it).
    """
    path = Path(path)
    kind = _table_kind(path)
    try:
        meta, cols = _read_table(path, kind)
        choice = LevelChoice(**{k: meta[k] for k in LevelChoice.__dataclass_fields__})
        grid = TileGrid(
            str(meta["slide_name"]),
            choice,
            int(meta["tile_size"]),
            int(meta["stride"]),
            (int(meta["grid_shape"][0]), int(meta["grid_shape"][1])),
            np.stack([cols["row"], cols["col"]], axis=1).astype(np.int32),
            np.stack([cols["l0_x"], cols["l0_y"]], axis=1).astype(np.int64),
            cols["tissue_fraction"].astype(np.float32),
            cols["region"].astype(np.int32),
        )
        for name, want in (("level", choice.level), ("tile_size", grid.tile_size)):
            if len(grid) and np.any(cols[name] != want):
                raise ValueError(f"column {name} disagrees with the metadata ({want})")
    except (OSError, ValueError, KeyError, TypeError, IndexError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{path}: not a readable tile table ({exc})") from exc
    return grid, cols["white_fraction"].astype(np.float32)
