"""Errors raised by prostate-fast.

Bad arguments raise :class:`ValueError` naming the parameter. Domain failures raise a
:class:`ProstateFastError` subclass whose message names the file concerned; the CLI prints such an
error as one line on stderr and exits with status 2.
"""

from __future__ import annotations

__all__ = [
    "AnnotationError",
    "DatasetError",
    "ModelError",
    "ProstateFastError",
    "SlideError",
]


class ProstateFastError(Exception):
    """Base class of every domain error of prostate-fast."""


class SlideError(ProstateFastError):
    """A slide file cannot be opened or read (missing, empty, truncated, not a slide)."""


class AnnotationError(ProstateFastError):
    """An annotation (painted copy, polygons, mask) is unreadable or does not fit its slide."""


class DatasetError(ProstateFastError):
    """A dataset cannot be built or read (no tiles, no shared class, empty split, bad record)."""


class ModelError(ProstateFastError):
    """A model cannot be built, loaded or applied (bad files, class count or scale mismatch)."""


def one_line(exc: BaseException) -> str:
    """``exc`` as one line: ``"<file>: <problem>"`` for an OS error naming a file, else its text.

    What the CLI prints after ``prostate-fast: error:`` and what a worklist row says after
    ``error:`` (whitespace, newlines included, collapsed to single spaces).
    """
    text = str(exc) or type(exc).__name__
    if isinstance(exc, OSError) and exc.filename:
        text = f"{exc.filename}: {exc.strerror or text}"
    return " ".join(text.split())
