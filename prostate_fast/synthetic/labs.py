"""Synthetic "labs": how one laboratory's stainer and scanner make its slides look.

Real slides from different labs differ in colour far more than slides of one lab: the stain
batches and protocols change the haematoxylin and eosin optical densities (OD, per unit
concentration, Beer-Lambert), the glass and the illumination change the background, the scanner's
optics and compression change the sharpness and the JPEG artefacts, and its colour response
casts the whole image. A :class:`LabProfile` holds one lab's look:

* ``od_h``, ``od_e``: the RGB optical densities of one unit of haematoxylin and of eosin;
* ``background``: the RGB brightness of clean glass (the light the stains absorb);
* ``blur``: a factor on the tissue's Gaussian blur (focus, optics);
* ``jpeg_quality``: the tile compression of the scanner;
* ``scanner_gain``, ``scanner_gamma``: the scanner's per-channel response, applied to every pixel
  last: ``out = 255 * gain * (in / 255) ** gamma`` (clipped, rounded).

:func:`lab_profile` turns a lab name or seed into its profile, the same every time: the name
``"default"`` (or None) is the generator's standard look, unchanged since before labs existed;
any other name is hashed (SHA-256) to a seed, and a seed draws every quantity from its own stream
within ranges wide enough to challenge a model (about the spread between real labs: stain
strength 0.7-1.35 times, hue jitter about 12 % per channel, illumination 225-248, blur 0.7-1.8
times, JPEG quality 60-95, gamma 0.85-1.15 per channel). The scanner is white-balanced on the
glass, as real ones are: its gains bring the glass to a level of 230-247, each channel within 3 of
it (bare glass stays nearly grey, spread under 10, as :mod:`prostate_fast.tissue` expects of real
scans), so the colour cast falls on the stained tones. A lab changes the look only: the geometry
(cores, glands, cancer) of a seed is the same in every lab.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from functools import cache
from typing import Any

import numpy as np

from .noise import _BG, _OD_E, _OD_H

__all__ = ["DEFAULT_LAB", "LabProfile", "lab_profile"]

_RGB = tuple[float, float, float]


@dataclass(frozen=True)
class LabProfile:
    """One lab's look (see the module notes); build with :func:`lab_profile`."""

    name: str
    od_h: _RGB
    od_e: _RGB
    background: _RGB
    blur: float
    jpeg_quality: int
    scanner_gain: _RGB = (1.0, 1.0, 1.0)
    scanner_gamma: _RGB = (1.0, 1.0, 1.0)
    seed: int | None = None

    @property
    def is_default(self) -> bool:
        """Whether this is the generator's standard look (nothing recorded, nothing changed)."""
        return self == DEFAULT_LAB

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description (recorded in a lab slide's metadata)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def scanner_lut(self) -> np.ndarray | None:
        """(256, 1, 3) uint8 lookup table of the scanner response (``cv2.LUT``); None if identity."""
        return _scanner_lut(self.scanner_gain, self.scanner_gamma)


def _triple(v: np.ndarray | tuple) -> _RGB:
    a, b, c = (float(x) for x in v)
    return (a, b, c)


DEFAULT_LAB = LabProfile(
    name="default",
    od_h=_triple(_OD_H),
    od_e=_triple(_OD_E),
    background=(_BG, _BG, _BG),
    blur=1.0,
    jpeg_quality=90,
)
"""The generator's standard look (every slide made before labs existed looks like this)."""


@cache
def _scanner_lut(gain: _RGB, gamma: _RGB) -> np.ndarray | None:
    if gain == (1.0, 1.0, 1.0) and gamma == (1.0, 1.0, 1.0):
        return None
    x = np.arange(256, dtype=np.float64)[:, None] / 255.0
    out = 255.0 * np.asarray(gain) * x ** np.asarray(gamma)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8).reshape(256, 1, 3)


def _name_seed(name: str) -> int:
    """A lab name's seed: the first 63 bits of its SHA-256."""
    return int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "little") >> 1


def _draw(name: str, seed: int) -> LabProfile:
    """A lab profile drawn from ``seed`` (ranges in the module notes), rounded to 4 decimals."""
    rng = np.random.default_rng([seed, 0x1AB5])

    def stain(base: np.ndarray, lo: float, hi: float) -> _RGB:
        v = base * np.exp(rng.normal(0.0, 0.12, 3)) * rng.uniform(lo, hi)
        return _triple(np.round(v, 4))

    od_h = stain(_OD_H, 0.75, 1.3)
    od_e = stain(_OD_E, 0.7, 1.35)
    bg = np.clip(np.rint(241 + rng.uniform(-12, 6) + rng.uniform(-4, 4, 3)), 225, 248)
    blur = round(float(rng.uniform(0.7, 1.8)), 4)
    quality = int(rng.integers(60, 96))
    gamma = np.round(rng.uniform(0.85, 1.15, 3), 4)
    # the scanner is white-balanced on the glass: gains bring it to a near-grey level
    glass = rng.uniform(230, 247) + rng.uniform(-3, 3, 3)
    gain = _triple(np.round(glass / (255 * (bg / 255) ** gamma), 4))
    return LabProfile(name, od_h, od_e, _triple(bg), blur, quality, gain, _triple(gamma), seed)


def lab_profile(lab: str | int | LabProfile | None = None) -> LabProfile:
    """The look of a lab, reproducibly.

    Parameters
    ----------
    lab : str, int, LabProfile or None
        None or ``"default"``: the generator's standard look (:data:`DEFAULT_LAB`). Any other name
        (1 to 64 printable characters): a lab drawn from the name's SHA-256, the same on every
        machine. An integer in [0, 2**63): a lab drawn from that seed (named ``"lab-<seed>"``).
        A :class:`LabProfile` is returned as it is.

    Returns
    -------
    LabProfile

    Raises
    ------
    ValueError
        If ``lab`` is none of these (the message names it).
    """
    if lab is None or isinstance(lab, LabProfile):
        return lab or DEFAULT_LAB
    if isinstance(lab, str):
        if not 1 <= len(lab) <= 64 or not lab.isprintable():
            raise ValueError(f"lab must be a name of 1 to 64 printable characters, got {lab!r}")
        return DEFAULT_LAB if lab == "default" else _draw(lab, _name_seed(lab))
    if isinstance(lab, bool) or not isinstance(lab, int | np.integer) or not 0 <= lab < 2**63:
        raise ValueError(f"lab must be a name, a seed in [0, 2**63) or a LabProfile, got {lab!r}")
    return _draw(f"lab-{int(lab)}", int(lab))
