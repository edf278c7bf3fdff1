"""Tile labels from the pathologist's annotation: a painted copy, polygons or a label mask.

:func:`label_tiles` gives every tile of a :class:`~prostate_fast.tile.TileGrid` a class and the
share of the tile each class covers, from one of three sources:

1. **Painted copy** (the 2018 study): the slide re-saved after the pathologist painted cancer in an
   image editor, at level 0 or at the tiling scale. A native kernel compares each tile with the
   original in one pass (``csrc/label.hpp``): a pixel is *marked* when a channel differs by more
   than ``threshold`` **and** the painted pixel is within ``colour_tol`` (every channel) of a
   marker colour of the class map, so JPEG noise and re-compression halos do not mark anything.
   A tile whose marked share reaches ``min_coverage`` takes the class whose colour is nearest to
   the mean colour of its marked pixels, so several cancer types can be painted in different
   colours.
2. **Polygons**: QuPath GeoJSON, ASAP XML or Aperio ImageScope XML (see
   :mod:`prostate_fast.label.annotation`), class names mapped by the :class:`ClassMap`; coverage
   is computed exactly along 64 lines per tile (no raster, any slide size).
3. **Label mask**: a PNG/TIFF of integer codes at any downsample of level 0 (inferred from its
   size); coverage per code is the exact area average over the tile.

Rules: with ``rule="coverage"`` (default) a class applies to a tile covering at least
``min_coverage`` of it (0.05, the study's rule, so that the model leans toward false positives);
with ``rule="centre"`` when the tile's centre lies in it. When several classes apply, the most
severe wins (:attr:`ClassMap.order`); a tile with none gets class 0, the negative class.

Each source lives in its own module (:mod:`.painted`, :mod:`.polygons`, :mod:`.masks`) and
returns a :class:`~.table.TileCoverage`; this module picks the source, applies the rule and
builds the :class:`LabelTable` (:mod:`.table`, saved as ``.csv`` or ``.npz``).

Cost: the painted copy needs both images read tile by tile (reading dominates; the kernel takes
about 5-10 µs per 128 px tile); polygons and masks cost little beyond reading the tiles for their
white fraction (``white=False`` skips that).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np

from ..errors import AnnotationError
from ..slide import Slide, open_slide
from ..slide.headers import TIFF_MAGICS
from ..tile import TileGrid, tile_white_fraction
from .annotation import Annotation, load_annotation
from .classes import ClassMap
from .masks import mask_coverage
from .painted import painted_coverage
from .polygons import polygon_tile_coverage
from .table import LabelTable, TileCoverage, slide_fingerprint

__all__ = ["Rule", "Source", "label_tiles"]

Source = Literal["painted", "polygons", "mask"]
Rule = Literal["coverage", "centre"]


def label_tiles(
    slide: Slide | str | Path,
    annotation: str | Path | Annotation | Slide | np.ndarray,
    grid: TileGrid,
    *,
    source: Source | None = None,
    classes: ClassMap | None = None,
    min_coverage: float = 0.05,
    rule: Rule = "coverage",
    threshold: int = 60,
    colour_tol: int = 64,
    samples: int = 64,
    white: bool = True,
    batch_size: int = 256,
    n_threads: int | None = None,
) -> LabelTable:
    """Label every tile of ``grid`` from a painted copy, polygons or a label mask.

    Parameters
    ----------
    slide : Slide or path
        The original slide the grid was built on (a path is opened and closed here).
    annotation : path, Annotation, Slide or numpy.ndarray
        The pathologist's annotation: a painted copy (path of any image :func:`open_slide`
        reads, or an open Slide), polygons (a GeoJSON/XML path or an :class:`Annotation`), or a
        label mask (a PNG/TIFF path or a 2-D integer array).
    grid : TileGrid
        The tiles to label.
    source : {"painted", "polygons", "mask"}, optional
        What ``annotation`` is. By default: JSON/XML text and Annotation objects are polygons,
        one-channel images and 2-D arrays are masks, colour images and Slides are painted copies.
    classes : ClassMap, optional
        Classes, marker colours, severity order, polygon names and mask codes (default
        :meth:`ClassMap.create`: benign + cancer painted green (0, 255, 0); mask codes 1 benign,
        2 cancer).
    min_coverage : float
        Share of a tile (0-1] from which a class applies under ``rule="coverage"`` (0.05).
    rule : {"coverage", "centre"}
        Apply a class by coverage, or when the tile's centre lies in it.
    threshold, colour_tol : int
        Painted copies: the marking rule (see :func:`painted_tile_stats`).
    samples : int
        Polygons: lines per tile of the exact coverage computation (error <= 1 / (2 * samples)
        per horizontal edge).
    white : bool
        Read the original tiles to store their white fraction (always done for painted copies).
    batch_size : int
        Tiles read and processed at once (memory: about 2 x batch x tile² x 3 bytes).
    n_threads : int, optional
        Threads for the kernels (None = all cores); the result does not depend on it.

    Returns
    -------
    LabelTable

    Raises
    ------
    AnnotationError
        The annotation cannot be read, is empty, does not fit the slide (a painted copy or mask of
        neither the slide's size nor a consistent downsample of it; polygons all outside the
        slide), or names a class/code the class map does not know. The message names the file.
    SlideError
        The slide or the painted copy cannot be read.
    ValueError
        Bad arguments.
    """
    if not 0 < float(min_coverage) <= 1:
        raise ValueError(f"min_coverage must be in (0, 1], got {min_coverage!r}")
    if rule not in ("coverage", "centre"):
        raise ValueError(f"rule must be 'coverage' or 'centre', got {rule!r}")
    if not isinstance(grid, TileGrid):
        raise ValueError(f"grid must be a TileGrid, got {type(grid).__name__}")
    for name, v in (("batch_size", batch_size), ("samples", samples)):
        if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    cmap = ClassMap.create() if classes is None else classes
    if not isinstance(cmap, ClassMap):
        raise ValueError(f"classes must be a ClassMap, got {type(cmap).__name__}")
    own = not isinstance(slide, Slide)
    sl = open_slide(slide, n_threads=n_threads) if own else slide
    try:
        kind = source or _sniff_source(annotation)
        found = _measure(
            kind,
            sl,
            annotation,
            grid,
            cmap,
            centre=rule == "centre",
            threshold=threshold,
            colour_tol=colour_tol,
            samples=samples,
            batch_size=batch_size,
            n_threads=n_threads,
        )
        wf = found.white_fraction
        if wf is None:
            wf = (
                tile_white_fraction(sl, grid, batch=batch_size, n_threads=n_threads)
                if white
                else np.full(len(grid), np.nan)
            )
        return _table(sl, grid, cmap, found, wf, float(min_coverage), rule)
    finally:
        if own:
            sl.close()


def _measure(
    kind: str,
    slide: Slide,
    annotation: object,
    grid: TileGrid,
    cmap: ClassMap,
    *,
    centre: bool,
    threshold: int,
    colour_tol: int,
    samples: int,
    batch_size: int,
    n_threads: int | None,
) -> TileCoverage:
    """Run the source ``kind`` on ``annotation``: each tile's coverage per class."""
    if kind == "painted":
        return painted_coverage(
            slide,
            annotation,  # type: ignore[arg-type]
            grid,
            cmap,
            centre=centre,
            threshold=threshold,
            colour_tol=colour_tol,
            batch_size=batch_size,
            n_threads=n_threads,
        )
    if kind == "polygons":
        ann = annotation if isinstance(annotation, Annotation) else load_annotation(annotation)  # type: ignore[arg-type]
        return polygon_tile_coverage(slide, ann, grid, cmap, centre=centre, samples=samples)
    if kind == "mask":
        return mask_coverage(slide, annotation, grid, cmap, centre=centre)  # type: ignore[arg-type]
    raise ValueError(f"source must be 'painted', 'polygons' or 'mask', got {kind!r}")


def _sniff_source(annotation: object) -> Source:
    if isinstance(annotation, Annotation):
        return "polygons"
    if isinstance(annotation, Slide):
        return "painted"
    if isinstance(annotation, np.ndarray):
        return "mask" if annotation.ndim == 2 else "painted"
    p = Path(annotation)  # type: ignore[arg-type]
    try:
        with open(p, "rb") as fh:
            head = fh.read(64)
    except OSError as exc:
        raise AnnotationError(f"{p}: cannot read it ({exc.strerror or exc})") from None
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")[:1]
    if text in (b"{", b"[", b"<"):
        return "polygons"
    if head.startswith(b"\x89PNG") and len(head) > 25:
        return "mask" if head[25] in (0, 4) else "painted"  # IHDR colour type: grey(+alpha)
    if head[:4] in TIFF_MAGICS:
        import tifffile

        try:
            with tifffile.TiffFile(str(p)) as tf:
                spp = tf.pages[0].samplesperpixel
        except Exception as exc:  # noqa: BLE001 - any reader failure is a bad annotation
            raise AnnotationError(f"{p}: unreadable TIFF ({exc})") from None
        return "mask" if spp == 1 else "painted"
    return "painted"


def _table(
    slide: Slide,
    grid: TileGrid,
    cmap: ClassMap,
    found: TileCoverage,
    white: np.ndarray,
    min_coverage: float,
    rule: str,
) -> LabelTable:
    """Apply the rule to a source's coverage: the most severe class that passes wins."""
    passing = found.coverage >= min_coverage if rule == "coverage" else found.inside
    label = np.zeros(len(grid), np.int16)
    for idx in reversed(cmap.order):  # most severe assigned last
        label[passing[:, idx]] = idx
    return LabelTable(
        slide_name=slide.name,
        slide_path=str(Path(slide.path).resolve()) if slide.path is not None else None,
        classes=cmap.names,
        tile_size=grid.tile_size,
        stride=grid.stride,
        downsample=float(grid.downsample),
        level=grid.level,
        tile_rc=np.asarray(grid.tile_rc, np.int32),
        l0_xy=np.asarray(grid.l0_xy, np.int64),
        label=label,
        coverage=found.coverage.astype(np.float32),
        white_fraction=white.astype(np.float32),
        source=found.source,
        source_path=found.source_path,
        min_coverage=float(min_coverage),
        rule=rule,
        slide_dimensions=slide.dimensions,
        slide_fingerprint=slide_fingerprint(slide),
    )
