"""TODO docstring."""

from __future__ import annotations

from .core import (
    BlendTables,
    OverlayResult,
    blend_tables,
    blend_tiles,
    overlay_geometry,
    parse_colour,
    write_overlay,
)

__all__ = [
    "BlendTables",
    "OverlayResult",
    "blend_tables",
    "blend_tiles",
    "overlay_geometry",
    "parse_colour",
    "write_overlay",
]
