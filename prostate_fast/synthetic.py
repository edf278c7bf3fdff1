"""Deterministic synthetic H&E-like prostate needle-biopsy slides, annotations and truth masks.

No real prostate data ships with the project, so the demo, the tests and the benchmarks use slides made
here. A slide is white glass (slight noise, dust specks, optional green/blue pen marks on the glass)
carrying one to several needle-biopsy cores: long, thin, slightly curved bands stacked vertically. A core
is pink stroma with fibrous texture and benign glands (large star-shaped pale lumens in a ring of
epithelium with purple nuclei); "cancer" regions (polygons inside a core) are crowded small glands with
small lumens and large dark nuclei, visibly darker and more purple.

Design
------
* **Geometry up front, pixels on demand.** :func:`synthetic_params` draws every feature that spans more
  than a few pixels (cores, glands, cancer polygons, dust, pen strokes) from ``seed`` in level-0
  pixel coordinates (``l0_xy``: x then y). Polygon vertices are integers, so every consumer
  (painted copy, GeoJSON, mask) rasterises exactly the same shape.
* **Per-pixel noise is a function of the global (x, y) and the seed**: an integer hash (lowbias32) of
  the coordinates, value noise on a lattice aligned to global coordinates, and nuclei placed at hashed
  positions of a global cell grid. Any window therefore renders the same pixels, whatever window or
  strip it is part of: :func:`render_region` renders a window plus a margin (for the blur) and crops.
* **Stain model.** Tissue is rendered as haematoxylin and eosin concentrations, blurred, and turned into
  RGB through a Beer-Lambert lookup table (one gather per pixel).
* **Bounded memory.** :func:`make_synthetic` renders one tile row (256 rows) at a time in chunks of
  4096 columns with the same code path as :func:`render_region`, streams 256x256 JPEG tiles into
  ``tifffile`` (rendering threads feed two writer threads, one for the slide, one for the painted
  copy) and keeps the 4x-downsampled next level in a temporary raw file beside the outputs, read
  back for the next level. Peak memory does not depend on the slide height and hardly on its width.
* **Atomic output.** Every file is written under a temporary name and renamed when all are complete.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import queue
import tempfile
import threading
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import cv2
import numpy as np

from ._util import atomic_path, check_parent, naming_disk_errors, resolve_threads

__all__ = [
    "CANCER_RGB",
    "CODES",
    "SyntheticParams",
    "SyntheticSlide",
    "make_synthetic",
    "render_region",
    "synthetic_params",
    "truth_mask",
]

CODES = {"background": 0, "benign": 1, "cancer": 2}
"""Truth-mask codes."""
CANCER_RGB = (0, 255, 0)
"""The marker colour of the painted copy."""

_CHUNK = 4096  # columns rendered at once by make_synthetic
_M1, _M2 = np.uint32(0x7FEB352D), np.uint32(0x846CA68B)
_U16, _U15 = np.uint32(16), np.uint32(15)
# stain optical densities (per unit concentration) against the glass brightness _BG
_BG = 241.0
_OD_H = -np.log(np.array([80.0, 50.0, 140.0]) / _BG)
_OD_E = -np.log(np.array([225.0, 150.0, 190.0]) / _BG)


def _lut256(v: list[float]) -> np.ndarray:
    out = np.zeros(256, np.float32)
    out[: len(v)] = v
    return out


# tissue labels: stroma, benign epithelium, benign lumen, cancer epithelium, cancer lumen,
# cancer stroma, glass; per-label base eosin/haematoxylin, fibre weight, nucleus candidates
# (label 7: basal half of benign epithelium, where its nuclei sit)
_LAB_E = _lut256([0.30, 0.55, 0.05, 0.50, 0.10, 0.45, 0.0, 0.50])
_LAB_H = _lut256([0.03, 0.12, 0.01, 0.36, 0.05, 0.16, 0.0, 0.14])
_LAB_FIB = _lut256([0.95, 0.10, 0.03, 0.08, 0.03, 0.55, 0.0, 0.10])
_NUC_P = np.array([0.035, 0.04, 0.0, 0.8, 0.02, 0.15, 0.0, 0.9])  # chance per candidate cell
_NUC_R = np.array([1.6, 3.0, 2.5, 3.9, 3.0, 2.4, 0.0, 3.0])  # minor radius (px at 0.5 µm/px)
_NUC_EL = np.array([3.0, 1.3, 1.2, 1.15, 1.2, 2.0, 1.0, 1.35])  # elongation
_NUC_DK = np.array([170, 210, 150, 250, 200, 200, 0, 215])  # darkness (0-255)


# ----------------------------------------------------------------------------------------- hashing
def _mix64(x: int) -> int:
    """splitmix64 finaliser on a Python int (keys derived from the seed)."""
    x = (x + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return x ^ (x >> 31)


def _key(seed: int, salt: int) -> np.uint32:
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
def _stain_lut() -> np.ndarray:
    """(65536, 3) uint8: RGB for haematoxylin index (high byte) and eosin index (low byte)."""
    conc = np.arange(256, dtype=np.float64) / 100.0
    od = conc[:, None, None] * _OD_H + conc[None, :, None] * _OD_E
    return np.clip(np.rint(_BG * np.exp(-od)), 0, 255).astype(np.uint8).reshape(-1, 3)


# ---------------------------------------------------------------------------------------- geometry
@dataclass(frozen=True, eq=False)
class _Glands:
    """Gland parameters (arrays of equal length, sorted by ``cy``)."""

    cx: np.ndarray
    cy: np.ndarray
    r: np.ndarray  # outer radius
    e: np.ndarray  # epithelium thickness
    shape: np.ndarray  # (n, 9): aspect, angle, a2, p2, a3, p3, infold k, infold depth, infold phase
    rmax: float

    @staticmethod
    def make(rng: np.random.Generator, parts: list[tuple], infold: float) -> _Glands:
        """Glands from (cx, cy, r, e) array tuples, with random shapes."""
        cx, cy, r, e = (np.concatenate([p[i] for p in parts] or [np.zeros(0)]) for i in range(4))
        lo = [0.65, 0, 0, 0, 0, 0, 5, 0.3 * infold, 0]
        hi = [1.0, np.pi, 0.12, 6.3, 0.08, 6.3, 10, infold, 6.3]
        shape = rng.uniform(lo, hi, size=(len(cx), 9))
        shape[:, 6] = np.floor(shape[:, 6])  # infolding count, 5 to 9
        o = np.argsort(cy, kind="stable")
        rmax = float(r.max()) * 1.25 if len(cx) else 0.0
        return _Glands(cx[o], cy[o], r[o], e[o], shape[o], rmax)

    def polys(
        self, x0: int, y0: int, x1: int, y1: int, depths: tuple[float, ...]
    ) -> list[np.ndarray]:
        """Rings ((n, 36, 2) int32, window-relative) of glands touching the box, one per depth.

        Depth 0 is the outer border, depth 1 the lumen (``e`` inside, with the infoldings).
        """
        lo, hi = np.searchsorted(self.cy, [y0 - self.rmax, y1 + self.rmax])
        sel = np.arange(lo, hi)
        sel = sel[(self.cx[sel] > x0 - self.rmax) & (self.cx[sel] < x1 + self.rmax)]
        th = np.linspace(0, 2 * np.pi, 36, endpoint=False)[None, :]
        asp, ang, a2, p2, a3, p3, k, dep, ph = self.shape[sel].T[:, :, None]
        r_out = self.r[sel, None] * (1 + a2 * np.cos(2 * th + p2) + a3 * np.cos(3 * th + p3))
        fold = dep * (0.5 + 0.5 * np.cos(k * th + ph))
        ca, sa = np.cos(ang), np.sin(ang)
        out = []
        for d in depths:
            rr = np.maximum(r_out - d * self.e[sel, None], 0) * (1 - d * fold)
            u, v = rr * np.cos(th), rr * asp * np.sin(th)
            px = self.cx[sel, None] + u * ca - v * sa - x0
            py = self.cy[sel, None] + u * sa + v * ca - y0
            out.append(np.rint(np.stack([px, py], axis=-1)).astype(np.int32))
        return out


@dataclass(frozen=True, eq=False)
class SyntheticParams:
    """Up-front geometry of one synthetic slide (level-0 pixels); build with :func:`synthetic_params`."""

    width: int
    height: int
    seed: int
    mpp: float
    scale: float  # feature size factor: 0.5 / mpp
    core_polygons: tuple[np.ndarray, ...]  # (n, 2) int32 rings (not closed)
    cancer_polygons: tuple[np.ndarray, ...]
    cancer_core: tuple[int, ...]  # core index of each cancer polygon
    benign: _Glands = field(repr=False)
    cancer: _Glands = field(repr=False)
    dust: np.ndarray = field(repr=False)  # (n, 4): x, y, radius, grey level
    pen: tuple[tuple[np.ndarray, int, tuple[int, int, int]], ...] = field(repr=False)


def _bbox(poly: np.ndarray, pad: float = 0) -> tuple[float, float, float, float]:
    return (
        poly[:, 0].min() - pad,
        poly[:, 1].min() - pad,
        poly[:, 0].max() + pad,
        poly[:, 1].max() + pad,
    )


def _in_poly(px: np.ndarray, py: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Point-in-polygon test of points (px, py)."""
    c = poly.reshape(-1, 1, 2).astype(np.float32)
    pts = zip(px.tolist(), py.tolist(), strict=True)
    return np.array([cv2.pointPolygonTest(c, p, False) > 0 for p in pts], bool)


def _check_int(name: str, v: object, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int | np.integer) or not lo <= v <= hi:
        raise ValueError(f"{name} must be an integer in [{lo}, {hi}], got {v!r}")
    return int(v)


def _check_float(name: str, v: object, lo: float, hi: float) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float | np.number) or not lo < v <= hi:
        raise ValueError(f"{name} must be a number in ({lo}, {hi}], got {v!r}")
    return float(v)


def synthetic_params(
    width: int,
    height: int,
    seed: int = 0,
    *,
    mpp: float = 0.5,
    n_cores: int | None = None,
    n_cancer: int | None = None,
    pen_marks: bool = False,
) -> SyntheticParams:
    """Draw the geometry of a synthetic slide from ``seed``.

    Parameters
    ----------
    width, height : int
        Level-0 size in pixels, 1024 to 1,000,000 each.
    seed : int
        Any integer in [0, 2**63); the same arguments always give the same geometry.
    mpp : float
        Microns per level-0 pixel; features (nuclei, glands) scale with ``0.5 / mpp``.
    n_cores : int, optional
        Number of biopsy cores, 1 to 6 (default: 2 to 4, from the seed).
    n_cancer : int, optional
        Number of cancer polygons, 0 to ``3 * n_cores`` (default: about one per core, at least 1).
    pen_marks : bool
        Add green/blue marker strokes on the glass (never on tissue).

    Returns
    -------
    SyntheticParams
        Frozen geometry used by :func:`render_region` and :func:`make_synthetic`.

    Raises
    ------
    ValueError
        If an argument is out of range (the message names it).
    """
    W = _check_int("width", width, 1024, 1_000_000)
    H = _check_int("height", height, 1024, 1_000_000)
    seed = _check_int("seed", seed, 0, 2**63 - 1)
    mpp = _check_float("mpp", mpp, 0.0, 50.0)
    if n_cores is not None:
        n_cores = _check_int("n_cores", n_cores, 1, 6)
    rng = np.random.default_rng([seed, 0x5EED])
    nc = n_cores if n_cores is not None else int(rng.integers(2, 5))
    if n_cancer is not None:
        n_cancer = _check_int("n_cancer", n_cancer, 0, 3 * nc)
    s = max(0.25, 0.5 / mpp)
    nca = n_cancer if n_cancer is not None else max(1, int(rng.binomial(2 * nc, 0.5)))
    per_core = np.zeros(nc, int)
    order = rng.permutation(nc)
    for i in range(nca):
        per_core[order[i % nc]] += 1

    my = 0.06 * H
    slot = (H - 2 * my) / nc
    cores, cancers, cancer_core, benign, cglands = [], [], [], [], []
    for c in range(nc):
        t = min(rng.uniform(0.03, 0.05) * W, 0.5 * slot)
        L = rng.uniform(0.6, 0.85) * W
        x0 = rng.uniform(0.04 * W, 0.96 * W - L)
        dev = 0.5 * slot - 0.55 * t
        yc0 = my + (c + 0.5) * slot + rng.uniform(-0.15, 0.15) * dev
        A, T = rng.uniform(-0.35, 0.35) * dev, rng.uniform(-0.3, 0.3) * dev
        B, f, ph = 0.1 * dev * rng.uniform(), rng.uniform(1, 3), rng.uniform(0, 6.3, 3)
        u = 0.5 - 0.5 * np.cos(np.pi * np.linspace(0, 1, 161))
        xs = x0 + L * u
        yc = (
            yc0
            + A * ((2 * u - 1) ** 2 - 1 / 3)
            + T * (u - 0.5)
            + B * np.sin(2 * np.pi * f * u + ph[0])
        )
        ue = min(0.3, 0.55 * t / L)
        d = np.minimum(u, 1 - u)
        cap = np.sqrt(np.clip(1 - (1 - np.minimum(d / ue, 1)) ** 2, 0, 1))
        wob = 1 + 0.06 * np.sin(6 * np.pi * u + ph[1]) + 0.03 * np.sin(16 * np.pi * u + ph[2])
        hh = t / 2 * cap * (wob + rng.normal(0, 0.012, u.size))
        poly = np.rint(
            np.concatenate([np.stack([xs, yc - hh], 1), np.stack([xs, yc + hh], 1)[::-1]])
        )
        cores.append(poly.astype(np.int32))

        def band(
            x: np.ndarray, xs: np.ndarray = xs, yc: np.ndarray = yc, hh: np.ndarray = hh
        ) -> tuple:
            return np.interp(x, xs, yc), np.interp(x, xs, hh)

        # cancer polygons: ellipse-ish in (x, offset from the centre line), disjoint slots along the core
        k = per_core[c]
        dil = []
        rc = float(np.clip(0.06 * t, 10 * s, 30 * s))
        for j in range(k):
            w_slot = 0.76 / k
            uc = 0.12 + w_slot * (j + rng.uniform(0.4, 0.6))
            a = w_slot * rng.uniform(0.25, 0.42) * L
            hmin = band(np.linspace(x0 + (uc * L - a), x0 + (uc * L + a), 32))[1].min()
            b = rng.uniform(0.5, 0.75) * hmin
            v0 = rng.uniform(-1, 1) * max(0.0, 0.85 * hmin - b)
            m = int(rng.integers(24, 49))
            th = np.linspace(0, 2 * np.pi, m, endpoint=False)
            amp, phs = rng.uniform(0, 0.08, 3), rng.uniform(0, 6.3, 3)
            rr = 1 + sum(amp[i] * np.cos((i + 2) * th + phs[i]) for i in range(3))
            for pad, dest in ((0.0, cancers), (rc * 1.5 + 0.35 * t / 2, dil)):
                x = x0 + uc * L + (a + pad) * rr * np.cos(th)
                cy_, hx = band(x)
                v = np.clip(v0 + (b + pad) * rr * np.sin(th), -0.9 * hx, 0.9 * hx)
                dest.append(np.rint(np.stack([x, cy_ + v], 1)).astype(np.int32))
            cancer_core.append(c)
        # benign glands: jittered grid inside the band, outside (dilated) cancer polygons
        rb = float(min(np.clip(0.2 * t, 28 * s, 150 * s), 0.3 * t))
        sp = 2.3 * rb
        gx, gy = np.meshgrid(np.arange(x0, x0 + L, sp), np.arange(yc.min() - t, yc.max() + t, sp))
        gx = gx.ravel() + rng.uniform(-0.35, 0.35, gx.size) * sp
        gy = gy.ravel() + rng.uniform(-0.35, 0.35, gy.size) * sp
        gr = rb * rng.uniform(0.7, 1.3, gx.size)
        cy_, hx = band(gx)
        keep = (np.abs(gy - cy_) < hx - gr * 1.15 - 3 * s) & (rng.uniform(size=gx.size) < 0.9)
        for p in dil:
            keep &= ~_in_poly(gx, gy, p)
        e = np.clip(0.3 * gr, 10 * s, 20 * s)
        benign.append((gx[keep], gy[keep], gr[keep], e[keep]))
        for p in cancers[len(cancers) - k :]:  # crowded small glands filling each cancer polygon
            bx0, by0, bx1, by1 = _bbox(p)
            sp = 2.35 * rc
            gx, gy = np.meshgrid(np.arange(bx0, bx1, sp), np.arange(by0, by1, sp))
            gx = gx.ravel() + rng.uniform(-0.25, 0.25, gx.size) * sp
            gy = gy.ravel() + rng.uniform(-0.25, 0.25, gy.size) * sp
            gr = rc * rng.uniform(0.7, 1.3, gx.size)
            e = np.where(rng.uniform(size=gx.size) < 0.15, gr, np.clip(0.45 * gr, 5 * s, 10 * s))
            keep = _in_poly(gx, gy, p)
            cglands.append((gx[keep], gy[keep], gr[keep], e[keep]))

    gb, gc = _Glands.make(rng, benign, 0.35), _Glands.make(rng, cglands, 0.0)
    # dust and pen have their own streams: these options do not move the other features
    nd = min(400, 4 + W * H // 20_000_000)
    dust = np.random.default_rng([seed, 0xD057]).uniform([0, 0, s, 70], [W, H, 4 * s, 160], (nd, 4))
    pen = _pen_strokes(np.random.default_rng([seed, 0x9E4]), W, H, cores) if pen_marks else ()
    geometry = (tuple(cores), tuple(cancers), tuple(cancer_core), gb, gc, dust, pen)
    return SyntheticParams(W, H, seed, mpp, s, *geometry)


def _pen_strokes(rng: np.random.Generator, W: int, H: int, cores: list[np.ndarray]) -> tuple:
    """Marker strokes (polyline, thickness, RGB) in the glass left or right of every core."""
    left = min(int(p[:, 0].min()) for p in cores)
    right = W - max(int(p[:, 0].max()) for p in cores)
    th = max(4, int(0.004 * W))
    gx0, gx1 = (0, left) if left >= right else (W - right, W)
    gx0, gx1 = gx0 + 2 * th, gx1 - 2 * th
    colours = [(40, 140, 80), (40, 70, 170)]
    strokes = []
    for i in range(int(rng.integers(2, 5))):
        amp = 0.2 * (gx1 - gx0) if i == 0 else rng.uniform(0.5, 2.5) * th
        cx, cy = rng.uniform(gx0 + amp, max(gx0 + amp, gx1 - amp)), rng.uniform(0.1 * H, 0.9 * H)
        if i == 0:  # a long wavy line
            yy = np.linspace(0.15 * H, 0.85 * H, 24)
            pts = np.stack([cx + amp * np.sin(yy / H * 7 + rng.uniform(0, 6)), yy], 1)
        else:  # a small loop
            a = np.linspace(0, 2 * np.pi, 20)
            pts = np.stack([cx + amp * np.cos(a), cy + amp * 1.3 * np.sin(a)], 1)
        if gx1 - gx0 > 2 * amp:  # the gap holds no tissue: every core starts right of it
            strokes.append((np.rint(pts).astype(np.int32), th, colours[int(rng.integers(0, 2))]))
    return tuple(strokes)


# --------------------------------------------------------------------------------------- rendering
def _margin(s: float) -> int:
    return int(math.ceil(9 * s)) + 8


def _fill(img: np.ndarray, polys: tuple, x0: int, y0: int, value: object) -> None:
    h, w = img.shape[:2]
    for p in polys:
        bx0, by0, bx1, by1 = _bbox(p)
        if bx1 >= x0 and by1 >= y0 and bx0 < x0 + w and by0 < y0 + h:
            cv2.fillPoly(img, [(p - (x0, y0)).astype(np.int32)], value)


def _tissue_he(
    P: SyntheticParams, x0: int, y0: int, codes: np.ndarray, hf: np.ndarray
) -> np.ndarray:
    """Haematoxylin/eosin indices (h, w, 2) uint8 of a tissue rectangle at global (x0, y0)."""
    h, w = codes.shape
    s = P.scale
    lab = np.zeros((h, w), np.uint8)
    for g, labels, depths in (
        (P.benign, (7, 1, 2), (0.0, 0.45, 1.0)),
        (P.cancer, (3, 4), (0.0, 1.0)),
    ):
        rings = g.polys(x0, y0, x0 + w, y0 + h, depths)
        for ring, v in zip(rings, labels, strict=True):
            if len(ring):
                cv2.fillPoly(lab, list(ring), v)
    lab[(codes == 2) & (lab == 0)] = 5
    lab[codes == 0] = 6
    fib = _value_noise(_key(P.seed, 11), x0, y0, w, h, max(2, round(70 * s)), max(2, round(7 * s)))
    fib2 = _value_noise(
        _key(P.seed, 12), x0, y0, w, h, max(2, round(16 * s)), max(2, round(16 * s))
    )
    fib = np.clip(fib * 1.0 + fib2 * 0.6 - 0.45, 0, 1)
    E = cv2.LUT(lab, _LAB_E) + cv2.LUT(lab, _LAB_FIB) * fib
    H = cv2.LUT(lab, _LAB_H)
    nuc = _nuclei(P, x0, y0, lab)
    nf = nuc.astype(np.float32) * np.float32(1.3 / 255)
    H += nf
    E *= 1 - 0.35 * nf
    grain = (hf & np.uint32(63)).astype(np.float32) * np.float32(0.008) + np.float32(0.75)
    E *= grain
    he = cv2.merge([cv2.convertScaleAbs(H, alpha=100), cv2.convertScaleAbs(E, alpha=100)])
    return cv2.GaussianBlur(he, (0, 0), 0.8 * s)


def _nuclei(P: SyntheticParams, x0: int, y0: int, lab: np.ndarray) -> np.ndarray:
    """Nucleus darkness (uint8) from candidates on a global cell grid; density follows ``lab``."""
    h, w = lab.shape
    s = P.scale
    c = max(3, round(7 * s))
    pad = math.ceil(9 * s)
    i0, j0 = (x0 - pad) // c, (y0 - pad) // c
    hh = _hash2d(
        i0, j0, (x0 + w + pad) // c - i0 + 1, (y0 + h + pad) // c - j0 + 1, _key(P.seed, 21)
    )
    px = (np.arange(hh.shape[1])[None, :] + i0 + (hh & np.uint32(255)) / 256.0) * c
    py = (
        np.arange(hh.shape[0])[:, None] + j0 + ((hh >> np.uint32(8)) & np.uint32(255)) / 256.0
    ) * c
    u = (hh >> np.uint32(16)).astype(np.float64) / 65536.0
    ix, iy = np.floor(px).astype(np.int64) - x0, np.floor(py).astype(np.int64) - y0
    inside = (ix >= 0) & (ix < w) & (iy >= 0) & (iy < h)
    cl = np.full(hh.shape, 6, np.uint8)
    cl[inside] = lab[iy[inside], ix[inside]]
    on = u < np.take(_NUC_P, cl)
    h2 = _mix32(hh[on] ^ np.uint32(0xA511E9B3))
    px, py, cl = px[on] - x0, py[on] - y0, cl[on]
    f = [((h2 >> np.uint32(8 * k)) & np.uint32(255)) / 255.0 for k in range(4)]
    rb = np.take(_NUC_R, cl) * s * (0.8 + 0.4 * f[0])
    ra = rb * np.take(_NUC_EL, cl) * (0.85 + 0.3 * f[1])
    ang = np.where(np.take(_NUC_EL, cl) > 1.8, (f[2] - 0.5) * 50, f[2] * 180)
    dk = np.take(_NUC_DK, cl) * (0.8 + 0.2 * f[3])
    out = np.zeros((h, w), np.uint8)
    fixed = np.rint(np.stack([px, py, ra, rb], axis=1) * 16).astype(int).tolist()  # 4 bits
    for (cx, cy, a, b), an, d in zip(fixed, ang.tolist(), dk.astype(int).tolist(), strict=True):
        cv2.ellipse(out, (cx, cy), (a, b), an, 0, 360, d, -1, cv2.LINE_AA, 4)
    return out


def _ink(rgb: np.ndarray, x0: int, y0: int, pts: np.ndarray, th: float, ink: tuple) -> None:
    """Multiply ``rgb`` (window at global x0, y0) by a polyline of width ``th`` in ``ink``.

    ``ink`` is (R, G, B, opacity): a translucent colour that multiplies what lies beneath.

    Coverage comes from exact distances to the segments (antialiased, the same in every window).
    """
    h, w = rgb.shape[:2]
    lo, hi = pts.min(axis=0) - th / 2 - 1, pts.max(axis=0) + th / 2 + 2
    bx0, by0 = max(x0, math.floor(lo[0])), max(y0, math.floor(lo[1]))
    bx1, by1 = min(x0 + w, math.ceil(hi[0])), min(y0 + h, math.ceil(hi[1]))
    if bx1 <= bx0 or by1 <= by0:
        return
    cov = np.zeros((by1 - by0, bx1 - bx0))
    for a, b in zip(pts[:-1].astype(np.float64), pts[1:].astype(np.float64), strict=True):
        lo, hi = np.minimum(a, b) - th / 2 - 1, np.maximum(a, b) + th / 2 + 2
        cx0, cy0 = max(bx0, math.floor(lo[0])), max(by0, math.floor(lo[1]))
        cx1, cy1 = min(bx1, math.ceil(hi[0])), min(by1, math.ceil(hi[1]))
        if cx1 <= cx0 or cy1 <= cy0:
            continue
        px = np.arange(cx0, cx1, dtype=np.float64)[None, :] - a[0]
        py = np.arange(cy0, cy1, dtype=np.float64)[:, None] - a[1]
        d = b - a
        t = np.clip((px * d[0] + py * d[1]) / max(d @ d, 1e-9), 0, 1)
        c = np.clip(th / 2 + 0.5 - np.hypot(px - t * d[0], py - t * d[1]), 0, 1)
        sub = cov[cy0 - by0 : cy1 - by0, cx0 - bx0 : cx1 - bx0]
        np.maximum(sub, c, out=sub)
    yy, xx = np.nonzero(cov)
    a = cov[yy, xx, None] * ink[3]
    yy, xx = yy + (by0 - y0), xx + (bx0 - x0)
    rgb[yy, xx] = np.rint(rgb[yy, xx] * (1 - a + a * (np.array(ink[:3]) / 255))).astype(np.uint8)


def _render(P: SyntheticParams, x0: int, y0: int, w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
    """RGB and codes of a window (no checks): render with a margin, then crop."""
    m = _margin(P.scale)
    xa, ya, W2, H2 = x0 - m, y0 - m, w + 2 * m, h + 2 * m
    codes = np.zeros((H2, W2), np.uint8)
    _fill(codes, P.core_polygons, xa, ya, 1)
    _fill(codes, P.cancer_polygons, xa, ya, 2)
    hf = _hash2d(xa, ya, W2, H2, _key(P.seed, 1))
    noise = (hf >> np.uint32(24)).astype(np.uint8) & np.uint8(7)  # glass noise, all channels
    lut = _stain_lut()
    glass = noise + lut[0, 0]
    rgb = cv2.merge([glass, glass, glass])
    rows = np.flatnonzero(codes.any(axis=1))
    if rows.size:  # one rectangle per run of tissue rows
        for run in np.split(rows, np.flatnonzero(np.diff(rows) > 1) + 1):
            r0, r1 = max(0, run[0] - m), min(H2, run[-1] + 1 + m)
            cols = np.flatnonzero(codes[r0:r1].any(axis=0))
            c0, c1 = max(0, cols[0] - m), min(W2, cols[-1] + 1 + m)
            he = _tissue_he(P, xa + c0, ya + r0, codes[r0:r1, c0:c1], hf[r0:r1, c0:c1])
            idx = he[..., 0].astype(np.uint16) << 8
            idx |= he[..., 1]
            n = noise[r0:r1, c0:c1]
            rgb[r0:r1, c0:c1] = cv2.add(np.take(lut, idx, axis=0), cv2.merge([n, n, n]))
    for x, y, r, g in P.dust:
        if xa - 8 <= x < xa + W2 + 8 and ya - 8 <= y < ya + H2 + 8:
            _ink(rgb, xa, ya, np.array([[x, y], [x, y]]), 2 * r, (g, g, g, 1.0))
    for pts, th, col in P.pen:
        _ink(rgb, xa, ya, pts, th, (*col, 0.8))
    return rgb[m : m + h, m : m + w], codes[m : m + h, m : m + w]


def render_region(
    params: SyntheticParams, l0_xy: tuple[int, int], size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Render a window of a synthetic slide in memory (the pixels ``make_synthetic`` writes).

    Parameters
    ----------
    params : SyntheticParams
        Geometry from :func:`synthetic_params`.
    l0_xy : tuple of int
        Top-left corner (x, y) in level-0 pixels; may lie partly outside the slide (glass there).
    size : tuple of int
        (width, height) of the window, 1 to 16384 each.

    Returns
    -------
    rgb : numpy.ndarray
        (height, width, 3) uint8, before JPEG compression.
    codes : numpy.ndarray
        (height, width) uint8 truth codes: 0 glass, 1 benign tissue, 2 cancer.

    Notes
    -----
    Every pixel is a function of its global (x, y) and the seed, so overlapping windows agree.
    Cost is about 50-100 ns per tissue pixel and 10 ns per glass pixel, single-threaded.
    """
    if not isinstance(params, SyntheticParams):
        raise ValueError(f"params must be a SyntheticParams, got {type(params).__name__}")
    x = _check_int("l0_xy[0]", l0_xy[0], -(2**30), 2**30)
    y = _check_int("l0_xy[1]", l0_xy[1], -(2**30), 2**30)
    w = _check_int("size[0]", size[0], 1, 16384)
    h = _check_int("size[1]", size[1], 1, 16384)
    rgb, codes = _render(params, x, y, w, h)
    return np.ascontiguousarray(rgb), np.ascontiguousarray(codes)


# ----------------------------------------------------------------------------------------- writing
@dataclass(frozen=True, eq=False)
class SyntheticSlide:
    """The files written by :func:`make_synthetic` and the truth they encode."""

    slide: Path
    painted: Path
    geojson: Path
    mask: Path
    meta: Path
    width: int
    height: int
    mpp: float
    objective_power: float
    mask_downsample: int
    seed: int
    cancer_polygons: tuple[np.ndarray, ...] = field(repr=False)  # (n, 2) float, level-0 x, y
    core_polygons: tuple[np.ndarray, ...] = field(repr=False)

    def truth_mask(self) -> np.ndarray:
        """Load the truth mask: uint8 (ceil(height / d), ceil(width / d)), codes as :data:`CODES`."""
        mask = cv2.imread(str(self.mask), cv2.IMREAD_UNCHANGED)
        if mask is None:
            raise FileNotFoundError(f"{self.mask}: cannot read the truth mask")
        return mask


def _fill_centres(mask: np.ndarray, poly: np.ndarray, d: int, value: int) -> None:
    """Set ``mask`` pixels whose centre, the level-0 point (d*j + (d-1)/2, d*i + (d-1)/2), lies in
    ``poly`` (even-odd rule; a scanline fill, vectorised over rows and edges)."""
    off = (d - 1) / 2
    x0, y0 = poly[:, 0].astype(np.float64), poly[:, 1].astype(np.float64)
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    i_lo = max(0, math.ceil((y0.min() - off) / d))
    i_hi = min(mask.shape[0], math.floor((y0.max() - off) / d) + 1)
    if i_hi <= i_lo:
        return
    yc = (np.arange(i_lo, i_hi) * d + off)[:, None]
    cross = (y0 > yc) != (y1 > yc)
    with np.errstate(divide="ignore", invalid="ignore"):
        xc = np.where(cross, x0 + (yc - y0) * (x1 - x0) / (y1 - y0), np.inf)
    xc.sort(axis=1)
    js = np.clip(np.ceil((xc - off) / d), 0, mask.shape[1])
    for r, n in enumerate(cross.sum(axis=1)):
        for a, b in js[r, :n].reshape(-1, 2).astype(int).tolist():
            mask[i_lo + r, a:b] = value


def truth_mask(params: SyntheticParams, downsample: int) -> np.ndarray:
    """Truth codes at ``downsample``: uint8 (ceil(H / d), ceil(W / d)), as in the ``-mask.png`` file.

    Parameters
    ----------
    params : SyntheticParams
        Geometry from :func:`synthetic_params`.
    downsample : int
        Level-0 pixels per mask pixel, 1 to 4096.

    Returns
    -------
    numpy.ndarray
        Codes 0 (glass), 1 (benign tissue), 2 (cancer) of the level-0 point at the centre of each
        mask pixel, ``(d*j + (d-1)/2, d*i + (d-1)/2)``, tested against the polygons (even-odd rule).
    """
    d = _check_int("downsample", downsample, 1, 4096)
    mask = np.zeros((-(-params.height // d), -(-params.width // d)), np.uint8)
    for polys, v in ((params.core_polygons, 1), (params.cancer_polygons, 2)):
        for p in polys:
            _fill_centres(mask, p, d, v)
    return mask


def _level_dims(w: int, h: int) -> list[tuple[int, int]]:
    dims = [(w, h)]
    while max(dims[-1]) > 1024 and min(dims[-1]) >= 64:
        dims.append((dims[-1][0] // 4, dims[-1][1] // 4))
    return dims


def _tiles(chunks: Iterator[tuple[int, np.ndarray]], w: int, tile: int, raw: object) -> Iterator:
    """Yield edge-padded tiles of level chunks (row-major: tile rows, then chunks left to right).

    Each chunk is (x0, array of ``tile`` rows, fewer at the bottom). The 4x-downsampled next level is
    appended to the open file ``raw`` (or nothing when None) one tile row at a time.
    """
    w4 = w // 4
    buf = None
    for x0, arr in chunks:
        if raw is not None:
            if x0 == 0:
                buf = np.zeros((arr.shape[0] // 4, w4, 3), np.uint8)
            hh, ww = arr.shape[0] // 4, arr.shape[1] // 4
            if hh and ww:
                buf[:, x0 // 4 : x0 // 4 + ww] = cv2.resize(
                    arr[: hh * 4, : ww * 4], (ww, hh), interpolation=cv2.INTER_AREA
                )
            if x0 + arr.shape[1] >= w:  # row complete; before the last tiles (the consumer stops)
                raw.write(buf.tobytes())  # type: ignore[attr-defined]
        for c in range(0, arr.shape[1], tile):
            t = arr[:, c : c + tile]
            if t.shape[0] != tile or t.shape[1] != tile:
                t = np.pad(t, ((0, tile - t.shape[0]), (0, tile - t.shape[1]), (0, 0)), mode="edge")
            yield t


def _raw_chunks(path: Path, w: int, h: int, tile: int) -> Iterator[tuple[int, np.ndarray]]:
    with open(path, "rb") as f:
        for y in range(0, h, tile):
            n = min(tile, h - y)
            yield 0, np.fromfile(f, np.uint8, n * w * 3).reshape(n, w, 3)


class _Aborted(Exception):
    """Another thread of the writing pipeline failed."""


class _Channel:
    """A bounded queue whose ends give up when the pipeline is aborted."""

    _END = object()

    def __init__(self, abort: threading.Event) -> None:
        self.q: queue.Queue = queue.Queue(maxsize=4)
        self.abort = abort

    def put(self, item: object) -> None:
        while True:
            try:
                self.q.put(item, timeout=0.1)
                return
            except queue.Full:
                if self.abort.is_set():
                    raise _Aborted from None

    def close(self) -> None:
        self.put(self._END)

    def __iter__(self) -> Iterator:
        while True:
            try:
                item = self.q.get(timeout=0.1)
            except queue.Empty:
                if self.abort.is_set():
                    raise _Aborted from None
                continue
            if item is self._END:
                return
            yield item


def _write_pyramid(path: Path, chunks: Iterator, P: SyntheticParams, opts: dict) -> None:
    """Write a pyramidal JPEG TIFF from level-0 chunks (temporary raw levels beside ``path``)."""
    import tifffile

    dims = _level_dims(P.width, P.height)
    tile = opts["tile"]
    raws: list[Path] = []
    try:
        with (
            naming_disk_errors(path),  # two files are written at once: say which one failed
            tifffile.TiffWriter(path, bigtiff=P.width * P.height * 3 > 2**32 - 2**28) as tif,
        ):
            for lvl, (w, h) in enumerate(dims):
                if lvl + 1 < len(dims):
                    fd, name = tempfile.mkstemp(
                        prefix=f".{path.name}.", suffix=".raw", dir=path.parent
                    )
                    os.close(fd)
                    raws.append(Path(name))
                src = chunks if lvl == 0 else _raw_chunks(raws[lvl - 1], w, h, tile)
                ds = 4**lvl
                with (
                    open(raws[lvl], "wb")
                    if lvl + 1 < len(dims)
                    else contextlib.nullcontext() as raw
                ):
                    tif.write(
                        _tiles(src, w, tile, raw),
                        shape=(h, w, 3),
                        dtype=np.uint8,
                        tile=(tile, tile),
                        photometric="rgb",
                        compression="jpeg",
                        compressionargs={"level": opts["jpeg_quality"]},
                        resolution=(1e4 / (P.mpp * ds), 1e4 / (P.mpp * ds)),
                        resolutionunit="CENTIMETER",
                        subfiletype=0 if lvl == 0 else 1,
                        description=opts["description"] if lvl == 0 else None,
                        metadata=None,
                        software=False,
                        maxworkers=1,
                    )
    finally:
        for r in raws:
            r.unlink(missing_ok=True)


def _render_painted(P: SyntheticParams, x0: int, y0: int, w: int, h: int) -> tuple:
    """A level-0 chunk of the slide and of its painted copy (the same array when no cancer)."""
    rgb, _ = _render(P, x0, y0, w, h)
    painted = rgb
    for poly in P.cancer_polygons:
        bx0, by0, bx1, by1 = _bbox(poly)
        if bx1 >= x0 and by1 >= y0 and bx0 < x0 + w and by0 < y0 + h:
            painted = painted.copy() if painted is rgb else painted
            cv2.fillPoly(painted, [(poly - (x0, y0)).astype(np.int32)], CANCER_RGB)
    return rgb, painted


def _write_slides(P: SyntheticParams, slide: Path, painted: Path, opts: dict) -> None:
    """Render level 0 once (producer thread) and write the slide and its painted copy in parallel."""
    abort = threading.Event()
    errors: list[BaseException] = []
    to_slide, to_painted = _Channel(abort), _Channel(abort)
    tile = opts["tile"]
    chunk = max(tile, _CHUNK // tile * tile)

    def produce() -> None:
        rows, cols = range(0, P.height, tile), range(0, P.width, chunk)
        jobs = (
            (x, y, min(chunk, P.width - x), min(tile, P.height - y)) for y in rows for x in cols
        )
        with ThreadPoolExecutor(opts["n_threads"]) as pool:
            pending: deque = deque()
            for job in jobs:
                pending.append((job[0], pool.submit(_render_painted, P, *job)))
                while len(pending) > 2 * opts["n_threads"] or (pending and pending[0][1].done()):
                    x0, fut = pending.popleft()
                    rgb, painted = fut.result()
                    to_slide.put((x0, rgb))
                    to_painted.put((x0, painted))
            for x0, fut in pending:
                rgb, painted = fut.result()
                to_slide.put((x0, rgb))
                to_painted.put((x0, painted))
        to_slide.close()
        to_painted.close()

    def guarded(fn: object, *args: object) -> None:
        try:
            fn(*args)  # type: ignore[operator]
        except BaseException as exc:  # noqa: BLE001 - re-raised by the main thread
            errors.append(exc)
            abort.set()

    threads = [
        threading.Thread(target=guarded, args=(produce,), daemon=True),
        threading.Thread(
            target=guarded, args=(_write_pyramid, painted, to_painted, P, opts), daemon=True
        ),
    ]
    for t in threads:
        t.start()
    guarded(_write_pyramid, slide, to_slide, P, opts)
    for t in threads:
        t.join()
    real = [e for e in errors if not isinstance(e, _Aborted)]
    if errors:
        raise (real or errors)[0]


def _default_mask_downsample(w: int, h: int) -> int:
    d = 8
    while max(w, h) / d > 4096:
        d *= 2
    return d


def make_synthetic(
    out_dir: str | os.PathLike[str],
    *,
    name: str = "synthetic",
    width: int = 8192,
    height: int = 4096,
    seed: int = 0,
    mpp: float = 0.5,
    objective_power: float = 20.0,
    n_cores: int | None = None,
    n_cancer: int | None = None,
    pen_marks: bool = False,
    jpeg_quality: int = 90,
    tile: int = 256,
    mask_downsample: int | None = None,
    overwrite: bool = False,
    n_threads: int | None = None,
) -> SyntheticSlide:
    """Write a synthetic slide, its painted copy, the annotations and the truth into ``out_dir``.

    Parameters
    ----------
    out_dir : path
        Output folder (created if missing).
    name : str
        Base name of the files: ``{name}.tif``, ``{name}-painted.tif``, ``{name}.geojson``,
        ``{name}-mask.png``, ``{name}.json``.
    width, height : int
        Level-0 size in pixels, 1024 to 1,000,000 each.
    seed : int
        Same arguments and seed give byte-identical files.
    mpp : float
        Microns per level-0 pixel, written as TIFF resolution (centimetre unit) on every level.
    objective_power : float
        Recorded in the JSON ImageDescription of level 0 (OpenSlide's generic-tiff reports none).
    n_cores, n_cancer, pen_marks
        See :func:`synthetic_params`.
    jpeg_quality : int
        JPEG quality of the tiles (1-100), the same for the slide and the painted copy.
    tile : int
        Tile edge in pixels, a multiple of 16 in [64, 1024].
    mask_downsample : int, optional
        Level-0 pixels per truth-mask pixel (default 8, doubled until the mask's longer side is at most
        4096 pixels).
    overwrite : bool
        Replace existing files; otherwise ``FileExistsError`` is raised before anything is written.
    n_threads : int, optional
        Rendering threads (None = every core); the files are identical for any count.

    Returns
    -------
    SyntheticSlide
        Paths and truth (polygons in level-0 pixels).

    Raises
    ------
    ValueError
        If an argument is out of range (the message names it).
    FileExistsError
        If an output file exists and ``overwrite`` is false.

    Notes
    -----
    The TIFFs are pyramidal (levels downsampled by 4 until the longer side is at most 1024 pixels),
    tiled, JPEG (YCbCr 4:2:0, as Aperio scanners write) and open in OpenSlide as ``generic-tiff``.
    Level 0 is rendered once, in tile rows of 4096-column chunks, by ``n_threads`` threads while two
    threads encode the slide and the painted copy; lower levels come from 4x-downsampled temporary
    raw files beside the outputs. Peak memory does not grow with the height and barely with the
    width (max RSS 200 MB at 46000 x 23000, 290 MB at 100000 x 50000). Cost is about 30-40 ns of CPU
    per level-0 pixel for a typical slide (10-20 % tissue): a 1-gigapixel slide takes under a
    minute on 2 cores. Nothing is left in ``out_dir`` on failure.
    """
    if not isinstance(name, str) or not name or "/" in name or "\\" in name or name.startswith("."):
        raise ValueError(f"name must be a plain file name stem, got {name!r}")
    objective_power = _check_float("objective_power", objective_power, 0.0, 1000.0)
    jpeg_quality = _check_int("jpeg_quality", jpeg_quality, 1, 100)
    tile = _check_int("tile", tile, 64, 1024)
    if tile % 16:
        raise ValueError(f"tile must be a multiple of 16, got {tile}")
    pen_marks = bool(pen_marks)
    P = synthetic_params(
        width, height, seed, mpp=mpp, n_cores=n_cores, n_cancer=n_cancer, pen_marks=pen_marks
    )
    d = _default_mask_downsample(P.width, P.height) if mask_downsample is None else mask_downsample
    d = _check_int("mask_downsample", d, 1, 4096)
    out = Path(out_dir)
    suffixes = {
        "slide": ".tif",
        "painted": "-painted.tif",
        "geojson": ".geojson",
        "mask": "-mask.png",
        "meta": ".json",
    }
    files = {k: out / f"{name}{suf}" for k, suf in suffixes.items()}
    if not overwrite:
        for f in files.values():
            if f.exists():
                raise FileExistsError(
                    f"{f}: already exists; pass overwrite=True (--overwrite) to replace it"
                )
    check_parent(out)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    info = {
        "generator": "prostate_fast.synthetic",
        "version": 1,
        "seed": P.seed,
        "mpp": P.mpp,
        "objective_power": objective_power,
        "width": P.width,
        "height": P.height,
    }
    opts = {
        "tile": tile,
        "jpeg_quality": jpeg_quality,
        "n_threads": resolve_threads(n_threads),
        "description": json.dumps({"prostate_fast": info}),
    }
    cls = {"name": "Cancer", "color": list(CANCER_RGB)}
    features = [
        {
            "type": "Feature",
            "id": f"cancer-{i}",
            "geometry": {"type": "Polygon", "coordinates": [[*p.tolist(), p[0].tolist()]]},
            "properties": {"objectType": "annotation", "classification": cls},
        }
        for i, p in enumerate(P.cancer_polygons)
    ]
    geo = {"type": "FeatureCollection", "features": features}
    meta = {
        **info,
        "mask_downsample": d,
        "codes": CODES,
        "colors": {"cancer": list(CANCER_RGB)},
        "n_cores": len(P.core_polygons),
        "cancer_core": list(P.cancer_core),
        "pen_marks": pen_marks,
        "core_polygons": [p.tolist() for p in P.core_polygons],
        "cancer_polygons": [p.tolist() for p in P.cancer_polygons],
        "files": {k: f.name for k, f in files.items() if k != "meta"},
    }
    ok, png = cv2.imencode(".png", truth_mask(P, d))
    if not ok:  # pragma: no cover - OpenCV without PNG
        raise RuntimeError("OpenCV cannot encode PNG")
    try:
        with contextlib.ExitStack() as stack:
            tmp = {
                k: stack.enter_context(atomic_path(f, overwrite=overwrite))
                for k, f in files.items()
            }
            _write_slides(P, tmp["slide"], tmp["painted"], opts)
            with naming_disk_errors(files["mask"]):
                tmp["mask"].write_bytes(png.tobytes())
            with naming_disk_errors(files["geojson"]):
                tmp["geojson"].write_text(json.dumps(geo, indent=1) + "\n")
            tmp["meta"].write_text(json.dumps(meta, indent=1) + "\n")
    except BaseException:
        if created:
            with contextlib.suppress(OSError):
                out.rmdir()  # only when empty: the folder this call made
        raise
    polys = {
        k: tuple(p.astype(np.float64) for p in getattr(P, k))
        for k in ("cancer_polygons", "core_polygons")
    }
    return SyntheticSlide(
        **files,
        width=P.width,
        height=P.height,
        mpp=P.mpp,
        objective_power=objective_power,
        mask_downsample=d,
        seed=P.seed,
        **polys,
    )
