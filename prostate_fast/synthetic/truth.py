"""What a synthetic slide says about itself: the painted copy, the annotations and the truth.

Everything here derives from the integer polygons of :class:`~.geometry.SyntheticParams`, so the
three agree exactly:

* the **painted copy** (:func:`_paint`): the slide with every cancer polygon filled in the marker
  colour :data:`CANCER_RGB`, as a pathologist's marker would (the study's labelling input);
* the **annotations** (:func:`_geojson`): one QuPath-style GeoJSON polygon feature per cancer
  polygon, classification "Cancer";
* the **truth mask** (:func:`truth_mask`): :data:`CODES` at the centre of every ``downsample``
  block, and the metadata (:func:`_meta`) that records it all.
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

from .._outputs import mark_png
from .geometry import SyntheticParams, _check_int
from .render import _fill, _touches

__all__ = ["CANCER_RGB", "CODES", "truth_mask"]

CODES = {"background": 0, "benign": 1, "cancer": 2}
"""Truth-mask codes."""
CANCER_RGB = (0, 255, 0)
"""The marker colour of the painted copy."""


def _paint(P: SyntheticParams, rgb: np.ndarray, x0: int, y0: int) -> np.ndarray:
    """The painted copy of a window at global (x0, y0): ``rgb`` itself when no cancer touches it."""
    h, w = rgb.shape[:2]
    if not any(_touches(p, x0, y0, w, h) for p in P.cancer_polygons):
        return rgb
    painted = rgb.copy()
    _fill(painted, P.cancer_polygons, x0, y0, CANCER_RGB)
    return painted


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


def _mask_png(P: SyntheticParams, d: int) -> bytes:
    """The truth mask at ``d``, PNG-encoded."""
    ok, png = cv2.imencode(".png", truth_mask(P, d))
    if not ok:  # pragma: no cover - OpenCV without PNG
        raise RuntimeError("OpenCV cannot encode PNG")
    return mark_png(png.tobytes())


def _geojson(P: SyntheticParams) -> dict:
    """The cancer polygons as a GeoJSON FeatureCollection of QuPath annotations (closed rings)."""
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
    return {
        "prostate_fast": {"kind": "synthetic truth"},  # our mark (prostate_fast._outputs)
        "type": "FeatureCollection",
        "features": features,
    }


def _info(P: SyntheticParams, objective_power: float) -> dict:
    """What the slide is (level 0's TIFF description and the head of the ``.json`` side-car)."""
    info = {
        "generator": "prostate_fast.synthetic",
        "version": 1,
        "seed": P.seed,
        "mpp": P.mpp,
        "objective_power": objective_power,
        "width": P.width,
        "height": P.height,
    }
    if not P.lab.is_default:  # the default lab records nothing: its files are as before labs
        info["lab"] = P.lab.to_dict()
    return info


def _meta(P: SyntheticParams, info: dict, d: int, pen_marks: bool, files: dict[str, Path]) -> dict:
    """The ``.json`` side-car: ``info`` (as in the TIFF description), the truth and the file names."""
    return {
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
