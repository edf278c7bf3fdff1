"""The polygons of an annotation file: :class:`Polygon`, :class:`Annotation` and the checks every reader shares.

Coordinates are level-0 pixels ``l0_xy`` (x to the right, y down), rings are (n, 2) float64 without
the closing vertex. The readers (:mod:`.qupath` for GeoJSON, :mod:`.xml_annotations` for ASAP and
Aperio XML) build these objects; :mod:`.annotation` picks the reader for a file.

Limits (an annotation file is small, but what it describes need not be): a file over
:data:`MAX_ANNOTATION_BYTES` (64 MiB) is refused before it is parsed; one with more than
:data:`MAX_POLYGONS` (100,000) polygons or :data:`MAX_VERTICES` (1,000,000) vertices in all is
refused (XML: counted in the text before the tree is built; GeoJSON: while its rings are read).
The work of turning polygons into tile coverage is bounded separately
(:data:`~.polygons.MAX_CROSSINGS`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import AnnotationError

__all__ = ["MAX_ANNOTATION_BYTES", "MAX_POLYGONS", "MAX_VERTICES", "Annotation", "Polygon"]

#: Largest annotation file read (bytes).
MAX_ANNOTATION_BYTES = 64 << 20
#: Most polygons (rings with holes count once) one annotation file may hold.
MAX_POLYGONS = 100_000
#: Most vertices, all rings together, one annotation file may hold.
MAX_VERTICES = 1_000_000


@dataclass(frozen=True, eq=False)
class Polygon:
    """One polygon of an annotation, in level-0 pixels.

    Attributes
    ----------
    name : str or None
        Class name exactly as the file writes it; None when the object is unclassified.
    exterior : numpy.ndarray
        (n, 2) float64 ring of (x, y) vertices, n >= 3, not repeated at the end.
    holes : tuple of numpy.ndarray
        Interior rings, same layout.
    negative : bool
        True for a region that removes area (Aperio negative region, Camelyon exclusion group)
        from its class, or from every class when ``name`` is None.
    """

    name: str | None
    exterior: np.ndarray
    holes: tuple[np.ndarray, ...] = ()
    negative: bool = False

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1) of the exterior ring."""
        lo, hi = self.exterior.min(axis=0), self.exterior.max(axis=0)
        return float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])

    @property
    def area(self) -> float:
        """Area in level-0 pixels² (exterior minus holes, shoelace formula)."""
        return ring_area(self.exterior) - sum(ring_area(h) for h in self.holes)


@dataclass(frozen=True, eq=False)
class Annotation:
    """The polygons of one annotation file.

    Attributes
    ----------
    path : pathlib.Path
    format : str
        ``"geojson"``, ``"asap"`` or ``"aperio"``.
    polygons : tuple of Polygon
    mpp : float or None
        Microns per pixel of the image the coordinates refer to, when the file records it
        (Aperio ``MicronsPerPixel``); None means "level 0 of the slide".
    """

    path: Path
    format: str
    polygons: tuple[Polygon, ...]
    mpp: float | None = None

    @property
    def names(self) -> tuple[str | None, ...]:
        """Distinct class names in file order (None for unclassified objects)."""
        seen: dict[str | None, None] = {}
        for p in self.polygons:
            seen.setdefault(p.name, None)
        return tuple(seen)


def ring_area(ring: np.ndarray) -> float:
    """Area of a ring (shoelace formula)."""
    x, y = ring[:, 0], ring[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def ring_of(path: Path, coords: Any, what: str) -> np.ndarray | None:
    """A validated (n, 2) float64 ring without the closing vertex; None when degenerate."""
    try:
        arr = np.asarray(coords, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise AnnotationError(f"{path}: {what}: coordinates are not numbers ({exc})") from None
    if arr.ndim != 2 or arr.shape[1] < 2 or arr.shape[0] == 0:
        raise AnnotationError(f"{path}: {what}: a ring must be a list of [x, y] points")
    arr = np.ascontiguousarray(arr[:, :2])
    if not np.isfinite(arr).all():
        raise AnnotationError(f"{path}: {what}: non-finite coordinate")
    if np.abs(arr).max() > 1e9:
        raise AnnotationError(f"{path}: {what}: coordinate beyond 1e9 pixels")
    if len(arr) > 1 and (arr[0] == arr[-1]).all():
        arr = arr[:-1]
    return arr if len(arr) >= 3 else None


def read_text(path: str | Path) -> tuple[Path, str, bytes]:
    """The file as (path, decoded text, raw bytes); AnnotationError if unreadable or empty."""
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > MAX_ANNOTATION_BYTES and p.is_file():
            raise AnnotationError(
                f"{p}: annotation file of {size / 2**20:.0f} MiB, over the limit of "
                f"{MAX_ANNOTATION_BYTES >> 20} MiB"
            )
        data = p.read_bytes()
    except FileNotFoundError:
        raise AnnotationError(f"{p}: no such annotation file") from None
    except IsADirectoryError:
        raise AnnotationError(f"{p}: is a directory, not an annotation file") from None
    except OSError as exc:
        raise AnnotationError(f"{p}: cannot read it ({exc.strerror or exc})") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        try:
            text = data.decode("utf-16")
        except UnicodeDecodeError:
            raise AnnotationError(f"{p}: not a text annotation file (undecodable bytes)") from None
    if not text.strip():
        raise AnnotationError(f"{p}: empty annotation file")
    return p, text, data


def check_counts(path: Path, polygons: int, vertices: int) -> None:
    """AnnotationError when ``polygons`` or ``vertices`` exceed :data:`MAX_POLYGONS` /
    :data:`MAX_VERTICES`."""
    if polygons > MAX_POLYGONS:
        raise AnnotationError(
            f"{path}: more than {MAX_POLYGONS:,} polygons ({polygons:,}); split the annotation "
            "or use a label mask"
        )
    if vertices > MAX_VERTICES:
        raise AnnotationError(
            f"{path}: more than {MAX_VERTICES:,} vertices ({vertices:,}); simplify the "
            "polygons or use a label mask"
        )


def no_polygon(path: Path, skipped: int = 0) -> AnnotationError:
    """The error of a file that holds no polygon (``skipped`` non-annotation objects)."""
    extra = f" ({skipped} non-annotation objects skipped)" if skipped else ""
    return AnnotationError(f"{path}: contains no polygon{extra}")
