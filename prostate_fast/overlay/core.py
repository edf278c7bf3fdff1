"""Screening overlay: colour the tiles predicted as cancer over the whole slide, fast.

:func:`write_overlay` reads the slide at the tiling level in strips, alpha-blends each strip with the
native kernel (:func:`blend_tiles`, C++ with OpenMP) and streams it into a pyramidal tiled TIFF
(JPEG by default) that OpenSlide, QuPath and ASAP open, with the tile pixel size as its mpp; a PNG
thumbnail with a legend comes with it (the QuPath GeoJSON of the tiles is
:func:`prostate_fast.geojson.export_geojson`'s, called by whoever writes it beside the overlay).
Memory stays bounded by a few strips whatever the slide size (the 2018 study blended 128 px tile
files one by one and reassembled them with ImageMagick ``montage``: 17 min + 27 s). The slide is
a path (opened and closed here) or a :class:`~prostate_fast.slide.Slide` already open (left open),
so a caller that predicted on it does not open it again.

The overlay is at the **tiling magnification**: one overlay pixel per tile pixel, level 0 of the
TIFF is the slide at ``ScoreGrid.downsample`` (the slide's level ``ScoreGrid.level`` as it is, or
shrunk by ``ScoreGrid.scale`` with area interpolation when no level matched). Tile (r, c) covers
overlay pixels ``[c*stride, c*stride + tile_size)`` x ``[r*stride, r*stride + tile_size)``; with
overlapping tiles (stride < tile_size) each pixel takes the tile whose centre is nearest (see
``csrc/blend.hpp``).

Colours: per class, from ``colours=`` (overrides), else the ScoreGrid's (the model's) colours, else
a palette whose first entry is green (:mod:`prostate_fast.overlay.colours`). Modes: ``"class"`` blends ``alpha`` over tiles predicted as a
non-negative class; ``"graded"`` blends every scored tile with ``alpha * p`` where p is the
probability of its most probable non-negative class (a heat map, the predicted tiles included).

Tiles partly off tissue: only their tissue pixels are tinted when the scores record the tissue
mask (:mod:`prostate_fast.overlay.edges`); tiles fully on tissue keep the kernel's bytes.
Untouched JPEG tiles of a slide in the overlay's own layout are copied as they are
(:mod:`prostate_fast.overlay.copy`): at every level when the slide's levels allow it (the TIFF
then has the slide's levels, :mod:`prostate_fast.overlay.mirror`), else at level 0, decoded at
half size for level 1 (:mod:`prostate_fast.overlay.sparse`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._outputs import command_inputs
from .._util import atomic_path, check_image, check_outputs, resolve_threads
from ..errors import SlideError
from .colours import class_colours

__all__ = [
    "BlendTables",
    "OverlayResult",
    "blend_tables",
    "blend_tiles",
    "check_encoding",
    "check_look",
    "overlay_geometry",
    "overlay_paths",
    "write_overlay",
]

MODES = ("class", "graded")
COMPRESSIONS = ("jpeg", "deflate", "none")
TIFF_TILE = 256


@dataclass(frozen=True, eq=False)
class BlendTables:
    """Per grid cell what to draw: the native kernel's input (see ``csrc/blend.hpp``).

    Attributes
    ----------
    cls : numpy.ndarray
        (rows, cols) int16 class index per cell; -1: untouched.
    alpha : numpy.ndarray
        (rows, cols) uint16 blend weight 0..256 (``round(alpha * 256)``).
    outline : numpy.ndarray
        (rows, cols) uint8, 1 where the cell's border is drawn at full opacity.
    colours : numpy.ndarray
        (n_classes, 3) uint8 RGB per class index.
    classes : tuple of str
        Class names (index 0 = negative).
    tile_size, stride, outline_width : int
        Tiling-level pixels.
    """

    cls: np.ndarray
    alpha: np.ndarray
    outline: np.ndarray
    colours: np.ndarray
    classes: tuple[str, ...]
    tile_size: int
    stride: int
    outline_width: int = 0


@dataclass(frozen=True)
class OverlayResult:
    """Files and facts of one :func:`write_overlay` call.

    Attributes
    ----------
    path : pathlib.Path
        The TIFF.
    thumbnail : pathlib.Path or None
        The PNG thumbnail, when written.
    level_dimensions : tuple of (int, int)
        (width, height) of each pyramid level of the TIFF.
    mpp : float or None
        Microns per overlay pixel, when known.
    n_positive : int
        Tiles predicted as a non-negative class.
    seconds : float
        Wall time of the call.
    scores : ScoreGrid
        The scores drawn (loaded here when a path was given), e.g. for the GeoJSON export.
    """

    path: Path
    thumbnail: Path | None
    level_dimensions: tuple[tuple[int, int], ...]
    mpp: float | None
    n_positive: int
    seconds: float
    scores: Any = None


def check_look(alpha: Any, mode: Any, outline: Any) -> None:
    """ValueError naming the parameter unless alpha, mode and outline are valid (see blend_tables)."""
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if isinstance(outline, bool) or not isinstance(outline, int | np.integer) or outline < 0:
        raise ValueError(f"outline must be a non-negative integer, got {outline!r}")


def blend_tables(
    scores: Any,
    *,
    alpha: float = 0.4,
    mode: str = "class",
    outline: int = 0,
    colours: Mapping[str, Any] | None = None,
) -> BlendTables:
    """Turn a :class:`~prostate_fast.predict.ScoreGrid` into per-cell blend tables.

    Parameters
    ----------
    scores : ScoreGrid
        Per-tile probabilities and the grid geometry.
    alpha : float
        Opacity of the class colour in [0, 1] (class mode), or its maximum (graded mode).
    mode : {"class", "graded"}
        ``"class"``: tiles predicted as a non-negative class get ``alpha``; ``"graded"``: every
        scored tile gets ``alpha * p`` (p: probability of its most probable non-negative class).
    outline : int
        Width in pixels of the full-opacity border drawn on predicted tiles (0: none).
    colours : mapping of str to (int, int, int), optional
        Colour overrides per class name.

    Returns
    -------
    BlendTables

    Raises
    ------
    ValueError
        Bad alpha, mode, outline or colours, or a ScoreGrid whose arrays disagree.
    """
    check_look(alpha, mode, outline)
    rows, cols = (int(v) for v in scores.grid_shape)
    rc = np.asarray(scores.tile_rc)
    prob = np.asarray(scores.prob, dtype=np.float32)
    pred = np.asarray(scores.predicted).astype(np.int64)
    n, k = len(rc), len(scores.classes)
    if rc.shape != (n, 2) or prob.shape != (n, k) or pred.shape != (n,) or k < 2:
        raise ValueError(
            f"scores arrays disagree: tile_rc {rc.shape}, prob {prob.shape}, predicted {pred.shape}"
        )
    if n and (rc.min() < 0 or rc[:, 0].max() >= rows or rc[:, 1].max() >= cols):
        raise ValueError(f"scores.tile_rc has cells outside the grid {rows} x {cols}")
    if n and (pred.min() < 0 or pred.max() >= k):
        raise ValueError(f"scores.predicted has class indices outside [0, {k})")
    table = class_colours(scores, colours)
    cls = np.full((rows, cols), -1, np.int16)
    a8 = np.zeros((rows, cols), np.uint16)
    ol = np.zeros((rows, cols), np.uint8)
    positive = pred > 0
    r, c = rc[:, 0], rc[:, 1]
    if mode == "class":
        cls[r[positive], c[positive]] = pred[positive]
        a8[r[positive], c[positive]] = round(float(alpha) * 256)
    else:
        best = np.argmax(prob[:, 1:], axis=1) + 1
        best = np.where(positive, pred, best)
        p = np.clip(prob[np.arange(n), best], 0.0, 1.0).astype(np.float64)
        cls[r, c] = best
        a8[r, c] = np.rint(float(alpha) * p * 256).astype(np.uint16)
    ol[r[positive], c[positive]] = 1 if outline > 0 else 0
    size, stride = int(scores.tile_size), int(scores.stride)
    return BlendTables(cls, a8, ol, table, tuple(scores.classes), size, stride, int(outline))


def blend_tiles(
    image: np.ndarray,
    tables: BlendTables,
    *,
    origin: tuple[int, int] = (0, 0),
    out: np.ndarray | None = None,
    n_threads: int | None = None,
) -> np.ndarray:
    """Alpha-blend the class colours of ``tables`` over an image window at the tiling level.

    Parameters
    ----------
    image : numpy.ndarray
        RGB uint8 (h, w, 3): a window (e.g. a strip) of the slide at the tiling level.
    tables : BlendTables
        From :func:`blend_tables`.
    origin : (int, int)
        (x, y) of the window's top-left pixel in tiling-level pixels.
    out : numpy.ndarray, optional
        Where to write (C-contiguous uint8 of image's shape); may be ``image`` itself (in place).
        A new array when None.
    n_threads : int, optional
        Threads (None = all cores); the bytes are the same for any count.

    Returns
    -------
    numpy.ndarray
        ``out``: per channel ``(px * (256 - a) + colour * a + 128) >> 8`` on cells with
        ``cls >= 0`` (a = ``tables.alpha``), the class colour on outline pixels, ``px`` elsewhere.

    Notes
    -----
    Cost: one multiply-add per channel of the tinted pixels, memory-bound (about 1 ns per pixel on
    one core); rows are split over OpenMP threads with the GIL released.
    """
    image = check_image("image", image)
    x0, y0 = (int(v) for v in origin)
    threads = resolve_threads(n_threads)
    tables = _checked_tables(tables)
    if out is None:
        out = image.copy()
    elif out is not image:
        if (
            not isinstance(out, np.ndarray)
            or out.shape != image.shape
            or out.dtype != np.uint8
            or not out.flags.c_contiguous
            or not out.flags.writeable
        ):
            raise ValueError(
                f"out must be a writeable C-contiguous uint8 array of shape {image.shape}"
            )
        np.copyto(out, image)
    elif not out.flags.writeable:
        raise ValueError("image must be writeable to be blended in place")
    _blend_native(out, x0, y0, tables, threads)
    return out


def _checked_tables(t: BlendTables) -> BlendTables:
    """``t`` with the kernel's dtypes, or ValueError naming what does not fit."""
    if not isinstance(t, BlendTables):
        raise ValueError(f"tables must be a BlendTables, got {type(t).__name__}")
    cls = np.ascontiguousarray(t.cls, np.int16)
    alpha = np.ascontiguousarray(t.alpha, np.uint16)
    outline = np.ascontiguousarray(t.outline, np.uint8)
    colours = np.ascontiguousarray(t.colours, np.uint8)
    if cls.ndim != 2 or alpha.shape != cls.shape or outline.shape != cls.shape:
        raise ValueError(
            f"tables.cls, alpha and outline must share one 2-d shape, got {cls.shape}, "
            f"{alpha.shape}, {outline.shape}"
        )
    if colours.ndim != 2 or colours.shape[1] != 3:
        raise ValueError(f"tables.colours must have shape (k, 3), got {colours.shape}")
    if cls.size and (cls.max() >= len(colours) or alpha.max() > 256):
        raise ValueError("tables.cls must be < len(colours) and tables.alpha <= 256")
    if t.tile_size < 1 or t.stride < 1 or t.outline_width < 0:
        raise ValueError(
            f"tables need tile_size, stride >= 1 and outline_width >= 0, got "
            f"{t.tile_size}, {t.stride}, {t.outline_width}"
        )
    size, stride, width = int(t.tile_size), int(t.stride), int(t.outline_width)
    return BlendTables(cls, alpha, outline, colours, t.classes, size, stride, width)


def _blend_native(buf: np.ndarray, x0: int, y0: int, t: BlendTables, threads: int) -> None:
    from .. import _native

    args = (t.cls, t.alpha, t.outline, t.colours, t.tile_size, t.stride, t.outline_width)
    _native.blend_strip(buf, x0, y0, *args, threads)


# -- whole-slide overlay ---------------------------------------------------------------------------
def _load_scores(scores: Any) -> tuple[Any, str]:
    if isinstance(scores, str | os.PathLike):
        from ..predict.scoregrid import load_score_grid

        return load_score_grid(scores), str(scores)
    for name in ("classes", "grid_shape", "tile_rc", "prob", "tile_size", "stride", "level"):
        if not hasattr(scores, name):
            raise ValueError(
                f"scores must be a ScoreGrid or a path to one, got {type(scores).__name__}"
            )
    return scores, f"<scores of {scores.slide_name}>"


def overlay_geometry(slide: Any, scores: Any, *, check_name: bool = True) -> tuple[Any, int, int]:
    """Check that ``scores`` were computed on ``slide``; return (LevelChoice, width, height).

    ``width`` x ``height`` is the slide at the tiling magnification (the overlay's level 0).

    Raises
    ------
    SlideError
        Another slide's name (unless ``check_name`` is false), a level the slide lacks, a scale or
        grid that does not fit the slide's dimensions.
    """

    where = slide.path or slide.name
    if check_name and Path(str(scores.slide_name)).name != slide.name:
        raise SlideError(
            f"{where}: the scores were computed for {scores.slide_name!r}, not this slide "
            "(pass check_name=False to use them anyway)"
        )
    level, ds, scale = int(scores.level), float(scores.downsample), float(scores.scale)
    if not 0 <= level < slide.level_count:
        raise SlideError(
            f"{where}: the scores use level {level}; the slide has {slide.level_count}"
        )
    if not scale >= 1.0 or not ds > 0:
        raise SlideError(f"{where}: the scores have an invalid scale {scale} / downsample {ds}")
    lds = slide.level_downsamples[level]
    if abs(lds * scale - ds) > 0.01 * ds:
        raise SlideError(
            f"{where}: the scores' downsample {ds:g} does not match level {level} "
            f"(downsample {lds:g}) x scale {scale:g}"
        )
    lw, lh = slide.level_dimensions[level]
    width, height = (lw, lh) if scale == 1.0 else (int(lw / scale), int(lh / scale))
    t, s = int(scores.tile_size), int(scores.stride)
    rows, cols = (int(v) for v in scores.grid_shape)
    w0, h0 = slide.dimensions
    exp_cols = int((w0 / ds - t) // s) + 1 if w0 / ds >= t else 0
    exp_rows = int((h0 / ds - t) // s) + 1 if h0 / ds >= t else 0
    if (
        (rows, cols) != (exp_rows, exp_cols)
        or (cols - 1) * s + t > width + 1
        or (rows - 1) * s + t > height + 1
    ):
        raise SlideError(
            f"{where}: the scores' grid {rows} x {cols} of {t} px tiles does not fit this slide "
            f"({w0} x {h0} px; expected {exp_rows} x {exp_cols}): scores of another slide?"
        )
    return slide.choice_for_downsample(ds, level), width, height


def _strips(
    read: Any, width: int, height: int, rows: int, tables: BlendTables, threads: int, glass: Any
) -> Iterator[np.ndarray]:
    """Read (and shrink, when the tiling level is not a pyramid level) and blend, by strips;
    ``glass`` (a GlassCells or None) untints the off-tissue pixels of partial tiles."""
    for y0 in range(0, height, rows):
        strip = read(y0, min(rows, height - y0))
        if not (strip.flags.writeable and strip.flags.c_contiguous):
            strip = np.array(strip, order="C")
        saved = glass.save(strip, y0) if glass is not None else []
        _blend_native(strip, 0, y0, tables, threads)
        if saved:
            glass.restore(strip, saved)
        yield strip


def write_overlay(
    slide: Any,
    scores: Any,
    out: str | os.PathLike[str],
    *,
    alpha: float = 0.4,
    mode: str = "class",
    outline: int = 0,
    colours: Mapping[str, Any] | None = None,
    quality: int = 90,
    compression: str = "jpeg",
    thumbnail: bool = True,
    thumbnail_size: int = 2048,
    check_name: bool = True,
    strip_pixels: int | None = None,
    overwrite: bool = False,
    n_threads: int | None = None,
) -> OverlayResult:
    """Write the screening overlay of a slide: pyramidal tiled TIFF + PNG thumbnail.

    Parameters
    ----------
    slide : path or Slide
        The slide the scores were computed on (a path is opened and closed here; an open Slide
        is left open).
    scores : ScoreGrid or path
        Predictions (a :class:`~prostate_fast.predict.ScoreGrid` or its ``.npz``).
    out : path
        The TIFF to write (``.tif``). The thumbnail is ``<stem>-thumb.png`` beside it.
    alpha, mode, outline, colours
        Look of the overlay, see :func:`blend_tables`.
    quality : int
        JPEG quality 1-100 (unused by the lossless compressions).
    compression : {"jpeg", "deflate", "none"}
        Tile compression; the lossless ones make the TIFF's pixels exactly the blended ones.
    thumbnail : bool
        Also write the PNG thumbnail (longer side ``thumbnail_size``) with a legend.
    check_name : bool
        Refuse scores whose ``slide_name`` is not the slide's file name.
    strip_pixels : int, optional
        Pixels per strip (default 8 Mi); rows per strip are whole 256 px tiles, 256 to 1024.
    overwrite : bool
        Replace existing outputs; otherwise ``FileExistsError`` before anything is written.
    n_threads : int, optional
        Threads for blending and JPEG encoding (None = all cores); the bytes do not depend on it.

    Returns
    -------
    OverlayResult
        The files written, the TIFF's levels and the scores drawn.

    Raises
    ------
    ValueError
        Bad arguments (the message names the parameter).
    FileExistsError
        An output exists and ``overwrite`` is false.
    SlideError
        Unreadable slide, or scores that do not fit it (another slide's name, grid or scale).

    Notes
    -----
    One pass: a reader thread reads, shrinks (when ``scores.scale != 1``) and blends strips of the
    slide while the main thread encodes their 256 px tiles (``n_threads`` encoders) and reduces
    them for the next pyramid level (in memory up to 128 MiB, else a temporary raw file, deleted
    when done). Peak memory is a few strips (8 Mi pixels, 24 MB each) whatever the slide size;
    disk may need a quarter of level 0 uncompressed. Outputs are written to temporary names and
    renamed when complete.
    """
    import contextlib

    from ..slide import open_slide
    from ..slide.pyramid import write_pyramid
    from .sparse import tile_sources

    start = time.perf_counter()
    check_encoding(compression, quality, thumbnail_size)
    strip_pixels = _strip_pixels(strip_pixels)
    threads = resolve_threads(n_threads)
    out, thumb_path = overlay_paths(out, thumbnail)
    with contextlib.ExitStack() as stack:
        stack.enter_context(command_inputs([slide, scores]))  # never replaced by an output
        check_outputs([out, thumb_path], overwrite=overwrite)
        grid, scores_name = _load_scores(scores)
        tables = blend_tables(grid, alpha=alpha, mode=mode, outline=outline, colours=colours)
        opened = isinstance(slide, str | os.PathLike)
        sl = stack.enter_context(open_slide(slide)) if opened else slide
        choice, width, height = overlay_geometry(sl, grid, check_name=check_name)
        mpp = float(grid.mpp) if getattr(grid, "mpp", None) else choice.mpp
        desc = _description(sl, grid, scores_name, choice, mpp, alpha, mode, tables)
        encoding = {
            "compression": compression,
            "quality": quality,
            "mpp": mpp,
            "description": desc,
            "strip_pixels": strip_pixels,
            "capture_level": _capture_level(width, height, thumbnail_size) if thumbnail else None,
            "n_threads": threads,
        }
        size = (width, height)
        thumb, layout = thumbnail_size if thumbnail else None, (*size, TIFF_TILE)
        sparse, copy, levels = tile_sources(stack, sl, choice, tables, layout, encoding, thumb)
        drawn = (grid, tables, sparse)
        tmp, strips = _tiff_target(stack, sl, choice, drawn, size, out, overwrite, encoding)
        info = write_pyramid(
            tmp, strips, *size, tile=TIFF_TILE, copy_tiles=copy, **levels, **encoding
        )
        if thumb_path is not None:
            from .thumbnail import legend_thumbnail, write_png

            look = {"alpha": alpha, "mode": mode, "size": thumbnail_size}
            img = legend_thumbnail(info.captured, grid, tables, **look, title=sl.name, mpp=mpp)
            write_png(stack.enter_context(atomic_path(thumb_path, overwrite=overwrite)), img)
    n_pos = int(np.count_nonzero(np.asarray(grid.predicted) > 0))
    seconds = time.perf_counter() - start
    return OverlayResult(out, thumb_path, info.level_dimensions, mpp, n_pos, seconds, grid)


def check_encoding(
    compression: Any = "jpeg", quality: Any = 90, thumbnail_size: Any = 2048
) -> None:
    """ValueError naming the parameter unless the TIFF's and thumbnail's settings are valid."""
    if compression not in COMPRESSIONS:
        raise ValueError(f"compression must be one of {COMPRESSIONS}, got {compression!r}")
    if (
        isinstance(quality, bool)
        or not isinstance(quality, int | np.integer)
        or not 1 <= quality <= 100
    ):
        raise ValueError(f"quality must be an integer in [1, 100], got {quality!r}")
    if (
        isinstance(thumbnail_size, bool)
        or not isinstance(thumbnail_size, int)
        or thumbnail_size < 64
    ):
        raise ValueError(f"thumbnail_size must be an integer >= 64, got {thumbnail_size!r}")


def overlay_paths(out: str | os.PathLike[str], thumbnail: bool = True) -> tuple[Path, Path | None]:
    """The files :func:`write_overlay` writes: the TIFF and (when ``thumbnail``) its thumbnail."""
    out = Path(out)
    return out, out.with_name(out.stem + "-thumb.png") if thumbnail else None


def _strip_pixels(strip_pixels: int | None) -> int:
    from ..slide.pyramid import STRIP_PIXELS

    pixels = STRIP_PIXELS if strip_pixels is None else int(strip_pixels)
    if pixels <= 0:
        raise ValueError(f"strip_pixels must be positive, got {strip_pixels!r}")
    return pixels


def _capture_level(width: int, height: int, thumbnail_size: int) -> int:
    """The smallest pyramid level whose longer side is still ``thumbnail_size`` or more."""
    from ..slide.pyramid import level_dimensions
    from .sparse import capture_level

    return capture_level(level_dimensions(width, height), thumbnail_size)


def _tiff_target(
    stack: Any,
    sl: Any,
    choice: Any,
    drawn: tuple[Any, BlendTables, Any],
    size: tuple[int, int],
    out: Path,
    overwrite: bool,
    encoding: Mapping[str, Any],
) -> tuple[Path, Iterator[Any]]:
    """The TIFF's temporary name (renamed when ``stack`` ends) and the slide's blended strips;
    ``drawn``: (scores, tables, SparseLevels or None: then (strip, level-1 rows) pairs)."""
    import contextlib

    from ..slide import prefetch
    from ..slide.pyramid import strip_rows_for
    from .edges import glass_cells

    (width, height), threads = size, encoding["n_threads"]
    scores, tables, sparse = drawn
    glass = glass_cells(scores, tables)
    rows = strip_rows_for(width, TIFF_TILE, encoding["strip_pixels"])
    if sparse is None:
        read = stack.enter_context(sl.strip_reader(choice, width, n_threads=threads)).read
    else:
        read = sparse.read
    tmp = stack.enter_context(atomic_path(out, overwrite=overwrite))
    items: Iterator[Any] = _strips(read, width, height, rows, tables, threads, glass)
    items = sparse.with_halves(items) if sparse is not None and sparse.halves else items
    strips = stack.enter_context(contextlib.closing(prefetch(items)))
    return tmp, strips


def _description(
    slide: Any,
    grid: Any,
    scores_name: str,
    choice: Any,
    mpp: float | None,
    alpha: float,
    mode: str,
    tables: BlendTables,
) -> str:
    import json

    info = {
        "kind": "overlay",
        "slide": slide.name,
        "scores": scores_name,
        "model": str(getattr(grid, "model", "")),
        "mpp": mpp,
        "objective_power": choice.magnification,
        "level": choice.level,
        "downsample": choice.downsample,
        "tile_size": tables.tile_size,
        "stride": tables.stride,
        "classes": list(tables.classes),
        "colours": {n: tables.colours[i].tolist() for i, n in enumerate(tables.classes)},
        "thresholds": {k: float(v) for k, v in dict(getattr(grid, "thresholds", {})).items()},
        "alpha": float(alpha),
        "mode": mode,
    }
    return json.dumps({"prostate_fast": info})
