"""The label stage: give every tile of a grid a class from the pathologist's annotation.

Entry point :func:`label_tiles` (:mod:`.core`), which picks one of three sources, each a module of
its own returning a :class:`~.table.TileCoverage` (each tile's share per class):

* :mod:`.painted`: a painted copy of the slide (difference, threshold and marker colour, counted
  per tile by a native kernel: :func:`painted_tile_stats`, :func:`nearest_colour`);
* :mod:`.polygons`: polygon annotations, coverage computed exactly per tile; the files are read
  by :mod:`.annotation` (format sniffing) with one reader per format family, :mod:`.qupath`
  (GeoJSON) and :mod:`.xml_annotations` (ASAP, Aperio), on the types of :mod:`.shapes`;
* :mod:`.masks`: a label mask of integer codes at any downsample.

:class:`ClassMap` (:mod:`.classes`) says what the classes are; :class:`LabelTable` (:mod:`.table`)
is the stage's artefact, and :meth:`LabelTable.save` / :func:`load_label_table` its only writer
and reader.
"""

from __future__ import annotations

from .classes import ClassMap
from .core import label_tiles
from .painted import nearest_colour, painted_tile_stats
from .table import LabelTable, load_label_table

__all__ = [
    "ClassMap",
    "LabelTable",
    "label_tiles",
    "load_label_table",
    "nearest_colour",
    "painted_tile_stats",
]
