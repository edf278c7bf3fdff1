"""QuPath GeoJSON reader: :func:`load_geojson` (see :mod:`.annotation` for the accepted forms).

A ``Feature``, a ``FeatureCollection``, a JSON list of features or a bare geometry; ``Polygon``
and ``MultiPolygon`` are read (holes included), ``GeometryCollection`` is walked, points and lines
are skipped. Labels come from annotations; a file with no annotation polygon but with QuPath
``detection``/``tile`` objects (predictions exported by :mod:`prostate_fast.geojson`, perhaps
corrected in QuPath) is read from those, classes kept, so corrected predictions train the next
model. ``cell`` objects (nuclei) are never labels.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import AnnotationError
from .shapes import Annotation, Polygon, check_counts, no_polygon, read_text, ring_of

__all__ = ["load_geojson"]

#: QuPath object types read only from a file without annotations (and cells: never).
_DETECTION_TYPES = frozenset({"detection", "tile"})
_SKIPPED_OBJECT_TYPES = frozenset({"cell"})


def load_geojson(path: str | Path) -> Annotation:
    """Read a QuPath GeoJSON export (Feature, FeatureCollection, list of features or geometry).

    Parameters
    ----------
    path : str or pathlib.Path

    Returns
    -------
    Annotation
        ``format="geojson"``; one :class:`Polygon` per Polygon and per part of a MultiPolygon.

    Raises
    ------
    AnnotationError
        The file is missing, empty, not JSON, not GeoJSON, has malformed coordinates, or
        contains no polygon (an empty collection is an error: it labels nothing).
    """
    p, text, _ = read_text(path)
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise AnnotationError(
            f"{p}: not valid JSON ({exc.msg}: line {exc.lineno} column {exc.colno})"
        ) from None
    except (ValueError, RecursionError) as exc:  # 5000-digit integers, absurd nesting
        raise AnnotationError(f"{p}: unreadable JSON ({type(exc).__name__}: {exc})") from None
    try:
        return _geojson_document(p, doc)
    except (OverflowError, ValueError, RecursionError) as exc:
        raise AnnotationError(f"{p}: malformed GeoJSON ({type(exc).__name__}: {exc})") from None


def _geojson_document(p: Path, doc: Any) -> Annotation:
    """The polygons of a decoded GeoJSON document (see :func:`load_geojson`)."""
    if isinstance(doc, list):
        features = doc
    elif isinstance(doc, dict) and doc.get("type") == "FeatureCollection":
        features = doc.get("features")
        if not isinstance(features, list):
            raise AnnotationError(f"{p}: FeatureCollection without a 'features' list")
    elif isinstance(doc, dict) and isinstance(doc.get("type"), str):
        features = [doc]
    else:
        raise AnnotationError(f"{p}: not GeoJSON (no 'type' member at the top level)")
    polygons: list[Polygon] = []
    detections: list[Polygon] = []
    skipped = 0
    for i, feat in enumerate(features):
        if not isinstance(feat, dict):
            raise AnnotationError(f"{p}: feature {i} is not a JSON object")
        if feat.get("type") == "Feature":
            props = feat.get("properties") or {}
            if not isinstance(props, dict):
                raise AnnotationError(f"{p}: feature {i}: 'properties' is not an object")
            kind = str(props.get("objectType", "annotation")).lower()
            if kind in _SKIPPED_OBJECT_TYPES:
                skipped += 1
                continue
            geom = feat.get("geometry")
            name = _qupath_class(p, props, i)
        else:
            geom, name, kind = feat, None, "annotation"
        if geom is None:
            continue
        into = detections if kind in _DETECTION_TYPES else polygons
        into.extend(_geometry(p, geom, name, f"feature {i}"))
    polygons = polygons or detections  # a file of detections only: re-imported predictions
    if not polygons:
        raise no_polygon(p, skipped)
    vertices = sum(len(q.exterior) + sum(len(h) for h in q.holes) for q in polygons)
    check_counts(p, len(polygons), vertices)
    return Annotation(p, "geojson", tuple(polygons))


def _qupath_class(path: Path, props: dict, i: int) -> str | None:
    cls = props.get("classification")
    if cls is None:
        return None
    if isinstance(cls, str):
        return cls or None
    if isinstance(cls, dict):
        name = cls.get("name")
        if name is None or isinstance(name, str):
            return name or None
    raise AnnotationError(f"{path}: feature {i}: 'classification' has no readable name")


def _geometry(path: Path, geom: Any, name: str | None, where: str) -> list[Polygon]:
    if not isinstance(geom, dict) or not isinstance(geom.get("type"), str):
        raise AnnotationError(f"{path}: {where}: geometry is not a GeoJSON object")
    kind = geom["type"]
    if kind == "GeometryCollection":
        parts = geom.get("geometries")
        if not isinstance(parts, list):
            raise AnnotationError(f"{path}: {where}: GeometryCollection without 'geometries'")
        return [q for g in parts for q in _geometry(path, g, name, where)]
    if kind not in ("Polygon", "MultiPolygon"):
        if kind in ("Point", "MultiPoint", "LineString", "MultiLineString"):
            return []
        raise AnnotationError(f"{path}: {where}: unknown geometry type {kind!r}")
    coords = geom.get("coordinates")
    if not isinstance(coords, list):
        raise AnnotationError(f"{path}: {where}: {kind} without a 'coordinates' list")
    polys = coords if kind == "MultiPolygon" else [coords]
    out = []
    for j, rings in enumerate(polys):
        if not isinstance(rings, list) or not rings:
            raise AnnotationError(f"{path}: {where}: polygon {j} has no rings")
        ext = ring_of(path, rings[0], f"{where} polygon {j}")
        if ext is None:
            continue
        holes = [ring_of(path, r, f"{where} polygon {j} hole") for r in rings[1:]]
        out.append(Polygon(name, ext, tuple(h for h in holes if h is not None)))
    return out
