"""The 2018 study's overlay, written plainly: one JPEG file per tile, blended one by one, reassembled.

The study tiled the 20x slide into 128 px JPEG files, and for the overlay opened every tile file,
alpha-blended a green image over the tiles predicted as cancer with OpenCV (``cv2.addWeighted``),
wrote each tile back as a file (17 minutes for a slide), then reassembled the tile files into one
image with ImageMagick ``montage`` (27 s). :func:`cut_tile_files` reproduces the tiling output,
:func:`blend_tile_files` the per-tile blend and :func:`reassemble_tile_files` the montage (read
every tile file, paste it, write one flat JPEG: no pyramid, no mpp, which slide viewers cannot page
through). These are the yardstick ``bench/bench_overlay.py`` times
:func:`prostate_fast.overlay.write_overlay` against.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["blend_tile_files", "cut_tile_files", "reassemble_tile_files"]


def _tile_name(r: int, c: int) -> str:
    return f"tile_r{r:05d}_c{c:05d}.jpg"


def cut_tile_files(
    image_reader: object,
    tile_rc: np.ndarray,
    tile_size: int,
    out_dir: str | os.PathLike[str],
    *,
    quality: int = 95,
) -> list[Path]:
    """Write tiles as JPEG files (the study's tiling output), one ``cv2.imwrite`` per tile.

    ``image_reader(x, y, w, h)`` returns RGB uint8 of the slide at the tiling level.
    """
    import cv2

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for r, c in np.asarray(tile_rc).tolist():
        tile = image_reader(c * tile_size, r * tile_size, tile_size, tile_size)  # type: ignore[operator]
        p = out / _tile_name(r, c)
        cv2.imwrite(
            str(p), cv2.cvtColor(tile, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality]
        )
        paths.append(p)
    return paths


def blend_tile_files(
    tile_files: Sequence[Path],
    positive: Sequence[bool],
    out_dir: str | os.PathLike[str],
    *,
    alpha: float = 0.4,
    colour: tuple[int, int, int] = (0, 255, 0),
    quality: int = 95,
) -> list[Path]:
    """Blend ``colour`` over the positive tile files, one file at a time, as the study did.

    Every tile file is read and written again (the study rewrote them all); the positive ones are
    blended with ``cv2.addWeighted(tile, 1 - alpha, colour_image, alpha, 0)``.
    """
    import cv2

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    bgr = (int(colour[2]), int(colour[1]), int(colour[0]))
    written = []
    for path, pos in zip(tile_files, positive, strict=True):
        tile = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if tile is None:
            raise OSError(f"{path}: cannot read the tile file")
        if pos:
            solid = np.empty_like(tile)
            solid[:] = bgr
            tile = cv2.addWeighted(tile, 1.0 - alpha, solid, alpha, 0.0)
        dst = out / Path(path).name
        cv2.imwrite(str(dst), tile, [cv2.IMWRITE_JPEG_QUALITY, quality])
        written.append(dst)
    return written


def reassemble_tile_files(
    tile_files: Sequence[Path],
    tile_rc: np.ndarray,
    tile_size: int,
    grid_shape: tuple[int, int],
    out_path: str | os.PathLike[str] | None,
    *,
    quality: int = 90,
) -> np.ndarray:
    """Montage: read every tile file, paste it at its grid place, write one flat JPEG.

    Returns the assembled image (RGB). ``out_path`` None skips the final write.
    """
    import cv2

    rows, cols = grid_shape
    canvas = np.full((rows * tile_size, cols * tile_size, 3), 255, np.uint8)
    for path, (r, c) in zip(tile_files, np.asarray(tile_rc).tolist(), strict=True):
        tile = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if tile is None:
            raise OSError(f"{path}: cannot read the tile file")
        y, x = r * tile_size, c * tile_size
        canvas[y : y + tile_size, x : x + tile_size] = tile
    if out_path is not None:
        cv2.imwrite(str(out_path), canvas, [cv2.IMWRITE_JPEG_QUALITY, quality])
    return cv2.cvtColor(canvas, cv2.COLOR_BGR2RGB)
