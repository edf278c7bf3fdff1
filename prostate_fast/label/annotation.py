"""Read polygon annotations: QuPath GeoJSON, ASAP XML (Camelyon style) and Aperio ImageScope XML.

Every reader returns an :class:`Annotation`: the file, its format and :class:`Polygon` objects
(class name as written, exterior and holes in level-0 pixels ``l0_xy``, a ``negative`` flag for
regions that *subtract*); :func:`load_annotation` sniffs the format. :func:`polygon_coverage`
turns polygons into per-tile coverage; class names are mapped by :mod:`prostate_fast.label`.

Formats
-------
* **QuPath GeoJSON**: a ``Feature``, a ``FeatureCollection``, a JSON list of features (QuPath's
  "Export objects"), or a bare geometry. ``Polygon`` and ``MultiPolygon`` geometries (holes
  included) are read, ``GeometryCollection`` is walked, points and lines are skipped. The class is
  ``properties.classification.name`` (or a plain string ``classification``); a feature without one
  is *unclassified* (``name=None``). Objects QuPath exports as ``detection``/``cell``/``tile`` are
  skipped: labels come from annotations.
* **ASAP XML** (``<ASAP_Annotations>``): every ``<Annotation>`` of type Polygon, Spline or
  Rectangle with its ``<Coordinate>`` points (sorted by ``Order``); the class is ``PartOfGroup``
  (``None`` or empty: unclassified). Camelyon16's exclusion group ``_2`` (and a group named
  ``Exclusion``) is read as ``negative`` with no class: it subtracts from every class.
* **Aperio ImageScope XML** (``<Annotations>``): every ``<Annotation>`` layer's ``<Region>``; the
  class is the layer's ``Name``, else its first ``<Attribute>``'s ``Value``, else the region's
  ``Text``. ``NegativeROA="1"`` regions subtract from their own layer's class. Region type 1
  (rectangle) and 2 (ellipse) given by two corner vertices are expanded to polygons; regions with
  fewer than three vertices (rulers, arrows) are skipped. ``MicronsPerPixel`` is kept as
  :attr:`Annotation.mpp`: vertices are pixels of an image of that resolution, rescaled by the
  labeller when it differs from the slide's (so a drawing on a 20x export of a 40x scan fits).

Safety: XML is parsed with :mod:`defusedxml` (no entity expansion, no external entities or DTDs),
so an "entity bomb" fails fast. Any unreadable, malformed or empty file raises
:class:`~prostate_fast.errors.AnnotationError` naming the file.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import AnnotationError

__all__ = [
    "Annotation",
    "Polygon",
    "load_annotation",
    "load_aperio_xml",
    "load_asap_xml",
    "load_geojson",
    "polygon_coverage",
]

#: ASAP group names that mark regions to exclude (Camelyon16 convention), compared lower-case.
EXCLUSION_GROUPS = frozenset({"_2", "exclusion"})
#: QuPath object types that are not annotations and are skipped.
_SKIPPED_OBJECT_TYPES = frozenset({"detection", "cell", "tile"})


@dataclass(frozen=True, eq=False)
class Polygon:
    """One polygon of an annotation, in level-0 pixels.

    Attributes
    ----------
    name : str or None
        Class name exactly as the file writes it; None when the object is unclassified.
    exterior : numpy.ndarray
        (n, 2) float64 ring of (x, y) vertices, n >= 3, not repeated at the end.
    holes : tuple of numpy.ndarray
        Interior rings, same layout.
    negative : bool
        True for a region that removes area (Aperio negative region, Camelyon exclusion group)
        from its class, or from every class when ``name`` is None.
    """

    name: str | None
    exterior: np.ndarray
    holes: tuple[np.ndarray, ...] = ()
    negative: bool = False

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1) of the exterior ring."""
        lo, hi = self.exterior.min(axis=0), self.exterior.max(axis=0)
        return float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])

    @property
    def area(self) -> float:
        """Area in level-0 pixels² (exterior minus holes, shoelace formula)."""
        return _ring_area(self.exterior) - sum(_ring_area(h) for h in self.holes)


@dataclass(frozen=True, eq=False)
class Annotation:
    """The polygons of one annotation file.

    Attributes
    ----------
    path : pathlib.Path
    format : str
        ``"geojson"``, ``"asap"`` or ``"aperio"``.
    polygons : tuple of Polygon
    mpp : float or None
        Microns per pixel of the image the coordinates refer to, when the file records it
        (Aperio ``MicronsPerPixel``); None means "level 0 of the slide".
    """

    path: Path
    format: str
    polygons: tuple[Polygon, ...]
    mpp: float | None = None

    @property
    def names(self) -> tuple[str | None, ...]:
        """Distinct class names in file order (None for unclassified objects)."""
        seen: dict[str | None, None] = {}
        for p in self.polygons:
            seen.setdefault(p.name, None)
        return tuple(seen)


def _ring_area(ring: np.ndarray) -> float:
    x, y = ring[:, 0], ring[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def _ring(path: Path, coords: Any, what: str) -> np.ndarray | None:
    """A validated (n, 2) float64 ring without the closing vertex; None when degenerate."""
    try:
        arr = np.asarray(coords, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise AnnotationError(f"{path}: {what}: coordinates are not numbers ({exc})") from None
    if arr.ndim != 2 or arr.shape[1] < 2 or arr.shape[0] == 0:
        raise AnnotationError(f"{path}: {what}: a ring must be a list of [x, y] points")
    arr = np.ascontiguousarray(arr[:, :2])
    if not np.isfinite(arr).all():
        raise AnnotationError(f"{path}: {what}: non-finite coordinate")
    if np.abs(arr).max() > 1e9:
        raise AnnotationError(f"{path}: {what}: coordinate beyond 1e9 pixels")
    if len(arr) > 1 and (arr[0] == arr[-1]).all():
        arr = arr[:-1]
    return arr if len(arr) >= 3 else None


def _read_text(path: str | Path) -> tuple[Path, str, bytes]:
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise AnnotationError(f"{p}: no such annotation file") from None
    except IsADirectoryError:
        raise AnnotationError(f"{p}: is a directory, not an annotation file") from None
    except OSError as exc:
        raise AnnotationError(f"{p}: cannot read it ({exc.strerror or exc})") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        try:
            text = data.decode("utf-16")
        except UnicodeDecodeError:
            raise AnnotationError(f"{p}: not a text annotation file (undecodable bytes)") from None
    if not text.strip():
        raise AnnotationError(f"{p}: empty annotation file")
    return p, text, data


def _no_polygon(path: Path, skipped: int = 0) -> AnnotationError:
    extra = f" ({skipped} non-annotation objects skipped)" if skipped else ""
    return AnnotationError(f"{path}: contains no polygon{extra}")


# -- GeoJSON ----------------------------------------------------------------------------------
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
    p, text, _ = _read_text(path)
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
    skipped = 0
    for i, feat in enumerate(features):
        if not isinstance(feat, dict):
            raise AnnotationError(f"{p}: feature {i} is not a JSON object")
        if feat.get("type") == "Feature":
            props = feat.get("properties") or {}
            if not isinstance(props, dict):
                raise AnnotationError(f"{p}: feature {i}: 'properties' is not an object")
            if str(props.get("objectType", "annotation")).lower() in _SKIPPED_OBJECT_TYPES:
                skipped += 1
                continue
            geom = feat.get("geometry")
            name = _qupath_class(p, props, i)
        else:
            geom, name = feat, None
        if geom is None:
            continue
        polygons.extend(_geometry(p, geom, name, f"feature {i}"))
    if not polygons:
        raise _no_polygon(p, skipped)
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
        ext = _ring(path, rings[0], f"{where} polygon {j}")
        if ext is None:
            continue
        holes = [_ring(path, r, f"{where} polygon {j} hole") for r in rings[1:]]
        out.append(Polygon(name, ext, tuple(h for h in holes if h is not None)))
    return out


# -- XML --------------------------------------------------------------------------------------
def _parse_xml(path: Path, data: bytes) -> Any:
    import xml.etree.ElementTree as ET  # noqa: N817 - only for its ParseError

    from defusedxml import DefusedXmlException
    from defusedxml.ElementTree import fromstring

    try:
        return fromstring(data, forbid_dtd=False)
    except DefusedXmlException as exc:
        raise AnnotationError(
            f"{path}: refused unsafe XML ({type(exc).__name__}: entity or DTD trick)"
        ) from None
    except ET.ParseError as exc:
        raise AnnotationError(f"{path}: malformed XML ({exc})") from None
    except (LookupError, ValueError) as exc:  # an unknown or multi-byte declared encoding
        raise AnnotationError(f"{path}: unreadable XML ({exc})") from None


def _float_attr(path: Path, el: Any, key: str, where: str) -> float:
    try:
        v = float(el.attrib[key])
    except KeyError:
        raise AnnotationError(f"{path}: {where}: missing attribute {key}") from None
    except ValueError:
        raise AnnotationError(
            f"{path}: {where}: {key}={el.attrib[key]!r} is not a number"
        ) from None
    if not math.isfinite(v):
        raise AnnotationError(f"{path}: {where}: {key} is not finite")
    return v


def load_asap_xml(path: str | Path) -> Annotation:
    """Read an ASAP annotation file (``<ASAP_Annotations>``, as in Camelyon16/17).

    Raises
    ------
    AnnotationError
        Missing/empty/malformed file, unsafe XML (entity expansion, external entities), a
        coordinate that is not a number, or no polygon at all.
    """
    p, _, data = _read_text(path)
    root = _parse_xml(p, data)
    if root.tag != "ASAP_Annotations":
        raise AnnotationError(f"{p}: not an ASAP annotation file (root <{root.tag}>)")
    polygons = []
    for i, ann in enumerate(root.iter("Annotation")):
        kind = ann.attrib.get("Type", "Polygon").lower()
        if kind not in ("polygon", "spline", "rectangle"):
            continue  # Dot, PointSet: no area
        where = f"annotation {ann.attrib.get('Name', i)!r}"
        pts = []
        for c in ann.iter("Coordinate"):
            order = c.attrib.get("Order")
            key = _float_attr(p, c, "Order", where) if order is not None else len(pts)
            pts.append((key, _float_attr(p, c, "X", where), _float_attr(p, c, "Y", where)))
        pts.sort(key=lambda t: t[0])
        ring = _ring(p, [(x, y) for _, x, y in pts], where) if pts else None
        if ring is None:
            continue
        group = ann.attrib.get("PartOfGroup", "").strip()
        name = None if group.lower() in ("", "none") else group
        if name is not None and name.lower() in EXCLUSION_GROUPS:
            polygons.append(Polygon(None, ring, (), negative=True))
        else:
            polygons.append(Polygon(name, ring))
    if not any(not q.negative for q in polygons):
        raise _no_polygon(p)
    return Annotation(p, "asap", tuple(polygons))


def load_aperio_xml(path: str | Path) -> Annotation:
    """Read an Aperio ImageScope annotation file (``<Annotations MicronsPerPixel=...>``).

    Raises
    ------
    AnnotationError
        Missing/empty/malformed file, unsafe XML, a bad vertex, a bad ``MicronsPerPixel``, or no
        polygon at all.
    """
    p, _, data = _read_text(path)
    root = _parse_xml(p, data)
    if root.tag != "Annotations":
        raise AnnotationError(f"{p}: not an Aperio ImageScope file (root <{root.tag}>)")
    mpp = None
    if root.attrib.get("MicronsPerPixel", "").strip():
        mpp = _float_attr(p, root, "MicronsPerPixel", "<Annotations>")
        if not mpp > 0:
            raise AnnotationError(f"{p}: MicronsPerPixel must be positive, got {mpp}")
    polygons = []
    for i, ann in enumerate(root.findall("Annotation")):
        layer = ann.attrib.get("Name", "").strip()
        if not layer:
            attr = ann.find("Attributes/Attribute")
            layer = (attr.attrib.get("Value", "") if attr is not None else "").strip()
        for j, reg in enumerate(ann.iter("Region")):
            where = f"annotation {i} region {reg.attrib.get('Id', j)}"
            verts = [
                (_float_attr(p, v, "X", where), _float_attr(p, v, "Y", where))
                for v in reg.iter("Vertex")
            ]
            rtype = reg.attrib.get("Type", "0").strip()
            if len(verts) == 2 and rtype in ("1", "2"):
                verts = _expand_two_point(verts, ellipse=rtype == "2")
            ring = _ring(p, verts, where) if verts else None
            if ring is None:
                continue
            name = layer or reg.attrib.get("Text", "").strip() or None
            negative = reg.attrib.get("NegativeROA", "0").strip() == "1"
            polygons.append(Polygon(name, ring, (), negative=negative))
    if not any(not q.negative for q in polygons):
        raise _no_polygon(p)
    return Annotation(p, "aperio", tuple(polygons), mpp)


def _expand_two_point(verts: list[tuple[float, float]], *, ellipse: bool) -> list:
    (x0, y0), (x1, y1) = verts
    if not ellipse:
        return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
    t = np.linspace(0.0, 2 * np.pi, 128, endpoint=False)
    c, r = np.array([x0 + x1, y0 + y1]) / 2, np.abs([x1 - x0, y1 - y0]) / 2
    return list(c + r * np.stack([np.cos(t), np.sin(t)], axis=1))


def load_annotation(path: str | Path) -> Annotation:
    """Read any supported polygon annotation file, sniffing the format from its content.

    JSON (``{`` or ``[`` first) is read as GeoJSON; XML as ASAP (root ``<ASAP_Annotations>``) or
    Aperio ImageScope (root ``<Annotations>``).

    Raises
    ------
    AnnotationError
        The file is missing, empty, of an unknown format, or fails its format's reader.
    """
    p, text, data = _read_text(path)
    head = text.lstrip()[:1]
    if head in ("{", "["):
        return load_geojson(p)
    if head == "<":
        root = _parse_xml(p, data)
        if root.tag == "ASAP_Annotations":
            return load_asap_xml(p)
        if root.tag == "Annotations":
            return load_aperio_xml(p)
        raise AnnotationError(f"{p}: unknown XML annotation format (root <{root.tag}>)")
    raise AnnotationError(f"{p}: not a GeoJSON or XML annotation file")


# -- polygons → tiles -------------------------------------------------------------------------
def polygon_coverage(
    positive: list[list[Polygon]],
    negative: list[list[Polygon]],
    l0_xy: np.ndarray,
    l0_tile_size: float,
    *,
    samples: int = 64,
    centres: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Share of each square tile covered by the union of each group of polygons.

    Parameters
    ----------
    positive : list of list of Polygon
        One group per class: the union of the group's polygons (holes excluded) is the class.
    negative : list of list of Polygon
        Per class, polygons whose area (holes excluded) is removed from the class.
    l0_xy : numpy.ndarray
        (n, 2) level-0 (x, y) of each tile's top-left corner; a tile covers
        ``[x, x + l0_tile_size) x [y, y + l0_tile_size)``.
    l0_tile_size : float
        Tile side in level-0 pixels.
    samples : int
        Sample rows per tile (default 64).
    centres : bool
        Also test whether each tile's centre lies inside each class.

    Returns
    -------
    coverage : numpy.ndarray
        (n, n_classes) float64 in [0, 1].
    inside : numpy.ndarray
        (n, n_classes) bool: tile centre inside the class (all False unless ``centres``).

    Notes
    -----
    Each tile is cut into ``samples`` horizontal lines (centres of equal bands); on each line the
    polygons' even-odd spans are intersected **exactly** with the tile, so the only error is the
    vertical sampling: at most ``1 / (2 * samples)`` of the tile per horizontal edge (0.8 % at
    64), far less for slanted or curved edges. Unions, holes and negative regions are resolved
    per line by counting span starts and ends; nothing is rasterised, so memory is
    O(tiles x samples + crossings) whatever the slide size.
    """
    xy = np.asarray(l0_xy, dtype=np.float64).reshape(-1, 2)
    n, k = len(xy), len(positive)
    cover = np.zeros((n, k), np.float64)
    inside = np.zeros((n, k), bool)
    if n == 0 or k == 0:
        return cover, inside
    t = float(l0_tile_size)
    uy, inv = np.unique(xy[:, 1], return_inverse=True)
    offs = (np.arange(samples) + 0.5) * (t / samples)
    if centres:
        offs = np.append(offs, t / 2)
    ys, row_of = np.unique((uy[:, None] + offs[None, :]).ravel(), return_inverse=True)
    row_of = row_of.reshape(len(uy), len(offs))[inv]  # (n, samples[+1]) line index per tile
    for c in range(k):
        if not positive[c]:
            continue
        pieces = _class_pieces(positive[c], negative[c], ys)
        if pieces is None:
            continue
        b = np.array([p.bounds for p in positive[c]])
        box = (b[:, 0].min(), b[:, 1].min(), b[:, 2].max(), b[:, 3].max())
        near = (xy[:, 0] < box[2]) & (xy[:, 0] + t > box[0])
        hit = np.flatnonzero(near & (xy[:, 1] < box[3]) & (xy[:, 1] + t > box[1]))
        for s in range(0, len(hit), 2048):
            tiles = hit[s : s + 2048]
            rows = row_of[tiles, :samples]
            x0 = np.broadcast_to(xy[tiles, 0:1], rows.shape)
            covered = _covered(pieces, rows, x0 + t) - _covered(pieces, rows, x0)
            cover[tiles, c] = np.clip(covered.sum(axis=1) / (t * samples), 0.0, 1.0)
            if centres:
                inside[tiles, c] = _contains(pieces, row_of[tiles, samples], xy[tiles, 0] + t / 2)
    return cover, inside


def _spans(polys: list[Polygon], ys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Even-odd spans of each polygon on the lines ``ys``: (line, start x, end x)."""
    pids, lines, xs = [], [], []
    for pid, poly in enumerate(polys):
        for ring in (poly.exterior, *poly.holes):
            xa, ya = ring[:, 0], ring[:, 1]
            xb, yb = np.roll(xa, -1), np.roll(ya, -1)
            keep = ya != yb
            xa, ya, xb, yb = xa[keep], ya[keep], xb[keep], yb[keep]
            # An edge crosses line y when min(ya, yb) <= y < max(ya, yb): each closed ring then
            # crosses every line an even number of times.
            k0 = np.searchsorted(ys, np.minimum(ya, yb), "left")
            cnt = np.searchsorted(ys, np.maximum(ya, yb), "left") - k0
            total = int(cnt.sum())
            if total == 0:
                continue
            e = np.repeat(np.arange(len(cnt)), cnt)
            line = k0[e] + np.arange(total) - np.repeat(np.cumsum(cnt) - cnt, cnt)
            x = xa[e] + (ys[line] - ya[e]) * (xb[e] - xa[e]) / (yb[e] - ya[e])
            pids.append(np.full(total, pid))
            lines.append(line)
            xs.append(x)
    if not lines:
        empty = np.zeros(0)
        return empty.astype(np.int64), empty, empty
    pid, line, x = (np.concatenate(v) for v in (pids, lines, xs))
    order = np.lexsort((x, line, pid))
    line, x = line[order], x[order]
    return line[0::2], x[0::2], x[1::2]


def _class_pieces(
    pos: list[Polygon], neg: list[Polygon], ys: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """Disjoint covered pieces per line, sorted: (search keys, line, start, cumulative length)."""
    lines, xs, dp, dq = [], [], [], []
    for polys, is_neg in ((pos, False), (neg, True)):
        if not polys:
            continue
        line, a, b = _spans(polys, ys)
        one = np.ones(len(line), np.int64)
        lines += [line, line]
        xs += [a, b]
        (dq if is_neg else dp).extend([one, -one])
        (dp if is_neg else dq).extend([0 * one, 0 * one])
    line, x = np.concatenate(lines), np.concatenate(xs)
    if len(line) == 0:
        return None
    order = np.lexsort((x, line))
    line, x = line[order], x[order]
    depth_pos = np.cumsum(np.concatenate(dp)[order])
    depth_neg = np.cumsum(np.concatenate(dq)[order])
    # Between event i and i + 1 (same line: every line's events sum to zero) the union of the
    # positive spans minus the negative ones is covered when depth_pos > 0 and depth_neg == 0.
    on = np.flatnonzero((depth_pos[:-1] > 0) & (depth_neg[:-1] == 0) & (x[1:] > x[:-1]))
    if len(on) == 0:
        return None
    pl, pa, pb = line[on], x[on], x[on + 1]
    length = pb - pa
    cum = np.cumsum(length)
    first = np.r_[True, pl[1:] != pl[:-1]]
    base = np.maximum.accumulate(np.where(first, cum - length, 0.0))
    return pl, pa, pb, cum - length - base


def _lookup(pieces: tuple, rows: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of the last piece on ``rows`` starting at or before ``x`` (-1 if none), and validity."""
    pl, pa = pieces[0], pieces[1]
    # Lexicographic (line, x) search: pieces are sorted by line, then start.
    lo = np.searchsorted(pl, rows, "left")
    hi = np.searchsorted(pl, rows, "right")
    idx = lo - 1
    has = hi > lo
    if has.any():
        # Binary search inside each line's block, vectorised: narrow [lo, hi) by bisection.
        a, b = lo.copy(), hi.copy()
        while True:
            active = has & (a < b)
            if not active.any():
                break
            mid = (a + b) // 2
            go_right = active & (pa[np.minimum(mid, len(pa) - 1)] <= x)
            a = np.where(go_right, mid + 1, a)
            b = np.where(active & ~go_right, mid, b)
        idx = a - 1
    valid = has & (idx >= lo)
    return np.where(valid, idx, 0), valid


def _covered(pieces: tuple, rows: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Covered length on each line ``rows`` left of ``x``."""
    _, pa, pb, before = pieces
    idx, valid = _lookup(pieces, rows, x)
    inner = np.clip(x - pa[idx], 0.0, pb[idx] - pa[idx])
    return np.where(valid, before[idx] + inner, 0.0)


def _contains(pieces: tuple, rows: np.ndarray, x: np.ndarray) -> np.ndarray:
    idx, valid = _lookup(pieces, rows, x)
    return valid & (x < pieces[2][idx])
