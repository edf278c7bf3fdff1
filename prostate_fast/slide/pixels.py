"""Pixel helpers shared by every slide reader: decoded image → RGB uint8, pasting, level origins.

Every reader returns RGB uint8 (height, width, 3). :func:`to_rgb` turns whatever a decoder gives
(gray, gray + alpha, RGB, RGBA; uint8, uint16 or bool) into that, compositing transparent pixels on
white with the native kernel (``_slide_cy.composite_on_white``), so glass and "no data" look the
same to every later stage. :func:`paste` and :func:`level_origin` place decoded tiles in a region.
"""

from __future__ import annotations

import math

import numpy as np

from .._util import resolve_threads

__all__ = ["composite_on_white", "level_origin", "paste", "to_rgb", "white"]


def composite_on_white(rgba: np.ndarray, n_threads: int | None) -> np.ndarray:
    """RGBA (straight alpha) → RGB on white, with the native kernel.

    Parameters
    ----------
    rgba : numpy.ndarray
        (height, width, 4) uint8.
    n_threads : int or None
        Threads for large images (None = all cores); small images use one. The bytes do not depend
        on it.

    Returns
    -------
    numpy.ndarray
        (height, width, 3) uint8, ``(c * a + 255 * (255 - a) + 127) // 255`` per channel.
    """
    from . import _slide_cy

    rgba = np.ascontiguousarray(rgba, dtype=np.uint8)
    out = np.empty(rgba.shape[:2] + (3,), dtype=np.uint8)
    threads = 1 if rgba.shape[0] * rgba.shape[1] < 1 << 16 else resolve_threads(n_threads)
    _slide_cy.composite_on_white(rgba, out, threads)
    return out


def to_rgb(arr: np.ndarray, n_threads: int | None = None) -> np.ndarray:
    """Any decoded image (gray, gray + alpha, RGB, RGBA; uint8, uint16 or bool) → RGB uint8.

    Parameters
    ----------
    arr : numpy.ndarray
        (height, width) or (height, width, channels); uint16 keeps its high byte, bool becomes
        0/255, a second or fourth channel is alpha (composited on white).
    n_threads : int, optional
        Threads for compositing (None = all cores).

    Returns
    -------
    numpy.ndarray
        C-contiguous (height, width, 3) uint8; ``arr`` itself when it already is one.

    Raises
    ------
    ValueError
        Another pixel type.
    """
    if arr.dtype == np.uint16:
        arr = (arr >> 8).astype(np.uint8)
    elif arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * 255
    elif arr.dtype != np.uint8:
        raise ValueError(f"unsupported pixel type {arr.dtype}")
    if arr.ndim == 2:
        arr = arr[:, :, None]
    c = arr.shape[2]
    if c == 1:
        return np.ascontiguousarray(np.repeat(arr, 3, axis=2))
    if c == 2:
        arr = np.concatenate([np.repeat(arr[:, :, :1], 3, axis=2), arr[:, :, 1:2]], axis=2)
        c = 4
    if c == 3:
        return np.ascontiguousarray(arr)
    return composite_on_white(arr[:, :, :4], n_threads)


def paste(out: np.ndarray, src: np.ndarray, x: int, y: int) -> None:
    """Copy ``src`` into ``out`` with its top-left at (x, y) of ``out``, clipped to ``out``."""
    h, w = out.shape[:2]
    x0, y0 = max(x, 0), max(y, 0)
    x1, y1 = min(x + src.shape[1], w), min(y + src.shape[0], h)
    if x1 > x0 and y1 > y0:
        out[y0:y1, x0:x1] = src[y0 - y : y1 - y, x0 - x : x1 - x]


def level_origin(l0_xy: tuple[int, int], downsample: float) -> tuple[int, int]:
    """Level-0 corner → pixel of a level of ``downsample`` (floor of l0 / downsample, as OpenSlide)."""
    return math.floor(l0_xy[0] / downsample), math.floor(l0_xy[1] / downsample)


def white(width: int, height: int) -> np.ndarray:
    """A white RGB uint8 region of ``width`` x ``height`` pixels (what lies outside a slide)."""
    return np.full((height, width, 3), 255, dtype=np.uint8)
