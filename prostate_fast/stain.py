"""Stain normalisation (Macenko) and colour augmentation of H&E tiles.

Why Macenko (Macenko et al., ISBI 2009) and not Reinhard or Vahadane:

- it separates the two stains (haematoxylin, eosin) and rescales each one's concentration, so a
  slide with a pale eosin and a dark haematoxylin is corrected stain by stain; Reinhard matches
  the mean and spread of each Lab channel of the whole image, so the share of nuclei in a tile
  (or of stroma in a slide) shifts its colours;
- it is closed form (an eigen-decomposition of a 3 x 3 covariance and two percentiles) and fits a
  slide's low-resolution tissue in milliseconds, deterministically; Vahadane's sparse
  non-negative matrix factorisation is iterative, slower by orders of magnitude, and depends on
  its solver (SPAMS) and its starting point;
- applying it is one 3 x 3 linear map in optical density per slide (:class:`StainTransform`), a
  few NumPy passes per batch, cheap beside the network.

Conventions follow the reference implementation (``schaugf/HEnorm_python``, which torchstain's
NumPy Macenko normaliser reproduces): optical density ``OD = -ln((I + 1) / Io)`` with
``Io = 240``; pixels with any channel's OD below ``beta = 0.15`` are transparent and left out of
the fit; the stain vectors are the directions at the ``alpha = 1`` and ``99`` percentiles of the
angle in the plane of the two main eigenvectors, haematoxylin first; the
maximum concentration of each stain is its 99th percentile. One departure: the reference calls
haematoxylin the vector with the larger red OD, which swaps the stains of a lab whose haematoxylin
is bluish and eosin reddish (their red ODs close: synthetic lab "B" here); we call haematoxylin the
vector with the larger red minus blue OD (haematoxylin absorbs red far more than blue, eosin the
reverse), which agrees with the reference whenever the red ODs are far apart. A tile is normalised as
``Io * exp(-HE_ref (C * maxC_ref / maxC_src))`` with ``C`` the least-squares concentrations in the
slide's own stain matrix, clipped to 255 and truncated to uint8, as the reference does.

Fitting: once per slide (:func:`fit_slide`) on the tissue pixels of its low-resolution image (the
image the tissue mask was computed on, :meth:`~prostate_fast.slide.Slide.read_low_res`), so every
tile of a slide gets the same correction. The target (:class:`StainFit` of the training slides:
the median of their stain vectors and maximum concentrations, :func:`reference_target`) is kept
by the dataset (``dataset.json``) and the model (``model.json``'s ``"stain"``).

Colour augmentation (:func:`augment_colour`): per sample, a random scaling and shift of each
stain's concentration in the Ruifrok-Johnston HED space (the "HED jitter" of Tellez et al., 2018)
and a random brightness and contrast, on the 0-255 pixel values, rounded and clipped back to
what a uint8 tile can hold.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "IO",
    "METHODS",
    "StainFit",
    "StainTransform",
    "augment_colour",
    "fit_macenko",
    "fit_slide",
    "reference_target",
    "stain_transform",
]

METHODS = ("macenko",)
"""Stain normalisation methods (the ``method`` of a :class:`StainFit`)."""
IO = 240.0
"""Transmitted light intensity of the optical density (the reference's ``Io``)."""
ALPHA = 1.0
"""Percentile of the angle that gives the two stain vectors (and 100 - ALPHA)."""
BETA = 0.15
"""Optical density under which a pixel (any channel) is transparent and not fitted."""
MIN_PIXELS = 100
"""Fewest stained pixels a fit needs; fewer: no fit (the slide is left as it is)."""
FIT_PIXELS = 500_000
"""Most tissue pixels a slide is fitted on (taken evenly spaced: same result for a re-run)."""
FIT_FINER = 4.0
"""The fit reads the slide this many times finer than its tissue mask (nuclei apart from
stroma), ..."""
FIT_IMAGE_PIXELS = 4_000_000
"""... within this many pixels (12 MB of RGB), and never coarser than the mask."""

#: Ruifrok and Johnston's H, E, DAB optical density vectors (rows), as scikit-image's.
_RGB_FROM_HED = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], np.float64)
_RGB_FROM_HED = _RGB_FROM_HED / np.linalg.norm(_RGB_FROM_HED, axis=1, keepdims=True)
_HED_FROM_RGB = np.linalg.inv(_RGB_FROM_HED)


@dataclass(frozen=True, eq=False)
class StainFit:
    """A fitted stain appearance: the stain matrix and each stain's maximum concentration.

    Attributes
    ----------
    stain_matrix : numpy.ndarray
        float64 (3, 2): unit optical density vectors (RGB) of haematoxylin (column 0) and eosin.
    max_conc : numpy.ndarray
        float64 (2,): 99th percentile of each stain's concentration.
    method : str
        ``"macenko"``.
    """

    stain_matrix: np.ndarray
    max_conc: np.ndarray
    method: str = "macenko"

    def __post_init__(self) -> None:
        he = np.asarray(self.stain_matrix, np.float64)
        mc = np.asarray(self.max_conc, np.float64)
        if self.method not in METHODS:
            raise ValueError(f"stain method must be one of {', '.join(METHODS)}: {self.method!r}")
        if he.shape != (3, 2) or not np.isfinite(he).all():
            raise ValueError(f"stain_matrix must be finite (3, 2), got {he.shape}")
        if np.linalg.matrix_rank(he) < 2:
            raise ValueError("stain_matrix must have two independent stain vectors")
        if mc.shape != (2,) or not np.isfinite(mc).all() or not (mc > 0).all():
            raise ValueError(f"max_conc must be two positive numbers, got {mc.tolist()}")
        object.__setattr__(self, "stain_matrix", he)
        object.__setattr__(self, "max_conc", mc)

    def to_json(self) -> dict[str, Any]:
        """The JSON form (``dataset.json``, ``model.json``'s ``"stain"``)."""
        return {
            "method": self.method,
            "io": IO,
            "stain_matrix": [[round(float(v), 8) for v in row] for row in self.stain_matrix],
            "max_conc": [round(float(v), 8) for v in self.max_conc],
        }

    @classmethod
    def from_json(cls, obj: Any, where: str) -> StainFit:
        """Read :meth:`to_json`'s form; ValueError naming ``where`` and the problem."""
        try:
            if not isinstance(obj, dict):
                raise TypeError(f"an object, got {type(obj).__name__}")
            if obj.get("io", IO) != IO:
                raise ValueError(f"io {obj.get('io')!r} is not {IO:g}")
            he = np.array(obj["stain_matrix"], dtype=np.float64)
            return cls(he, np.array(obj["max_conc"], np.float64), str(obj.get("method")))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{where}: bad 'stain' record ({exc})") from None


@dataclass(frozen=True, eq=False)
class StainTransform:
    """The linear map, in optical density, that takes one slide's stains to the target's.

    ``matrix`` (3, 3) float32 acts on row vectors: ``OD_out = OD_in @ matrix``.
    """

    matrix: np.ndarray

    def __call__(self, tiles: np.ndarray) -> np.ndarray:
        """Normalise uint8 (..., 3) RGB ``tiles``; a new uint8 array of the same shape."""
        tiles = np.asarray(tiles)
        if tiles.dtype != np.uint8 or tiles.ndim < 1 or tiles.shape[-1] != 3:
            raise ValueError(f"tiles must be uint8 (..., 3), got {tiles.dtype} {tiles.shape}")
        return _apply(np.ascontiguousarray(tiles), self.matrix)


#: OD of every uint8 value: -ln((v + 1) / Io), as an OpenCV look-up table.
_OD_LUT = (-np.log((np.arange(256, dtype=np.float64) + 1.0) / IO)).astype(np.float32)[None]


def _apply(tiles: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Kernel of :meth:`StainTransform.__call__` (contiguous uint8 (..., 3)): OpenCV's look-up,
    per-pixel 3 x 3 transform and exp (about 4 ms for 64 tiles of 128 px on 2 cores, 3x NumPy's
    gather, matmul and exp); ``round(Io * exp(-OD) - 0.5)``, saturated, truncates as the
    reference's ``astype(uint8)`` does (an exact integer may land one lower)."""
    import cv2

    if tiles.size == 0:
        return tiles.copy()
    width = tiles.shape[-2] if tiles.ndim >= 3 else tiles.size // 3
    img = tiles.reshape(-1, width, 3)
    od = cv2.LUT(img, _OD_LUT)
    out = cv2.transform(od, -np.ascontiguousarray(matrix.T, np.float32))
    cv2.exp(out, out)
    return cv2.convertScaleAbs(out, alpha=IO, beta=-0.5).reshape(tiles.shape)


def _pixels(rgb: Any) -> np.ndarray:
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim < 1 or rgb.shape[-1] != 3:
        raise ValueError(f"rgb must be uint8 (..., 3), got {rgb.dtype} {rgb.shape}")
    return rgb.reshape(-1, 3)


def fit_macenko(rgb: np.ndarray) -> StainFit | None:
    """Fit Macenko's stain matrix and maximum concentrations to tissue pixels.

    Parameters
    ----------
    rgb : numpy.ndarray
        uint8 (..., 3) RGB pixels: the tissue of a slide (glass is left out by ``BETA`` too).

    Returns
    -------
    StainFit or None
        None when fewer than :data:`MIN_PIXELS` pixels are stained or their stains cannot be
        told apart (a flat colour).

    Raises
    ------
    ValueError
        ``rgb`` is not uint8 (..., 3).
    """
    px = _pixels(rgb)
    od = -np.log((px.astype(np.float64) + 1.0) / IO)
    odhat = od[~np.any(od < BETA, axis=1)]
    if len(odhat) < MIN_PIXELS:
        return None
    _, eigvecs = np.linalg.eigh(np.cov(odhat.T))
    plane = eigvecs[:, 1:3]
    that = odhat @ plane
    phi = np.arctan2(that[:, 1], that[:, 0])
    lo, hi = np.percentile(phi, ALPHA), np.percentile(phi, 100 - ALPHA)
    v_min = plane @ np.array([np.cos(lo), np.sin(lo)])
    v_max = plane @ np.array([np.cos(hi), np.sin(hi)])
    he = np.stack((v_min, v_max), axis=1)
    he = he * np.where(he.sum(axis=0) < 0, -1.0, 1.0)  # an eigenvector's sign is arbitrary
    if he[0, 0] - he[2, 0] < he[0, 1] - he[2, 1]:  # haematoxylin: more red than blue OD
        he = he[:, ::-1]
    conc = np.linalg.lstsq(he, od.T, rcond=None)[0]
    max_conc = np.percentile(conc, 99, axis=1)
    try:
        return StainFit(he, max_conc)
    except ValueError:  # a flat colour: one stain direction, or no positive concentration
        return None


def fit_slide(slide: Any, tissue: Any) -> StainFit | None:
    """Fit a slide's stains once, on the tissue pixels of its low-resolution image.

    Parameters
    ----------
    slide : Slide
        The open slide.
    tissue : TissueMask
        Its tissue mask (:func:`prostate_fast.tissue.detect_tissue`). The slide is read
        :data:`FIT_FINER` times finer than the mask (within :data:`FIT_IMAGE_PIXELS`;
        :meth:`~prostate_fast.slide.Slide.read_low_res`) and the pixels under the mask are
        fitted (at most :data:`FIT_PIXELS`, evenly spaced).

    Returns
    -------
    StainFit or None
        None (and a warning naming the slide) when the tissue holds too few stained pixels:
        the slide's tiles are then left as they are.
    """
    mask = np.asarray(tissue.mask, bool)
    mds = float(tissue.downsample)
    w0, h0 = slide.dimensions
    ds = max(mds / FIT_FINER, math.sqrt(w0 * h0 / FIT_IMAGE_PIXELS), 1.0)
    rgb, ds = slide.read_low_res(min(ds, mds))
    rows = np.minimum((np.arange(rgb.shape[0]) * ds / mds).astype(np.int64), mask.shape[0] - 1)
    cols = np.minimum((np.arange(rgb.shape[1]) * ds / mds).astype(np.int64), mask.shape[1] - 1)
    px = rgb[mask[rows[:, None], cols[None, :]]]
    if len(px) > FIT_PIXELS:
        px = px[np.linspace(0, len(px) - 1, FIT_PIXELS).astype(np.int64)]
    fit = fit_macenko(px)
    if fit is None:
        name = getattr(slide, "path", None) or getattr(slide, "name", "<slide>")
        warnings.warn(
            f"{name}: too little stained tissue to fit its stains; its tiles are not normalised",
            stacklevel=2,
        )
    return fit


def reference_target(fits: Sequence[StainFit | None]) -> StainFit | None:
    """The training target: the median stain vectors (unit length again) and the median maximum
    concentrations of ``fits`` (None entries skipped); None when there is none."""
    done = [f for f in fits if f is not None]
    if not done:
        return None
    he = np.median(np.stack([f.stain_matrix for f in done]), axis=0)
    he = he / np.linalg.norm(he, axis=0, keepdims=True)
    return StainFit(he, np.median(np.stack([f.max_conc for f in done]), axis=0))


def stain_transform(source: StainFit, target: StainFit) -> StainTransform:
    """The map taking tiles of a slide fitted as ``source`` to the stains of ``target``:
    ``OD @ pinv(HE_src).T @ diag(maxC_tgt / maxC_src) @ HE_tgt.T``."""
    scale = np.diag(target.max_conc / source.max_conc)
    m = np.linalg.pinv(source.stain_matrix).T @ scale @ target.stain_matrix.T
    return StainTransform(np.ascontiguousarray(m, np.float32))


# -- colour augmentation ---------------------------------------------------------------------------
#: Default strengths: HED concentration factor 1 +- 0.05 and shift +- 0.05 (Tellez's "HED light"),
#: brightness +- 0.1 * 255 and contrast 1 +- 0.1.
HED_SIGMA = 0.05
BRIGHTNESS = 0.1
CONTRAST = 0.1


def augment_colour(
    x: np.ndarray,
    rng: np.random.Generator,
    *,
    hed: float = HED_SIGMA,
    brightness: float = BRIGHTNESS,
    contrast: float = CONTRAST,
) -> np.ndarray:
    """Random HED jitter, brightness and contrast of a batch, in place.

    Parameters
    ----------
    x : numpy.ndarray
        float32 (n, 3, H, W) RGB pixel values 0-255 (a decoded uint8 batch); changed in place.
    rng : numpy.random.Generator
        Draws 8 numbers per sample, in sample order (same generator state: same batch).
    hed, brightness, contrast : float
        Strengths: each stain's concentration times U(1 - hed, 1 + hed) plus U(-hed, hed);
        plus U(-brightness, brightness) * 255; contrast U(1 - contrast, 1 + contrast) about the
        sample's mean.

    Returns
    -------
    numpy.ndarray
        ``x``, rounded and clipped to 0-255 (values a uint8 tile holds).

    Notes
    -----
    Per sample the HED jitter is one 3 x 3 map in optical density
    (``OD @ inv(M) diag(a) M + b M``), so the cost is a log, a batched matrix product and an exp.
    """
    if x.dtype != np.float32 or x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"x must be float32 (n, 3, H, W), got {x.dtype} {x.shape}")
    n = len(x)
    draw = rng.uniform(-1.0, 1.0, (n, 8))
    a, b = 1.0 + hed * draw[:, 0:3], hed * draw[:, 3:6]
    a[:, 2], b[:, 2] = 1.0, 0.0  # no DAB in H&E
    maps = np.einsum("ij,njk,kl->nil", _HED_FROM_RGB, a[:, :, None] * np.eye(3), _RGB_FROM_HED)
    shift = b @ _RGB_FROM_HED  # (n, 3)
    flat = x.reshape(n, 3, -1)
    np.add(flat, 1.0, out=flat)
    np.log(flat, out=flat)
    od = np.float32(np.log(256.0)) - flat  # (n, 3, P)
    out = np.matmul(maps.transpose(0, 2, 1).astype(np.float32), od)
    out += shift.astype(np.float32)[:, :, None]
    np.negative(out, out=out)
    np.exp(out, out=out)
    out *= np.float32(256.0)
    out -= np.float32(1.0)
    mean = out.mean(axis=(1, 2), keepdims=True)
    c = (1.0 + contrast * draw[:, 6]).astype(np.float32)[:, None, None]
    bright = (brightness * 255.0 * draw[:, 7]).astype(np.float32)[:, None, None]
    out -= mean
    out *= c
    out += mean + bright
    np.rint(out, out=out)
    np.clip(out, 0.0, 255.0, out=out)
    flat[...] = out
    return x
