"""Seeded, position-keyed randomness and the stain model of the synthetic slides.

Every per-pixel random quantity is a function of the global level-0 (x, y) and the seed, never of
the window being rendered: :func:`_hash2d` hashes coordinates (lowbias32) under a key derived from
the seed (splitmix64), and :func:`_value_noise` interpolates hashes on a lattice aligned to global
coordinates. Any window therefore renders the same pixels, whatever window or strip it is part of.

Stain: tissue is described by haematoxylin and eosin concentrations (indices 0-255, 1/100 unit
each); :func:`_stain_lut` turns an (H, E) index pair into RGB by Beer-Lambert absorption against
the glass brightness, so colouring is one gather per pixel. The optical densities and the glass
brightness here are the standard look; a lab (:mod:`.labs`) brings its own.
"""

from __future__ import annotations

from functools import cache

import cv2
import numpy as np

_M1, _M2 = np.uint32(0x7FEB352D), np.uint32(0x846CA68B)
_U16, _U15 = np.uint32(16), np.uint32(15)
# stain optical densities (per unit concentration) against the glass brightness _BG
_BG = 241.0
_OD_H = -np.log(np.array([80.0, 50.0, 140.0]) / _BG)
_OD_E = -np.log(np.array([225.0, 150.0, 190.0]) / _BG)


def _mix64(x: int) -> int:
    """splitmix64 finaliser on a Python int (keys derived from the seed)."""
    x = (x + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return x ^ (x >> 31)


def _key(seed: int, salt: int) -> np.uint32:
    """A 32-bit hash key for one random stream (``salt``) of ``seed``."""
    return np.uint32(_mix64(_mix64(seed) ^ salt) & 0xFFFFFFFF)


def _mix32(h: np.ndarray) -> np.ndarray:
    """lowbias32 integer hash, in place on a uint32 array."""
    h ^= h >> _U16
    h *= _M1
    h ^= h >> _U15
    h *= _M2
    h ^= h >> _U16
    return h


def _hash2d(x0: int, y0: int, w: int, h: int, key: np.uint32) -> np.ndarray:
    """uint32 hash of every global (x, y) in the window, shape (h, w)."""
    ys = np.arange(y0, y0 + h, dtype=np.int64).astype(np.uint32)
    xs = np.arange(x0, x0 + w, dtype=np.int64).astype(np.uint32)
    rows = _mix32(ys * np.uint32(0x9E3779B1) ^ key)
    return _mix32(rows[:, None] ^ (xs * np.uint32(0x85EBCA77))[None, :])


def _value_noise(key: np.uint32, x0: int, y0: int, w: int, h: int, sx: int, sy: int) -> np.ndarray:
    """Smooth noise in [0, 1) on a lattice of spacing (sx, sy) aligned to global coordinates."""
    i0, j0 = x0 // sx - 2, y0 // sy - 2
    ni, nj = (x0 + w) // sx - i0 + 3, (y0 + h) // sy - j0 + 3
    lat = _hash2d(i0, j0, ni, nj, key).astype(np.float32) * np.float32(2.0**-32)
    up = cv2.resize(lat, (ni * sx, nj * sy), interpolation=cv2.INTER_CUBIC)
    return up[y0 - j0 * sy : y0 - j0 * sy + h, x0 - i0 * sx : x0 - i0 * sx + w]


@cache
def _stain_lut(
    od_h: tuple[float, ...] = tuple(_OD_H),
    od_e: tuple[float, ...] = tuple(_OD_E),
    background: tuple[float, ...] = (_BG, _BG, _BG),
) -> np.ndarray:
    """(65536, 3) uint8: RGB for haematoxylin index (high byte) and eosin index (low byte).

    The optical densities and the glass brightness are a lab's (:mod:`.labs`; default: the
    standard look).
    """
    conc = np.arange(256, dtype=np.float64) / 100.0
    od = conc[:, None, None] * np.asarray(od_h) + conc[None, :, None] * np.asarray(od_e)
    bg = np.asarray(background, dtype=np.float64)
    return np.clip(np.rint(bg * np.exp(-od)), 0, 255).astype(np.uint8).reshape(-1, 3)
