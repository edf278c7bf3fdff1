"""What the viewer serves: the slides of an output folder (or one slide) and the review marks.

A :class:`Catalog` is built once when the server starts, from

* a ``screen``/``batch``/``run`` output folder: its ``worklist.csv`` (rows in rank order) and,
  per row, the files the worklist names (thumbnail, scores, GeoJSON) **when they lie inside the
  folder** (a relative path is taken from the folder; a path that no longer exists is looked up
  as ``<folder>/<slide folder>/<file>``, so a moved output folder still works), and the slide
  file (``path``); or
* one slide file, with an optional ``--scores`` ScoreGrid.

Nothing else is reachable: the server addresses every file by the row's index, never by a path
taken from the request. Review marks live in ``review.csv`` beside the worklist (columns
``slide,note,time``; one row per reviewed slide), rewritten atomically on every change
(:func:`~prostate_fast._util.atomic_path`: temporary name, lock, rename).
"""

from __future__ import annotations

import csv
import os
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .._outputs import register_csv_header
from .._util import atomic_path, csv_cell
from ..errors import ProstateFastError
from ..screen import WORKLIST

__all__ = ["REVIEW", "REVIEW_HEADER", "Catalog", "Entry", "ViewError", "open_catalog"]

#: The review marks' file name, beside the worklist.
REVIEW = "review.csv"
REVIEW_FIELDS = ("slide", "note", "time")
REVIEW_HEADER = ",".join(REVIEW_FIELDS)
register_csv_header(REVIEW_HEADER)  # so a later mark may replace the file (ours)

_ROW_NUMBERS = ("rank", "n_tiles", "n_positive")
_ROW_FLOATS = ("positive_share", "score", "top_probability")


class ViewError(ProstateFastError):
    """The viewer's input is not an output folder or a slide it can show."""


@dataclass(frozen=True)
class Entry:
    """One slide of the catalog (a worklist row, or the one slide given).

    ``slide``/``thumbnail``/``scores``/``geojson`` are resolved paths, or None when missing.
    """

    index: int
    name: str
    status: str
    row: dict[str, Any]
    slide: Path | None
    thumbnail: Path | None
    scores: Path | None
    geojson: Path | None


class Catalog:
    """The slides the viewer shows, and the review marks (thread-safe).

    Parameters
    ----------
    entries : list of Entry
        In worklist order.
    review : pathlib.Path or None
        ``review.csv`` (None: one slide, no worklist, no marks saved).
    """

    def __init__(self, entries: list[Entry], review: Path | None) -> None:
        self.entries = entries
        self.review = review
        self._lock = threading.Lock()
        self._marks: dict[str, dict[str, str]] = _read_review(review) if review else {}

    def marks(self) -> dict[str, dict[str, str]]:
        """Slide name to ``{"note": ..., "time": ...}`` of the reviewed slides."""
        with self._lock:
            return {k: dict(v) for k, v in self._marks.items()}

    def set_mark(self, slide: str, reviewed: bool, note: str = "") -> dict[str, str] | None:
        """Mark ``slide`` reviewed (with ``note``) or not; rewrite ``review.csv`` atomically."""
        if self.review is None:
            raise ViewError("review marks need an output folder (a worklist), not one slide")
        if slide not in {e.name for e in self.entries}:
            raise ValueError(f"slide {slide!r} is not in the worklist")
        with self._lock:
            marks = dict(self._marks)
            if reviewed:
                now = datetime.now(UTC).isoformat(timespec="seconds")
                marks[slide] = {"note": " ".join(str(note).split())[:2000], "time": now}
            else:
                marks.pop(slide, None)
            _write_review(self.review, marks)
            self._marks = marks
            return marks.get(slide)


def _read_review(path: Path) -> dict[str, dict[str, str]]:
    if not path.is_file():
        return {}
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    return {r["slide"]: {"note": r.get("note") or "", "time": r.get("time") or ""} for r in rows}


def _write_review(path: Path, marks: dict[str, dict[str, str]]) -> None:
    with atomic_path(path, overwrite=True) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh, lineterminator="\n")
            w.writerow(REVIEW_FIELDS)
            for slide, m in marks.items():
                w.writerow([csv_cell(slide), csv_cell(m["note"]), m["time"]])


def open_catalog(
    target: str | os.PathLike[str], scores: str | os.PathLike[str] | None = None
) -> Catalog:
    """The catalog of an output folder (with ``worklist.csv``) or of one slide file.

    Raises
    ------
    ViewError
        A folder without a prostate-fast worklist, an unreadable worklist, ``scores`` with a folder.
    """
    target = Path(target)
    if target.is_dir():
        if scores is not None:
            raise ViewError(f"{target}: --scores goes with a slide file, not an output folder")
        return _folder_catalog(target)
    if not target.exists():
        raise ViewError(f"{target}: no such file or folder")
    sc = Path(scores) if scores is not None else None
    if sc is not None and not sc.is_file():
        raise ViewError(f"{sc}: no such scores file")
    row = {"rank": 1, "slide": target.name, "status": "ok"}
    scores_path = sc.resolve() if sc else None
    entry = Entry(0, target.name, "ok", row, target.resolve(), None, scores_path, None)
    return Catalog([entry], None)


def _folder_catalog(folder: Path) -> Catalog:
    worklist = folder / WORKLIST
    if not worklist.is_file():
        raise ViewError(f"{folder}: not a prostate-fast output folder (no {WORKLIST})")
    try:
        with open(worklist, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ViewError(f"{worklist}: cannot read the worklist: {exc}") from exc
    if not rows or not {"rank", "slide", "status", "path"} <= set(rows[0]):
        raise ViewError(f"{worklist}: not a prostate-fast worklist (no rank/slide/status/path)")
    root = folder.resolve()
    entries = [_entry(i, r, root) for i, r in enumerate(rows)]
    return Catalog(entries, folder / "review.csv")


def _entry(i: int, r: dict[str, str], root: Path) -> Entry:
    row: dict[str, Any] = {k: _unescape(v) for k, v in r.items() if k in _KEEP}
    for k in _ROW_NUMBERS:
        row[k] = _number(r.get(k), int)
    for k in _ROW_FLOATS:
        row[k] = _number(r.get(k), float)
    slide = _unescape(r.get("path") or "")
    found = Path(slide) if slide else None
    if found is not None and not found.is_absolute():
        found = (root.parent / found) if not found.exists() else found
    slide_path = found.resolve() if found is not None and found.is_file() else None
    files = {
        k: _inside(_unescape(r.get(k) or ""), root) for k in ("thumbnail", "scores", "geojson")
    }
    name = row.get("slide") or f"slide {i + 1}"
    return Entry(i, name, row.get("status", ""), row, slide_path, **files)


_KEEP = ("rank", "slide", "status", "n_tiles", "n_positive", "positive_share", "score")


def _unescape(v: str) -> str:
    """Undo :func:`~prostate_fast._util.csv_cell`'s leading quote on text it escaped."""
    return v[1:] if v[:1] == "'" and v[1:2] in ("=", "+", "-", "@", "\t", "\r") else v


def _number(v: str | None, kind: type) -> Any:
    try:
        return kind(v) if v not in (None, "") else None
    except ValueError:
        return None


def _inside(name: str, root: Path) -> Path | None:
    """The output file ``name`` of a worklist row when it lies inside ``root``, else None."""
    if not name:
        return None
    p = Path(name)
    candidates = [p if p.is_absolute() else root / p, root / p.parent.name / p.name]
    if not p.is_absolute():
        candidates.insert(0, Path.cwd() / p)
    for c in candidates:
        try:
            real = c.resolve(strict=True)
        except OSError:
            continue
        if real.is_file() and real.is_relative_to(root):
            return real
    return None
