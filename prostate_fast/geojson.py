"""Export tile predictions as QuPath GeoJSON, so pathologists review them in QuPath.

One ``Feature`` per tile: a closed square ``Polygon`` in **level-0** pixel coordinates (origin at
the top-left corner of the full-resolution image, as QuPath expects), and QuPath's properties:

* ``"objectType": "detection"`` (QuPath >= 0.3 maps features to object types through this key);
* ``"classification": {"name": <class>, "color": [r, g, b]}`` (QuPath >= 0.4's form);
* ``"measurements": {"probability": p, "p_<class>": ..., "tile_row": r, "tile_col": c}``, a JSON
  object as QuPath >= 0.4 writes and reads it (QuPath 0.2-0.3 used a list of ``{"name", "value"}``
  pairs; pass ``measurements_as="list"`` for those versions);
* ``"isLocked": true`` so a reviewer does not move a tile by accident.

Each feature's ``id`` is a UUID derived from the slide name and the tile's (row, column), so the
same predictions give the same file. Import in QuPath with File > Import objects (or drag and
drop the ``.geojson`` onto the image). Class colours are the overlay's
(:func:`prostate_fast.overlay.colours.class_colours`); the overlay does not call this module:
whoever writes the GeoJSON beside an overlay (``screen``, the ``overlay`` command) calls
:func:`export_geojson`.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ._util import atomic_path
from .overlay.colours import class_colours

__all__ = ["export_geojson", "score_features"]

_NS = uuid.UUID("6f1b7d0e-3a55-4a57-9d2b-5f0c1a7e2b10")


def score_features(
    scores: Any,
    *,
    only_positive: bool = True,
    colours: Mapping[str, Any] | None = None,
    measurements_as: str = "map",
) -> list[dict[str, Any]]:
    """GeoJSON ``Feature`` dicts for the tiles of a ScoreGrid (see the module notes)."""
    if measurements_as not in ("map", "list"):
        raise ValueError(f"measurements_as must be 'map' or 'list', got {measurements_as!r}")
    classes = tuple(scores.classes)
    table = class_colours(scores, colours)
    prob = np.asarray(scores.prob, dtype=np.float64)
    pred = np.asarray(scores.predicted).astype(np.int64)
    rc = np.asarray(scores.tile_rc, dtype=np.int64)
    xy = np.asarray(scores.l0_xy, dtype=np.float64)
    side = float(scores.tile_size) * float(scores.downsample)
    idx = np.flatnonzero(pred > 0) if only_positive else np.arange(len(pred))
    feats = []
    for i in idx.tolist():
        k = int(pred[i])
        x0, y0 = float(xy[i, 0]), float(xy[i, 1])
        x1, y1 = round(x0 + side, 3), round(y0 + side, 3)
        meas: dict[str, float] = {"probability": round(float(prob[i, k]), 6)}
        for j, name in enumerate(classes):
            meas[f"p_{name}"] = round(float(prob[i, j]), 6)
        meas["tile_row"], meas["tile_col"] = float(rc[i, 0]), float(rc[i, 1])
        feats.append(
            {
                "type": "Feature",
                "id": str(uuid.uuid5(_NS, f"{scores.slide_name}/{rc[i, 0]}/{rc[i, 1]}")),
                "geometry": {
                    "type": "Polygon",
                    "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]],
                },
                "properties": {
                    "objectType": "detection",
                    "isLocked": True,
                    "classification": {"name": classes[k], "color": table[k].tolist()},
                    "measurements": meas
                    if measurements_as == "map"
                    else [{"name": n, "value": v} for n, v in meas.items()],
                },
            }
        )
    return feats


def export_geojson(
    scores: Any,
    path: str | os.PathLike[str],
    *,
    only_positive: bool = True,
    colours: Mapping[str, Any] | None = None,
    measurements_as: str = "map",
    overwrite: bool = False,
) -> Path:
    """Write a ScoreGrid's tiles as a QuPath GeoJSON ``FeatureCollection``.

    Parameters
    ----------
    scores : ScoreGrid
        Predictions of one slide.
    path : path
        Output ``.geojson``.
    only_positive : bool
        Only the tiles predicted as a non-negative class (default); all scored tiles when false.
    colours : mapping of str to (int, int, int), optional
        Class colour overrides (as for the overlay).
    measurements_as : {"map", "list"}
        ``"map"``: QuPath >= 0.4 (default); ``"list"``: QuPath 0.2-0.3.
    overwrite : bool
        Replace an existing file; otherwise ``FileExistsError``.

    Returns
    -------
    pathlib.Path
        ``path``.

    Notes
    -----
    About 300 bytes per tile; written to a temporary name and renamed when complete.
    """
    feats = score_features(
        scores, only_positive=only_positive, colours=colours, measurements_as=measurements_as
    )
    doc = {"prostate_fast": {"kind": "tiles"}, "type": "FeatureCollection", "features": feats}
    path = Path(path)
    with atomic_path(path, overwrite=overwrite) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(doc, f, separators=(",", ":"))
            f.write("\n")
    return path
