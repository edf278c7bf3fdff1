"""The stain domain a model was trained on, and the test that a slide lies inside it.

A model only answers for slides that look like its training tissue. Training measures that look
on tiles of its train split (:func:`measure_domain`) and ``model.json`` records it under
``"domain"`` (:class:`StainDomain`); prediction measures the same on a sample of the slide's
tissue tiles and :func:`domain_problem` says why the slide is outside, or None.

What is measured, per tile (RGB uint8, at the model's scale):

* the optical density of each pixel, ``OD_c = -log10((I_c + 1) / 256)`` per channel; pixels
  with total OD under :data:`OD_TISSUE` (0.15) are glass, not tissue;
* the mean OD vector of the tile's tissue pixels (at least 5 % of the tile);
* the brightness of the tile's brightest pixels (99th percentile of the channel mean).

A domain is the median over tiles of the OD vector (its *stain direction*, the unit vector, and
its *density*, the length) and of the brightness, with the 5th-95th percentile spread of the
per-tile angle to the median direction.

The criterion (documented margins, wide enough that H&E from other labs, scanners and stain
batches passes, narrow enough that another modality does not):

1. **Brightfield.** The tissue detection found a bright background (glass), and the slide's
   tiles have bright pixels (median brightness >= :data:`MIN_BRIGHTNESS`, 120 of 255). A
   fluorescence or dark-field slide fails here.
2. **Stain direction.** The angle between the slide's median stain direction and the model's
   must not exceed ``max(MIN_ANGLE, model spread + ANGLE_MARGIN)`` (25 and 15 degrees). H&E
   from different labs stays within about 15 degrees of each other; IHC (DAB brown) and
   fluorescence lie 25-60 degrees away.
3. **Density.** The slide's median OD density must be within a factor :data:`DENSITY_FACTOR`
   (4) of the model's: a pale or over-stained H&E passes, an empty or black image does not.

Models written before the domain was recorded have none: the check is skipped (prediction says
so once).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..errors import ProstateFastError

__all__ = [
    "ANGLE_MARGIN",
    "DENSITY_FACTOR",
    "MIN_ANGLE",
    "MIN_BRIGHTNESS",
    "OD_TISSUE",
    "OutOfDomainError",
    "StainDomain",
    "domain_problem",
    "measure_domain",
    "tile_features",
]

OD_TISSUE = 0.15
"""Total optical density above which a pixel is tissue, not glass."""
MIN_TISSUE_SHARE = 0.05
"""Share of tissue pixels a tile needs to count in the stain statistics."""
MIN_BRIGHTNESS = 120.0
"""Median brightness (99th percentile of the channel mean) a brightfield slide's tiles reach."""
MIN_ANGLE = 25.0
"""Stain directions closer than this (degrees) are always in domain."""
ANGLE_MARGIN = 15.0
"""Degrees added to the model's own spread of stain directions."""
DENSITY_FACTOR = 4.0
"""A slide's median OD density may differ from the model's by this factor either way."""
DOMAIN_VERSION = 1


class OutOfDomainError(ProstateFastError):
    """A slide lies outside the stain domain of the model (the message names the slide and why).

    ``reason`` is the bare reason, for a worklist row ``needs manual read: <reason>``.
    """

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class StainDomain:
    """What the training tissue looked like (``model.json``'s ``"domain"``).

    Attributes
    ----------
    brightfield : bool
        Trained on brightfield (H&E-like) tiles: bright glass, absorbing stain.
    od_direction : tuple of 3 float
        Unit vector of the median tissue OD (R, G, B).
    od_density : float
        Median length of the tiles' mean tissue OD vector.
    angle_spread : float
        95th percentile of the tiles' angle to ``od_direction`` (degrees).
    brightness : float
        Median of the tiles' 99th percentile brightness (0-255).
    n_tiles : int
        Tiles measured (those with enough tissue for the stain statistics).
    """

    brightfield: bool
    od_direction: tuple[float, float, float]
    od_density: float
    angle_spread: float
    brightness: float
    n_tiles: int

    def to_json(self) -> dict[str, Any]:
        """The ``model.json`` form (plain floats, a version)."""
        d = asdict(self)
        d["od_direction"] = [round(float(v), 6) for v in self.od_direction]
        for k in ("od_density", "angle_spread", "brightness"):
            d[k] = round(float(d[k]), 6)
        return {"version": DOMAIN_VERSION, **d}

    @classmethod
    def from_json(cls, raw: Any, where: str) -> StainDomain:
        """Parse and check the ``model.json`` form; ValueError (naming ``where``) when bad."""
        if not isinstance(raw, Mapping) or raw.get("version") != DOMAIN_VERSION:
            raise ValueError(f"{where}: 'domain' must be an object of version {DOMAIN_VERSION}")
        if not isinstance(raw.get("brightfield"), bool):
            raise ValueError(f"{where}: domain.brightfield must be true or false")
        direction = raw.get("od_direction")
        if not isinstance(direction, list) or len(direction) != 3:
            raise ValueError(f"{where}: domain.od_direction must be 3 numbers")
        vec = tuple(_number(where, "od_direction", v, 0.0, 1.0) for v in direction)
        if abs(math.hypot(*vec) - 1.0) > 0.01:
            raise ValueError(f"{where}: domain.od_direction must be a unit vector, got {vec}")
        n = raw.get("n_tiles")
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"{where}: domain.n_tiles must be a positive integer, got {n!r}")
        return cls(
            brightfield=raw["brightfield"],
            od_direction=vec,  # type: ignore[arg-type]
            od_density=_number(where, "od_density", raw.get("od_density"), 1e-3, 10.0),
            angle_spread=_number(where, "angle_spread", raw.get("angle_spread"), 0.0, 90.0),
            brightness=_number(where, "brightness", raw.get("brightness"), 0.0, 255.0),
            n_tiles=n,
        )


def _number(where: str, key: str, value: Any, lo: float, hi: float) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or not lo <= value <= hi:
        raise ValueError(
            f"{where}: domain.{key} must be a number in [{lo:g}, {hi:g}], got {value!r}"
        )
    return float(value)


def tile_features(tiles: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per tile: mean tissue OD (n, 3), whether it has enough tissue (n,), brightness (n,).

    Parameters
    ----------
    tiles : numpy.ndarray
        (n, h, w, 3) uint8 RGB.
    """
    arr = np.asarray(tiles)
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[3] != 3:
        raise ValueError(f"tiles must be (n, h, w, 3) uint8, got {arr.dtype} {arr.shape}")
    n = len(arr)
    table = (-np.log10((np.arange(256, dtype=np.float32) + 1.0) / 256.0)).astype(np.float32)
    od = table[arr.reshape(n, -1, 3)]  # (n, p, 3)
    tissue = od.sum(axis=2) > OD_TISSUE
    count = tissue.sum(axis=1)
    mean = (od * tissue[..., None]).sum(axis=1) / np.maximum(count, 1)[:, None]
    enough = count >= MIN_TISSUE_SHARE * od.shape[1]
    bright = np.percentile(arr.reshape(n, -1, 3).mean(axis=2), 99, axis=1) if n else np.zeros(0)
    return mean.astype(np.float64), enough, np.asarray(bright, np.float64)


def _angle(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Degrees between the rows of ``a`` and the unit vector ``b``."""
    na = np.linalg.norm(a, axis=-1)
    cos = (a @ b) / np.maximum(na, 1e-12)
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def _summary(tiles: np.ndarray) -> tuple[np.ndarray, float, np.ndarray, float, int]:
    """(median direction, median density, per-tile angles, median brightness, tiles used)."""
    mean, enough, bright = tile_features(tiles)
    used = mean[enough]
    brightness = float(np.median(bright)) if len(bright) else 0.0
    if len(used) == 0:
        return np.zeros(3), 0.0, np.zeros(0), brightness, 0
    med = np.median(used, axis=0)
    direction = med / max(float(np.linalg.norm(med)), 1e-12)
    density = float(np.median(np.linalg.norm(used, axis=1)))
    return direction, density, _angle(used, direction), brightness, len(used)


def measure_domain(tiles: np.ndarray, *, brightfield: bool = True) -> StainDomain | None:
    """The stain domain of training tiles (see the module docstring); None when no tile has tissue.

    Parameters
    ----------
    tiles : numpy.ndarray
        (n, h, w, 3) uint8 RGB tiles, e.g. a few hundred spread over the train split.
    brightfield : bool
        The tiles come from brightfield slides (training data of this package always does).

    Returns
    -------
    StainDomain or None
    """
    direction, density, angles, brightness, n = _summary(tiles)
    if n == 0:
        return None
    return StainDomain(
        brightfield=bool(brightfield),
        od_direction=tuple(float(v) for v in direction),  # type: ignore[arg-type]
        od_density=density,
        angle_spread=float(np.percentile(angles, 95)),
        brightness=brightness,
        n_tiles=n,
    )


def domain_problem(
    domain: StainDomain, tiles: np.ndarray, *, dark_background: bool = False
) -> str | None:
    """Why a slide's tiles lie outside ``domain`` (one line), or None when they lie inside.

    Parameters
    ----------
    domain : StainDomain
        The model's.
    tiles : numpy.ndarray
        (n, h, w, 3) uint8 RGB: a sample of the slide's tissue tiles at the model's scale.
    dark_background : bool
        The tissue detection found a dark background (fluorescence or dark field).

    Returns
    -------
    str or None
    """
    direction, density, _, brightness, n = _summary(tiles)
    if domain.brightfield and (dark_background or brightness < MIN_BRIGHTNESS):
        why = "dark background" if dark_background else f"dark tiles (brightness {brightness:.0f})"
        return f"{why}: fluorescence or dark field, but the model was trained on brightfield"
    if n == 0:
        return None  # nothing stained to compare; "no tissue" handles empty slides
    limit = max(MIN_ANGLE, domain.angle_spread + ANGLE_MARGIN)
    angle = float(_angle(direction[None], np.asarray(domain.od_direction))[0])
    if angle > limit:
        return (
            f"stain colour {angle:.0f} degrees from the model's training tissue (limit "
            f"{limit:.0f}): another stain or modality"
        )
    ratio = density / domain.od_density
    if not 1 / DENSITY_FACTOR <= ratio <= DENSITY_FACTOR:
        return (
            f"stain density {density:.2f} OD against {domain.od_density:.2f} in training "
            f"(limit x{DENSITY_FACTOR:g}): too {'faint' if ratio < 1 else 'dark'}"
        )
    return None


def sample_indices(n: int, k: int) -> Sequence[int]:
    """At most ``k`` indices spread evenly over ``range(n)`` (deterministic)."""
    if n <= k:
        return range(n)
    return np.unique(np.linspace(0, n - 1, k).round().astype(np.int64)).tolist()
