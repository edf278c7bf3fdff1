"""Class colours of the screening outputs (one owner): defaults, parsing, the per-class table.

A class takes its colour from the user's overrides (``--colour CLASS=R,G,B``), else from the
ScoreGrid (the model's ``model.json``), else from :data:`PALETTE` (green first, the study's cancer
colour) for the non-negative classes and :data:`NEGATIVE_COLOUR` for class 0. The overlay, its
thumbnail legend and the GeoJSON export all read the table :func:`class_colours` builds, so a
class has the same colour everywhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["NEGATIVE_COLOUR", "PALETTE", "check_rgb", "class_colours", "parse_colour"]

#: Default colours of positive classes without one: green first (the study's cancer colour).
PALETTE = ((0, 255, 0), (255, 0, 255), (255, 165, 0), (0, 160, 255), (255, 255, 0), (255, 0, 0))
NEGATIVE_COLOUR = (160, 160, 160)


def parse_colour(text: str) -> tuple[str, tuple[int, int, int]]:
    """Parse ``"cancer=0,255,0"`` (or ``cancer=#00ff00``) into ``("cancer", (0, 255, 0))``."""
    name, sep, value = str(text).partition("=")
    name, value = name.strip(), value.strip()
    try:
        if not sep or not name:
            raise ValueError
        if value.startswith("#") and len(value) == 7:
            rgb = tuple(int(value[i : i + 2], 16) for i in (1, 3, 5))
        else:
            rgb = tuple(int(v) for v in value.split(","))
        if len(rgb) != 3 or not all(0 <= v <= 255 for v in rgb):
            raise ValueError
    except ValueError:
        raise ValueError(
            f"colour must look like CLASS=R,G,B (0-255) or CLASS=#rrggbb, got {text!r}"
        ) from None
    return name, (rgb[0], rgb[1], rgb[2])


def check_rgb(name: str, value: Any) -> tuple[int, int, int]:
    """``value`` as an (R, G, B) tuple of ints, or ValueError naming class ``name``."""
    rgb = tuple(int(v) for v in value)
    if len(rgb) != 3 or not all(0 <= v <= 255 for v in rgb):
        raise ValueError(f"colour of class {name!r} must be three integers 0-255, got {rgb!r}")
    return rgb[0], rgb[1], rgb[2]


def class_colours(scores: Any, colours: Mapping[str, Any] | None = None) -> np.ndarray:
    """(n_classes, 3) uint8 RGB table of the classes of ``scores`` (see the module notes).

    Parameters
    ----------
    scores : ScoreGrid
        Its ``classes`` and, when it has them, its (the model's) ``colours``.
    colours : mapping of str to (int, int, int), optional
        Overrides per class name.

    Raises
    ------
    ValueError
        ``colours`` names a class ``scores`` lacks, or a colour is not three integers 0-255.
    """
    classes = tuple(scores.classes)
    user = dict(colours or {})
    unknown = sorted(set(user) - set(classes))
    if unknown:
        raise ValueError(
            f"colours names unknown classes {unknown}; the classes are {list(classes)}"
        )
    model = dict(getattr(scores, "colours", None) or {})
    table = np.zeros((len(classes), 3), np.uint8)
    k = 0
    for i, name in enumerate(classes):
        rgb = user.get(name, model.get(name))
        if rgb is None:
            rgb = NEGATIVE_COLOUR if i == 0 else PALETTE[k % len(PALETTE)]
            k += i > 0
        table[i] = check_rgb(name, rgb)
    return table
