"""The 2018 study's way of storing a training set: every tile a JPEG file, one folder per class.

The study cut each slide into 128 px tiles and wrote every tile with ``cv2.imwrite`` into a folder
named after its class, then trained from those files. This is that, written plainly (one tile at a
time, one thread), as the yardstick for :func:`prostate_fast.dataset.build_dataset`, which packs
the same tiles into RecordIO with several threads.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..slide.core import LevelChoice, Slide

__all__ = ["export_tile_files", "load_tile_files"]


def export_tile_files(
    slide: Slide,
    choice: LevelChoice,
    l0_xy: np.ndarray,
    labels: np.ndarray,
    classes: Sequence[str],
    out_dir: str | Path,
    *,
    tile_size: int = 128,
    quality: int = 95,
) -> list[Path]:
    """Write every tile as ``out_dir/<class>/<slide>_<x>_<y>.jpg`` with ``cv2.imwrite``.

    Parameters
    ----------
    slide : Slide
        The open slide.
    choice : LevelChoice
        The scale the tiles are read at.
    l0_xy : numpy.ndarray
        (n, 2) level-0 (x, y) of each tile's top-left corner.
    labels : numpy.ndarray
        (n,) class index of each tile.
    classes : sequence of str
        Class names (folder names).
    out_dir : path
    tile_size : int
    quality : int
        JPEG quality.

    Returns
    -------
    list of pathlib.Path
        The files written, in tile order.
    """
    import cv2

    out = Path(out_dir)
    stem = Path(slide.name).stem
    paths = []
    for (x, y), label in zip(np.asarray(l0_xy), np.asarray(labels), strict=True):
        folder = out / classes[int(label)]
        folder.mkdir(parents=True, exist_ok=True)
        rgb = slide.read_scaled((int(x), int(y)), (tile_size, tile_size), choice)
        path = folder / f"{stem}_{int(x)}_{int(y)}.jpg"
        cv2.imwrite(
            str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality]
        )
        paths.append(path)
    return paths


def load_tile_files(paths: Sequence[str | Path]) -> np.ndarray:
    """Read tile files back one by one with ``cv2.imread``: (n, h, w, 3) RGB uint8."""
    import cv2

    tiles = [cv2.cvtColor(cv2.imread(str(p), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB) for p in paths]
    return np.stack(tiles) if tiles else np.zeros((0, 0, 0, 3), np.uint8)
