"""TODO docstring."""

from __future__ import annotations

from .core import (
    ArraySlide,
    ImageSlide,
    LevelChoice,
    OpenSlideSlide,
    Slide,
    TiffSlide,
    open_slide,
)

__all__ = [
    "ArraySlide",
    "ImageSlide",
    "LevelChoice",
    "OpenSlideSlide",
    "Slide",
    "TiffSlide",
    "open_slide",
]
