"""Normalisation of each slide's light and stains, and colour augmentation of H&E tiles.

Two normalisations (:data:`METHODS`), each fitted once per slide and mapped to a target measured
on the training slides:

- ``"glass"`` (the dataset's default): the light through the slide's bare glass, per RGB
  channel, is brought to the target's: every pixel value (plus one) times ``io_tgt / io_src``,
  the white balance a scanner makes, redone across scanners. The stains are not touched. It reads
  only the glass, so a slide's composition (its share of nuclei, of stroma, of cancer) cannot
  move it, and one lab's slides stay as they were (the same glass, a gain of 1).
- ``"macenko"`` (Macenko et al., ISBI 2009): also maps the slide's two stain vectors and each
  stain's 99th-percentile concentration to the target's. It is closed form (an
  eigen-decomposition of a 3 x 3 covariance and two percentiles, milliseconds per slide,
  deterministic); Vahadane's sparse non-negative factorisation is iterative, orders of magnitude
  slower, and depends on its solver (SPAMS) and starting point; Reinhard matches each Lab
  channel's mean and spread of the whole image, so the share of nuclei shifts every colour.

Why ``"glass"`` is the one to use across labs: on the cross-lab benchmark (``tools/cross_lab.py``,
README) it lifts a model trained on one synthetic lab to the other lab's results, while Macenko
lowers them. Its per-slide estimates follow the slide's composition as much as its stain: the
99th percentile of haematoxylin is that of cancer nuclei on a slide with cancer and of benign
nuclei on a benign one (benign slides darkened 1.3x to the cancer-bearing training target), and
the eosin vector, read at the extreme angle of pixels that always hold some haematoxylin (more
in a blurrier or bluer lab), differs between labs by more than the stain does.

Conventions of ``"macenko"`` follow the reference implementation (``schaugf/HEnorm_python``,
which torchstain's NumPy normaliser reproduces): optical density ``OD = -ln((I + 1) / Io)``;
pixels with any channel's OD below ``beta = 0.15`` are transparent and left out of the fit; the
stain vectors are the directions at the ``alpha = 1`` and ``99`` percentiles of the angle in the
plane of the two main eigenvectors; the maximum concentration of each stain is its 99th
percentile; a tile is normalised as ``Io * exp(-HE_ref (C * maxC_ref / maxC_src))`` with ``C``
the least-squares concentrations in the slide's own stain matrix, clipped to 255 and truncated to
uint8. Two departures, each equal to the reference in its own case:

- ``Io`` is the light through the slide's glass per channel (:func:`glass_light`; Macenko's paper
  reads it from the background too), not the reference's fixed 240 (:data:`IO`, kept for images
  without glass);
- the reference calls haematoxylin the vector with the larger red OD, which swaps the stains of a
  lab whose haematoxylin is bluish and eosin reddish (their red ODs close: synthetic lab "B");
  we call haematoxylin the vector with the larger red minus blue OD (haematoxylin absorbs red far
  more than blue, eosin the reverse).

Fitting: once per slide (:func:`fit_slide`) on its low-resolution image (the image the tissue
mask was computed on, :meth:`~prostate_fast.slide.Slide.read_low_res`): the stains on the pixels
under the mask, the glass on those off it, so every tile of a slide gets the same correction. The
target (:class:`StainFit` of the training slides: the median of their stain vectors, maximum
concentrations and glass light, :func:`reference_target`) is kept by the dataset
(``dataset.json``) and the model (``model.json``'s ``"stain"``).

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

METHODS = ("glass", "macenko")
"""Normalisation methods (the ``method`` of a target :class:`StainFit`): ``"glass"`` brings the
light through each slide's glass to the target's (a gain per channel, stains untouched);
``"macenko"`` maps each slide's stain vectors and maximum concentrations to the target's."""
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
GLASS_MIN_SHARE = 0.05
"""Smallest share of the fitted image off the tissue for the slide's glass to give ``Io``."""
GLASS_MIN = 200
"""Darkest pixel value (per channel) read as glass for ``Io``."""
HIST_EXACT = 1 << 24
"""Glass pixels up to which :func:`glass_light` counts with OpenCV (float32 counts, exact below
2^24); NumPy counts more."""

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
        How a target built from fits normalises (:data:`METHODS`); a slide's own fit says
        ``"macenko"``.
    io : numpy.ndarray
        float64 (3,): the light through bare glass, per RGB channel (``Io`` of the optical
        density): the slide's glass (:func:`fit_slide`), or :data:`IO` in every channel.
    """

    stain_matrix: np.ndarray
    max_conc: np.ndarray
    method: str = "macenko"
    io: Any = None

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
        io = np.full(3, IO) if self.io is None else np.asarray(self.io, np.float64).reshape(-1)
        if io.shape != (3,) or not np.isfinite(io).all() or not ((io >= 1) & (io <= 256)).all():
            raise ValueError(f"io must be three numbers in [1, 256], got {io.tolist()}")
        object.__setattr__(self, "stain_matrix", he)
        object.__setattr__(self, "max_conc", mc)
        object.__setattr__(self, "io", io)

    def to_json(self) -> dict[str, Any]:
        """The JSON form (``dataset.json``, ``model.json``'s ``"stain"``)."""
        return {
            "method": self.method,
            "io": [round(float(v), 4) for v in self.io],
            "stain_matrix": [[round(float(v), 8) for v in row] for row in self.stain_matrix],
            "max_conc": [round(float(v), 8) for v in self.max_conc],
        }

    @classmethod
    def from_json(cls, obj: Any, where: str) -> StainFit:
        """Read :meth:`to_json`'s form; ValueError naming ``where`` and the problem."""
        try:
            if not isinstance(obj, dict):
                raise TypeError(f"an object, got {type(obj).__name__}")
            io = obj.get("io", IO)  # one number: a record written before per-slide glass
            io = np.full(3, io, np.float64) if isinstance(io, int | float) else np.array(io, float)
            he = np.array(obj["stain_matrix"], dtype=np.float64)
            return cls(he, np.array(obj["max_conc"], np.float64), str(obj.get("method")), io)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{where}: bad 'stain' record ({exc})") from None


@dataclass(frozen=True, eq=False)
class StainTransform:
    """The linear map, in optical density, that takes one slide's stains to the target's.

    ``matrix`` (3, 3) float32 acts on row vectors: ``OD_out = OD_in @ matrix``; the optical
    density is read against the slide's glass ``io_in`` and written against the target's
    ``io_out`` (both (3,) float64; :data:`IO` in every channel by default). ``exact``: the
    pixel written is ``io_out * exp(-OD_out) - 1`` rounded, the inverse of the optical density
    (an identity map gives back every pixel); else ``io_out * exp(-OD_out)`` truncated, as the
    reference Macenko does.
    """

    matrix: np.ndarray
    io_in: Any = None
    io_out: Any = None
    exact: bool = False

    def __post_init__(self) -> None:
        for name in ("io_in", "io_out"):
            v = getattr(self, name)
            object.__setattr__(self, name, np.full(3, IO) if v is None else np.asarray(v, float))
        od = -np.log((np.arange(256, dtype=np.float64)[:, None] + 1.0) / self.io_in)
        affine = np.empty((3, 4), np.float32)  # cv2.transform: -OD @ matrix + ln(io_out)
        affine[:, :3] = -np.asarray(self.matrix, np.float64).T
        affine[:, 3] = np.log(self.io_out)
        object.__setattr__(self, "_lut", np.ascontiguousarray(od, np.float32)[None])
        object.__setattr__(self, "_affine", affine)

    @property
    def is_identity(self) -> bool:
        """Whether the map gives back every pixel: exact, the identity matrix, the same glass in
        and out (what ``"glass"`` gives a slide under the target's light)."""
        return bool(
            self.exact
            and np.array_equal(self.matrix, np.eye(3))
            and np.array_equal(self.io_in, self.io_out)
        )

    def __call__(self, tiles: np.ndarray) -> np.ndarray:
        """Normalise uint8 (..., 3) RGB ``tiles``; a new uint8 array of the same shape."""
        tiles = np.asarray(tiles)
        if tiles.dtype != np.uint8 or tiles.ndim < 1 or tiles.shape[-1] != 3:
            raise ValueError(f"tiles must be uint8 (..., 3), got {tiles.dtype} {tiles.shape}")
        shift = -1.0 if self.exact else -0.5
        return _apply(np.ascontiguousarray(tiles), self._lut, self._affine, shift)


def _apply(tiles: np.ndarray, lut: np.ndarray, affine: np.ndarray, shift: float) -> np.ndarray:
    """Kernel of :meth:`StainTransform.__call__` (contiguous uint8 (..., 3)): OpenCV's look-up
    (OD per channel), per-pixel affine transform and exp (about 4 ms for 64 tiles of 128 px on 2
    cores, 3x NumPy's gather, matmul and exp); ``round(io_out * exp(-OD) + shift)``, saturated:
    ``shift`` -0.5 truncates as the reference's ``astype(uint8)`` does (an exact integer may land
    one lower), -1 inverts the optical density's ``+ 1``."""
    import cv2

    if tiles.size == 0:
        return tiles.copy()
    width = tiles.shape[-2] if tiles.ndim >= 3 else tiles.size // 3
    img = tiles.reshape(-1, width, 3)
    out = cv2.transform(cv2.LUT(img, lut), affine)
    cv2.exp(out, out)
    return cv2.convertScaleAbs(out, alpha=1.0, beta=shift).reshape(tiles.shape)


def _pixels(rgb: Any) -> np.ndarray:
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim < 1 or rgb.shape[-1] != 3:
        raise ValueError(f"rgb must be uint8 (..., 3), got {rgb.dtype} {rgb.shape}")
    return rgb.reshape(-1, 3)


def fit_macenko(rgb: np.ndarray, io: Any = None) -> StainFit | None:
    """Fit Macenko's stain matrix and maximum concentrations to tissue pixels.

    Parameters
    ----------
    rgb : numpy.ndarray
        uint8 (..., 3) RGB pixels: the tissue of a slide (glass is left out by ``BETA`` too).
    io : array-like of 3 floats, optional
        The light through the slide's glass per channel (the optical density's ``Io``);
        :data:`IO` in every channel by default, as the reference.

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
    io = np.full(3, IO) if io is None else np.asarray(io, np.float64)
    od = -np.log((px.astype(np.float64) + 1.0) / io)
    stained = od[:, 0] >= BETA  # no channel under BETA, channel by channel: any(axis=1) is slow
    stained &= od[:, 1] >= BETA
    stained &= od[:, 2] >= BETA
    odhat = od[stained]
    if len(odhat) < MIN_PIXELS:
        return None
    _, eigvecs = np.linalg.eigh(np.cov(odhat.T))
    plane = eigvecs[:, 1:3]
    that = odhat @ plane
    phi = np.arctan2(that[:, 1], that[:, 0])
    lo, hi = np.percentile(phi, [ALPHA, 100 - ALPHA])  # one partition for both
    v_min = plane @ np.array([np.cos(lo), np.sin(lo)])
    v_max = plane @ np.array([np.cos(hi), np.sin(hi)])
    he = np.stack((v_min, v_max), axis=1)
    he = he * np.where(he.sum(axis=0) < 0, -1.0, 1.0)  # an eigenvector's sign is arbitrary
    if he[0, 0] - he[2, 0] < he[0, 1] - he[2, 1]:  # haematoxylin: more red than blue OD
        he = he[:, ::-1]
    conc = np.linalg.lstsq(he, od.T, rcond=None)[0]
    max_conc = np.percentile(conc, 99, axis=1)
    try:
        return StainFit(he, max_conc, io=io)
    except ValueError:  # a flat colour: one stain direction, or no positive concentration
        return None


def glass_light(glass: np.ndarray, n_pixels: int, where: np.ndarray | None = None) -> np.ndarray:
    """The light through a slide's bare glass per channel, float64 (3,): the per-channel median
    of its ``glass`` pixels (uint8 (..., 3): those off the tissue, of an image of ``n_pixels``;
    or, with ``where``, the pixels of ``glass`` where it is true) that are bright-field glass,
    every channel in [:data:`GLASS_MIN`, 254] (pure white is a scanner's fill of unscanned area,
    not glass; dark is ink, dust or a fill too); :data:`IO` in every channel when those are under
    :data:`GLASS_MIN_SHARE` of the image."""
    import cv2

    px = np.ascontiguousarray(glass, np.uint8).reshape(1, -1, 3)  # one row: OpenCV's fast path
    if px.shape[1] == 0:
        return np.full(3, IO)
    # every channel in [GLASS_MIN, 254]: one OpenCV pass (0 or 255 per pixel)
    keep = cv2.inRange(px, (GLASS_MIN,) * 3, (254,) * 3)
    if where is not None:  # 0 or 1 off ``where``: OpenCV's masks take any nonzero value
        keep &= np.ascontiguousarray(where, bool).reshape(1, -1).view(np.uint8)
    n = cv2.countNonZero(keep)
    if n < max(GLASS_MIN_SHARE * n_pixels, MIN_PIXELS):
        return np.full(3, IO)
    if n < HIST_EXACT:
        hists = [cv2.calcHist([px], [k], keep, [256], [0, 256]).ravel() for k in range(3)]
    else:
        on = keep.ravel() != 0
        hists = [np.bincount(px[0, on, k], minlength=256) for k in range(3)]
    return np.array([_median_of_histogram(h) for h in hists], np.float64)


def _median_of_histogram(hist: np.ndarray) -> float:
    """NumPy's median of uint8 values (the mean of the two middle ones for an even count), from
    their histogram (256 counts): one pass instead of a partition."""
    cum = np.cumsum(np.asarray(hist, np.int64))
    n = int(cum[-1])
    lo = int(np.searchsorted(cum, (n - 1) // 2, side="right"))  # the ((n - 1) // 2)-th value
    hi = int(np.searchsorted(cum, n // 2, side="right"))  # the (n // 2)-th value
    return (lo + hi) / 2.0


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
        fitted (at most :data:`FIT_PIXELS`, evenly spaced), their optical density read against
        the light through the slide's glass (:func:`glass_light` of the pixels off the mask).

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
    on = mask[rows[:, None], cols[None, :]]
    px = rgb[on]
    if len(px) > FIT_PIXELS:
        px = px[np.linspace(0, len(px) - 1, FIT_PIXELS).astype(np.int64)]
    fit = fit_macenko(px, glass_light(rgb, on.size, where=~on))
    if fit is None:
        name = getattr(slide, "path", None) or getattr(slide, "name", "<slide>")
        warnings.warn(
            f"{name}: too little stained tissue to fit its stains; its tiles are not normalised",
            stacklevel=2,
        )
    return fit


def reference_target(fits: Sequence[StainFit | None], method: str = "macenko") -> StainFit | None:
    """The training target: the median stain vectors (unit length again), maximum concentrations
    and glass light of ``fits`` (None entries skipped), normalising by ``method``; None when
    there is none."""
    done = [f for f in fits if f is not None]
    if not done:
        return None
    he = np.median(np.stack([f.stain_matrix for f in done]), axis=0)
    he = he / np.linalg.norm(he, axis=0, keepdims=True)
    med = [np.median(np.stack([getattr(f, k) for f in done]), axis=0) for k in ("max_conc", "io")]
    return StainFit(he, med[0], method, io=med[1])


def stain_transform(source: StainFit, target: StainFit) -> StainTransform:
    """The map taking tiles of a slide fitted as ``source`` to ``target``, the optical density
    read against the source's glass light and written against the target's: by
    ``target.method`` ``"glass"``, nothing more (``OD_out = OD``: each channel times
    ``io_tgt / io_src``); ``"macenko"``, ``OD @ pinv(HE_src).T @ diag(maxC_tgt / maxC_src) @
    HE_tgt.T``."""
    if target.method == "glass":
        return StainTransform(np.eye(3, dtype=np.float32), source.io, target.io, exact=True)
    scale = np.diag(target.max_conc / source.max_conc)
    m = np.linalg.pinv(source.stain_matrix).T @ scale @ target.stain_matrix.T
    return StainTransform(np.ascontiguousarray(m, np.float32), source.io, target.io)


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
