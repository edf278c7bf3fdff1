"""TODO docstring."""

from __future__ import annotations

from .core import (
    ClassMap,
    LabelTable,
    label_tiles,
    load_label_table,
    nearest_colour,
    painted_tile_stats,
)

__all__ = [
    "ClassMap",
    "LabelTable",
    "label_tiles",
    "load_label_table",
    "nearest_colour",
    "painted_tile_stats",
]
