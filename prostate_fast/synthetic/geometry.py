"""The up-front geometry of a synthetic slide: cores, cancer polygons, glands, dust and pen strokes.

:func:`synthetic_params` draws every feature that spans more than a few pixels from ``seed``, in
level-0 pixel coordinates (``l0_xy``: x then y), and returns it as a frozen
:class:`SyntheticParams`. Polygon vertices are integers, so every consumer (the painted copy, the
GeoJSON, the truth mask) rasterises exactly the same shape.

The draw is one random stream consumed in a fixed order, core after core: the core's band
(:func:`_draw_core`), its cancer polygons (:func:`_draw_cancers`), its benign glands
(:func:`_draw_benign_glands`), the crowded glands filling its cancer polygons
(:func:`_draw_cancer_glands`); then the gland shapes. Dust and pen strokes have their own streams,
so switching pen marks on does not move any other feature.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from .labs import DEFAULT_LAB, LabProfile, lab_profile

__all__ = ["SyntheticParams", "synthetic_params"]


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
    lab: LabProfile = DEFAULT_LAB  # the look (stains, glass, blur, scanner); never the geometry


@dataclass(frozen=True, eq=False)
class _Core:
    """One biopsy core: a band of half-thickness ``hh`` around the centre line (``xs``, ``yc``)."""

    x0: float  # left end
    length: float
    thickness: float
    xs: np.ndarray
    yc: np.ndarray
    hh: np.ndarray
    polygon: np.ndarray  # (n, 2) int32 ring: the upper edge left to right, the lower one back

    def band(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Centre line and half-thickness of the core at the abscissae ``x``."""
        return np.interp(x, self.xs, self.yc), np.interp(x, self.xs, self.hh)


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
    lab: str | int | LabProfile | None = None,
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
    lab : str, int or LabProfile, optional
        The lab whose look the slide has (:func:`~.labs.lab_profile`; default: the standard
        look). The geometry does not depend on it.

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
    look = lab_profile(lab)
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
        core = _draw_core(rng, c, W, my, slot)
        cores.append(core.polygon)
        k = int(per_core[c])
        rc = float(np.clip(0.06 * core.thickness, 10 * s, 30 * s))
        polys, dilated = _draw_cancers(rng, core, k, rc)
        cancers += polys
        cancer_core += [c] * k
        benign.append(_draw_benign_glands(rng, core, dilated, s))
        cglands += _draw_cancer_glands(rng, polys, rc, s)

    gb, gc = _Glands.make(rng, benign, 0.35), _Glands.make(rng, cglands, 0.0)
    # dust and pen have their own streams: these options do not move the other features
    nd = min(400, 4 + W * H // 20_000_000)
    dust = np.random.default_rng([seed, 0xD057]).uniform([0, 0, s, 70], [W, H, 4 * s, 160], (nd, 4))
    pen = _pen_strokes(np.random.default_rng([seed, 0x9E4]), W, H, cores) if pen_marks else ()
    geometry = (tuple(cores), tuple(cancers), tuple(cancer_core), gb, gc, dust, pen)
    return SyntheticParams(W, H, seed, mpp, s, *geometry, lab=look)


def _draw_core(rng: np.random.Generator, c: int, W: int, my: float, slot: float) -> _Core:
    """Core ``c``: a long, thin, slightly curved band with rounded ends in its horizontal slot."""
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
        yc0 + A * ((2 * u - 1) ** 2 - 1 / 3) + T * (u - 0.5) + B * np.sin(2 * np.pi * f * u + ph[0])
    )
    ue = min(0.3, 0.55 * t / L)
    d = np.minimum(u, 1 - u)
    cap = np.sqrt(np.clip(1 - (1 - np.minimum(d / ue, 1)) ** 2, 0, 1))
    wob = 1 + 0.06 * np.sin(6 * np.pi * u + ph[1]) + 0.03 * np.sin(16 * np.pi * u + ph[2])
    hh = t / 2 * cap * (wob + rng.normal(0, 0.012, u.size))
    poly = np.rint(np.concatenate([np.stack([xs, yc - hh], 1), np.stack([xs, yc + hh], 1)[::-1]]))
    return _Core(x0, L, t, xs, yc, hh, poly.astype(np.int32))


def _draw_cancers(
    rng: np.random.Generator, core: _Core, k: int, rc: float
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """``k`` cancer polygons in disjoint slots along ``core``, and each one dilated.

    A polygon is ellipse-ish in (x, offset from the centre line) with a wobbly radius; its dilated
    twin (by a cancer gland's reach) keeps benign glands away from it.
    """
    x0, L, t = core.x0, core.length, core.thickness
    cancers, dilated = [], []
    for j in range(k):
        w_slot = 0.76 / k
        uc = 0.12 + w_slot * (j + rng.uniform(0.4, 0.6))
        a = w_slot * rng.uniform(0.25, 0.42) * L
        hmin = core.band(np.linspace(x0 + (uc * L - a), x0 + (uc * L + a), 32))[1].min()
        b = rng.uniform(0.5, 0.75) * hmin
        v0 = rng.uniform(-1, 1) * max(0.0, 0.85 * hmin - b)
        m = int(rng.integers(24, 49))
        th = np.linspace(0, 2 * np.pi, m, endpoint=False)
        amp, phs = rng.uniform(0, 0.08, 3), rng.uniform(0, 6.3, 3)
        rr = 1 + sum(amp[i] * np.cos((i + 2) * th + phs[i]) for i in range(3))
        for pad, dest in ((0.0, cancers), (rc * 1.5 + 0.35 * t / 2, dilated)):
            x = x0 + uc * L + (a + pad) * rr * np.cos(th)
            cy_, hx = core.band(x)
            v = np.clip(v0 + (b + pad) * rr * np.sin(th), -0.9 * hx, 0.9 * hx)
            dest.append(np.rint(np.stack([x, cy_ + v], 1)).astype(np.int32))
    return cancers, dilated


def _draw_benign_glands(
    rng: np.random.Generator, core: _Core, dilated: list[np.ndarray], s: float
) -> tuple[np.ndarray, ...]:
    """Benign glands (cx, cy, r, e): a jittered grid inside the band, outside ``dilated``."""
    t = core.thickness
    rb = float(min(np.clip(0.2 * t, 28 * s, 150 * s), 0.3 * t))
    sp = 2.3 * rb
    gx, gy = np.meshgrid(
        np.arange(core.x0, core.x0 + core.length, sp),
        np.arange(core.yc.min() - t, core.yc.max() + t, sp),
    )
    gx = gx.ravel() + rng.uniform(-0.35, 0.35, gx.size) * sp
    gy = gy.ravel() + rng.uniform(-0.35, 0.35, gy.size) * sp
    gr = rb * rng.uniform(0.7, 1.3, gx.size)
    cy_, hx = core.band(gx)
    keep = (np.abs(gy - cy_) < hx - gr * 1.15 - 3 * s) & (rng.uniform(size=gx.size) < 0.9)
    for p in dilated:
        keep &= ~_in_poly(gx, gy, p)
    e = np.clip(0.3 * gr, 10 * s, 20 * s)
    return gx[keep], gy[keep], gr[keep], e[keep]


def _draw_cancer_glands(
    rng: np.random.Generator, polygons: list[np.ndarray], rc: float, s: float
) -> list[tuple[np.ndarray, ...]]:
    """Crowded small glands (cx, cy, r, e) filling each cancer polygon, some of them solid."""
    out = []
    for p in polygons:
        bx0, by0, bx1, by1 = _bbox(p)
        sp = 2.35 * rc
        gx, gy = np.meshgrid(np.arange(bx0, bx1, sp), np.arange(by0, by1, sp))
        gx = gx.ravel() + rng.uniform(-0.25, 0.25, gx.size) * sp
        gy = gy.ravel() + rng.uniform(-0.25, 0.25, gy.size) * sp
        gr = rc * rng.uniform(0.7, 1.3, gx.size)
        e = np.where(rng.uniform(size=gx.size) < 0.15, gr, np.clip(0.45 * gr, 5 * s, 10 * s))
        keep = _in_poly(gx, gy, p)
        out.append((gx[keep], gy[keep], gr[keep], e[keep]))
    return out


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
