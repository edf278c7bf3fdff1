"""Overlay: the screening picture of a slide, its predicted tiles tinted by class.

* :mod:`.core`: :func:`blend_tables` / :func:`blend_tiles` (the native blend kernel's wrapper) and
  :func:`write_overlay` (the slide read by strips, blended, streamed into a pyramidal TIFF);
* :mod:`.thumbnail`: the PNG thumbnail with its legend;
* :mod:`.colours`: the one owner of class colours (defaults, ``CLASS=R,G,B`` parsing, the table).

The overlay reads a :class:`~prostate_fast.predict.ScoreGrid`; it does not write the GeoJSON
(:mod:`prostate_fast.geojson`, a later stage, does, with the same colours).
"""

from __future__ import annotations

from .colours import class_colours, parse_colour
from .core import (
    BlendTables,
    OverlayResult,
    blend_tables,
    blend_tiles,
    overlay_geometry,
    write_overlay,
)

__all__ = [
    "BlendTables",
    "OverlayResult",
    "blend_tables",
    "blend_tiles",
    "class_colours",
    "overlay_geometry",
    "parse_colour",
    "write_overlay",
]
