"""TODO docstring."""

from __future__ import annotations

from .core import (
    SLIDE_EXTENSIONS,
    BatchResult,
    SlideResult,
    discover_slides,
    read_manifest,
    run_batch,
)

__all__ = [
    "SLIDE_EXTENSIONS",
    "BatchResult",
    "SlideResult",
    "discover_slides",
    "read_manifest",
    "run_batch",
]
