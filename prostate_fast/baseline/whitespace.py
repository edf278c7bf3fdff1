"""White tiles the 2018 study's way: every tile of the full grid, every pixel, in a Python loop.

The study cut the whole 20x image into 128 px tiles and looked at each pixel of each tile in Python
to decide which tiles were white (3 h 45 min per slide). This is that algorithm, written plainly,
with prostate-fast's definition of a white pixel (see :mod:`prostate_fast.tissue`): smallest
channel >= ``min_brightness`` and largest - smallest <= ``max_saturation``. It is the reference
that :func:`prostate_fast.tissue.white_fraction` must equal exactly, and the yardstick of
``bench/bench_tissue.py``; do not use it for real work.
"""

from __future__ import annotations

import numpy as np

from ..slide.core import LevelChoice, Slide
from ..tile import full_grid
from ..tissue import WHITE_MAX_SATURATION, WHITE_MIN_BRIGHTNESS

__all__ = ["white_fraction_loop", "white_tiles_loop"]


def white_fraction_loop(
    tiles: np.ndarray,
    min_brightness: int = WHITE_MIN_BRIGHTNESS,
    max_saturation: int = WHITE_MAX_SATURATION,
) -> np.ndarray:
    """White fraction of each (height, width, 3) uint8 tile, one pixel at a time.

    Returns (n,) float32: white pixels / (height * width), divided in Python floats (double) and
    rounded once to float32, as the native kernel's caller does.
    """
    out = np.zeros(len(tiles), dtype=np.float32)
    for i, tile in enumerate(tiles):
        height, width = tile.shape[0], tile.shape[1]
        white = 0
        for y in range(height):
            for x in range(width):
                r = int(tile[y, x, 0])
                g = int(tile[y, x, 1])
                b = int(tile[y, x, 2])
                lo = min(r, g, b)
                hi = max(r, g, b)
                if lo >= min_brightness and hi - lo <= max_saturation:
                    white += 1
        out[i] = white / (height * width)
    return out


def white_tiles_loop(
    slide: Slide,
    choice: LevelChoice,
    tile_size: int = 128,
    min_brightness: int = WHITE_MIN_BRIGHTNESS,
    max_saturation: int = WHITE_MAX_SATURATION,
) -> tuple[np.ndarray, np.ndarray]:
    """Read every tile of the full grid, one by one, and measure it with the per-pixel loop.

    Returns ``(l0_xy, white)``: (n, 2) int64 corners of all tiles of the full grid and their
    (n,) float32 white fractions.
    """
    grid = full_grid(slide, choice, tile_size)
    white = np.zeros(len(grid), dtype=np.float32)
    for i in range(len(grid)):
        x, y = grid.l0_xy[i]
        tile = slide.read_scaled((int(x), int(y)), (tile_size, tile_size), choice)
        white[i] = white_fraction_loop([tile], min_brightness, max_saturation)[0]
    return grid.l0_xy, white
