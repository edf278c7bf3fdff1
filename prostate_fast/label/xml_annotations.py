"""ASAP and Aperio ImageScope XML readers: :func:`load_asap_xml`, :func:`load_aperio_xml`.

Both parse with :mod:`defusedxml` (no entity expansion, no external entities or DTDs), so an
"entity bomb" fails fast with :class:`~prostate_fast.errors.AnnotationError`. The regions and
vertices are counted in the text before the tree is built (:func:`~.shapes.check_counts`), so a
file of a million regions is refused without parsing it. What each format's
elements mean is described in :mod:`.annotation`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import AnnotationError
from .shapes import Annotation, Polygon, check_counts, no_polygon, read_text, ring_of

__all__ = ["EXCLUSION_GROUPS", "aperio_layer_name", "load_aperio_xml", "load_asap_xml", "parse_xml"]

#: ASAP group names that mark regions to exclude (Camelyon16 convention), compared lower-case.
EXCLUSION_GROUPS = frozenset({"_2", "exclusion"})


def parse_xml(path: Path, data: bytes) -> Any:
    """The root element of XML ``data``, parsed safely; AnnotationError naming ``path``.

    Regions (``<Annotation``, ``<Region``) and vertices (``<Coordinate``, ``<Vertex``) are
    counted in the bytes first (UTF-8 and UTF-16), so an oversized file is refused unparsed.
    """
    import xml.etree.ElementTree as ET  # noqa: N817 - only for its ParseError

    check_counts(
        path, _count(data, "<Annotation", "<Region"), _count(data, "<Coordinate", "<Vertex")
    )

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


def _count(data: bytes, *tags: str) -> int:
    """Occurrences of the tags in ``data``, whichever of UTF-8/16 it is written in."""
    codecs = ("utf-8", "utf-16-le", "utf-16-be")
    return max(sum(data.count(t.encode(c)) for t in tags) for c in codecs)


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
    p, _, data = read_text(path)
    root = parse_xml(p, data)
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
        ring = ring_of(p, [(x, y) for _, x, y in pts], where) if pts else None
        if ring is None:
            continue
        group = ann.attrib.get("PartOfGroup", "").strip()
        name = None if group.lower() in ("", "none") else group
        if name is not None and name.lower() in EXCLUSION_GROUPS:
            polygons.append(Polygon(None, ring, (), negative=True))
        else:
            polygons.append(Polygon(name, ring))
    if not any(not q.negative for q in polygons):
        raise no_polygon(p)
    return Annotation(p, "asap", tuple(polygons))


def load_aperio_xml(path: str | Path) -> Annotation:
    """Read an Aperio ImageScope annotation file (``<Annotations MicronsPerPixel=...>``).

    Raises
    ------
    AnnotationError
        Missing/empty/malformed file, unsafe XML, a bad vertex, a bad ``MicronsPerPixel``, or no
        polygon at all.
    """
    p, _, data = read_text(path)
    root = parse_xml(p, data)
    if root.tag != "Annotations":
        raise AnnotationError(f"{p}: not an Aperio ImageScope file (root <{root.tag}>)")
    mpp = None
    if root.attrib.get("MicronsPerPixel", "").strip():
        mpp = _float_attr(p, root, "MicronsPerPixel", "<Annotations>")
        if not mpp > 0:
            raise AnnotationError(f"{p}: MicronsPerPixel must be positive, got {mpp}")
    polygons = []
    layers = root.findall("Annotation")
    for i, ann in enumerate(layers):
        layer = aperio_layer_name(ann)
        for j, reg in enumerate(ann.iter("Region")):
            where = f"annotation {i} region {reg.attrib.get('Id', j)}"
            verts = [
                (_float_attr(p, v, "X", where), _float_attr(p, v, "Y", where))
                for v in reg.iter("Vertex")
            ]
            rtype = reg.attrib.get("Type", "0").strip()
            if len(verts) == 2 and rtype in ("1", "2"):
                verts = _expand_two_point(verts, ellipse=rtype == "2")
            ring = ring_of(p, verts, where) if verts else None
            if ring is None:
                continue
            name = layer or reg.attrib.get("Text", "").strip() or None
            if name is None and len(layers) > 1:  # never merge unnamed layers silently
                name = f"layer {ann.attrib.get('Id', '').strip() or i + 1}"
            negative = reg.attrib.get("NegativeROA", "0").strip() == "1"
            polygons.append(Polygon(name, ring, (), negative=negative))
    if not any(not q.negative for q in polygons):
        raise no_polygon(p)
    return Annotation(p, "aperio", tuple(polygons), mpp)


def aperio_layer_name(ann: Any) -> str | None:
    """The class name of an Aperio ``<Annotation>`` layer: its ``Name``, else its first
    ``<Attribute>``'s ``Value``, else that attribute's ``Name`` (a TCGA-PRAD export names its
    cancer layer ``<Attribute Name="CaP" Value=""/>``), else None (regions' ``Text``, then
    ``layer N`` when the file has several layers; N is the layer's ``Id`` or its position)."""
    layer = ann.attrib.get("Name", "").strip()
    if layer:
        return layer
    for attr in ann.findall("Attributes/Attribute"):
        value = attr.attrib.get("Value", "").strip()
        key = attr.attrib.get("Name", "").strip()
        if value:
            return value
        if key and key.lower() != "description":  # ImageScope's default attribute
            return key
    return None


def _expand_two_point(verts: list[tuple[float, float]], *, ellipse: bool) -> list:
    (x0, y0), (x1, y1) = verts
    if not ellipse:
        return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
    t = np.linspace(0.0, 2 * np.pi, 128, endpoint=False)
    c, r = np.array([x0 + x1, y0 + y1]) / 2, np.abs([x1 - x0, y1 - y0]) / 2
    return list(c + r * np.stack([np.cos(t), np.sin(t)], axis=1))
