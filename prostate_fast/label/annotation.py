"""Read polygon annotations: QuPath GeoJSON, ASAP XML (Camelyon style) and Aperio ImageScope XML.

Every reader returns an :class:`Annotation`: the file, its format and :class:`Polygon` objects
(class name as written, exterior and holes in level-0 pixels ``l0_xy``, a ``negative`` flag for
regions that *subtract*); :func:`load_annotation` sniffs the format and calls the reader. The
pieces: :mod:`.shapes` (the two types and the checks every reader shares), :mod:`.qupath`
(GeoJSON), :mod:`.xml_annotations` (ASAP and Aperio); :func:`polygon_coverage`
(:mod:`.polygons`, re-exported here) turns polygons into per-tile coverage. Class names are mapped
by :class:`~prostate_fast.label.ClassMap`.

Formats
-------
* **QuPath GeoJSON**: a ``Feature``, a ``FeatureCollection``, a JSON list of features (QuPath's
  "Export objects"), or a bare geometry. ``Polygon`` and ``MultiPolygon`` geometries (holes
  included) are read, ``GeometryCollection`` is walked, points and lines are skipped. The class is
  ``properties.classification.name`` (or a plain string ``classification``); a feature without one
  is *unclassified* (``name=None``). Labels come from annotations; a file without any is read
  from its ``detection``/``tile`` objects (exported predictions, corrected in QuPath); ``cell``
  objects are skipped.
* **ASAP XML** (``<ASAP_Annotations>``): every ``<Annotation>`` of type Polygon, Spline or
  Rectangle with its ``<Coordinate>`` points (sorted by ``Order``); the class is ``PartOfGroup``
  (``None`` or empty: unclassified). Camelyon16's exclusion group ``_2`` (and a group named
  ``Exclusion``) is read as ``negative`` with no class: it subtracts from every class.
* **Aperio ImageScope XML** (``<Annotations>``): every ``<Annotation>`` layer's ``<Region>``; the
  class is the layer's ``Name``, else its first ``<Attribute>``'s ``Value``, else that
  attribute's ``Name`` (``<Attribute Name="CaP" Value=""/>`` names the layer ``CaP``), else the
  region's ``Text``, else, when the file has several layers, ``layer N`` (N: the layer's ``Id``):
  unnamed layers are never merged into one class; map them with ``--class-alias 'layer 3=ignore'``. ``NegativeROA="1"`` regions subtract from their own layer's class. Region type 1
  (rectangle) and 2 (ellipse) given by two corner vertices are expanded to polygons; regions with
  fewer than three vertices (rulers, arrows) are skipped. ``MicronsPerPixel`` is kept as
  :attr:`Annotation.mpp`: vertices are pixels of an image of that resolution, rescaled by the
  labeller when it differs from the slide's (so a drawing on a 20x export of a 40x scan fits).

Safety: XML is parsed with :mod:`defusedxml` (no entity expansion, no external entities or DTDs),
so an "entity bomb" fails fast. Any unreadable, malformed or empty file raises
:class:`~prostate_fast.errors.AnnotationError` naming the file.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import AnnotationError
from .polygons import polygon_coverage
from .qupath import load_geojson
from .shapes import Annotation, Polygon, read_text
from .xml_annotations import load_aperio_xml, load_asap_xml, parse_xml

__all__ = [
    "Annotation",
    "Polygon",
    "load_annotation",
    "load_aperio_xml",
    "load_asap_xml",
    "load_geojson",
    "polygon_coverage",
]


def load_annotation(path: str | Path) -> Annotation:
    """Read any supported polygon annotation file, sniffing the format from its content.

    JSON (``{`` or ``[`` first) is read as GeoJSON; XML as ASAP (root ``<ASAP_Annotations>``) or
    Aperio ImageScope (root ``<Annotations>``).

    Raises
    ------
    AnnotationError
        The file is missing, empty, of an unknown format, or fails its format's reader.
    """
    p, text, data = read_text(path)
    head = text.lstrip()[:1]
    if head in ("{", "["):
        return load_geojson(p)
    if head == "<":
        root = parse_xml(p, data)
        if root.tag == "ASAP_Annotations":
            return load_asap_xml(p)
        if root.tag == "Annotations":
            return load_aperio_xml(p)
        raise AnnotationError(f"{p}: unknown XML annotation format (root <{root.tag}>)")
    raise AnnotationError(f"{p}: not a GeoJSON or XML annotation file")
