"""Writing a synthetic slide to disk: the slide, its painted copy, the annotations and the truth.

:func:`make_synthetic` runs four named steps: check the options (:func:`_check_options`), draw the
geometry (:func:`~.geometry.synthetic_params`), name the outputs and refuse existing ones
(:func:`_output_files`), then write every file under a temporary name (:func:`_write_outputs`),
renamed only when all are complete.

The two TIFFs are written by the package's streaming pyramid writer
(:func:`prostate_fast.slide.pyramid.write_pyramid`), levels reduced by 4 until the longer side is
at most 1024 pixels. Level 0 is cut into windows of one tile row by about 4096 columns
(:func:`_chunk_jobs`) rendered on a thread pool; :func:`prostate_fast.slide.strips.prefetch`
submits them from its own thread, a bounded number ahead, so that rendering runs ahead of
encoding, and :func:`_level0_strips` joins each tile row into the full-width strip the writer
takes. The slide is written first, then the painted copy from a second rendering pass (rendering
is a pure function of the position and the seed, so both passes see the same pixels); a slide
without cancer has a painted copy identical to it, and the file is copied instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import cv2
import numpy as np

from .._util import atomic_path, check_outputs, check_parent, naming_disk_errors, resolve_threads
from .geometry import SyntheticParams, _check_float, _check_int, synthetic_params
from .labs import LabProfile
from .render import _render
from .truth import _geojson, _info, _mask_png, _meta, _paint

__all__ = ["SyntheticSlide", "make_synthetic"]

_CHUNK = 4096  # columns rendered at once
#: Shape of the synthetic pyramid (arguments of ``write_pyramid``): levels reduced by 4 until the
#: longer side is at most 1024 pixels (or the shorter one below 64).
_PYRAMID = {"top": 1024, "factor": 4, "min_side": 64}
_SUFFIXES = {
    "slide": ".tif",
    "painted": "-painted.tif",
    "geojson": ".geojson",
    "mask": "-mask.png",
    "meta": ".json",
}


@dataclass(frozen=True, eq=False)
class SyntheticSlide:
    """The files written by :func:`make_synthetic` and the truth they encode."""

    slide: Path
    painted: Path
    geojson: Path
    mask: Path
    meta: Path
    width: int
    height: int
    mpp: float
    objective_power: float
    mask_downsample: int
    seed: int
    cancer_polygons: tuple[np.ndarray, ...] = field(repr=False)  # (n, 2) float, level-0 x, y
    core_polygons: tuple[np.ndarray, ...] = field(repr=False)

    def truth_mask(self) -> np.ndarray:
        """Load the truth mask: uint8 (ceil(height / d), ceil(width / d)), codes as :data:`CODES`."""
        mask = cv2.imread(str(self.mask), cv2.IMREAD_UNCHANGED)
        if mask is None:
            raise FileNotFoundError(f"{self.mask}: cannot read the truth mask")
        return mask


def make_synthetic(
    out_dir: str | os.PathLike[str],
    *,
    name: str = "synthetic",
    width: int = 8192,
    height: int = 4096,
    seed: int = 0,
    mpp: float = 0.5,
    objective_power: float = 20.0,
    n_cores: int | None = None,
    n_cancer: int | None = None,
    pen_marks: bool = False,
    lab: str | int | LabProfile | None = None,
    jpeg_quality: int | None = None,
    tile: int = 256,
    mask_downsample: int | None = None,
    overwrite: bool = False,
    n_threads: int | None = None,
) -> SyntheticSlide:
    """Write a synthetic slide, its painted copy, the annotations and the truth into ``out_dir``.

    Parameters
    ----------
    out_dir : path
        Output folder (created if missing).
    name : str
        Base name of the files: ``{name}.tif``, ``{name}-painted.tif``, ``{name}.geojson``,
        ``{name}-mask.png``, ``{name}.json``.
    width, height : int
        Level-0 size in pixels, 1024 to 1,000,000 each.
    seed : int
        Same arguments and seed give byte-identical files.
    mpp : float
        Microns per level-0 pixel, written as TIFF resolution (centimetre unit) on every level.
    objective_power : float
        Recorded in the JSON ImageDescription of level 0 (OpenSlide's generic-tiff reports none).
    n_cores, n_cancer, pen_marks
        See :func:`synthetic_params`.
    lab : str, int or LabProfile, optional
        The lab whose look the slide has (:func:`~.labs.lab_profile`: a name or a seed; default:
        the standard look, byte for byte the slides made before labs existed). A lab other than
        the default is recorded (``"lab"``) in the TIFF description and the ``.json`` side-car.
    jpeg_quality : int, optional
        JPEG quality of the tiles (1-100), the same for the slide and the painted copy (default:
        the lab's, 90 in the default lab).
    tile : int
        Tile edge in pixels, a multiple of 16 in [64, 1024].
    mask_downsample : int, optional
        Level-0 pixels per truth-mask pixel (default 8, doubled until the mask's longer side is at most
        4096 pixels).
    overwrite : bool
        Replace existing files; otherwise ``FileExistsError`` is raised before anything is written.
    n_threads : int, optional
        Rendering and encoding threads (None = every core); the files are identical for any count.

    Returns
    -------
    SyntheticSlide
        Paths and truth (polygons in level-0 pixels).

    Raises
    ------
    ValueError
        If an argument is out of range (the message names it).
    FileExistsError
        If an output file exists and ``overwrite`` is false.

    Notes
    -----
    The TIFFs are pyramidal (levels downsampled by 4 until the longer side is at most 1024 pixels),
    tiled, JPEG (YCbCr 4:2:0, as Aperio scanners write) and open in OpenSlide as ``generic-tiff``.
    Level 0 is rendered in tile rows by ``n_threads`` threads while the package's pyramid writer
    encodes the rows before; the painted copy is rendered again. Peak memory does not grow with the
    height: about two full-width tile rows plus the rendering buffers (max RSS about 300 MB at
    46000 x 23000). Cost is about 20-30 ns of CPU per level-0 pixel and TIFF for a typical slide
    (10-20 % tissue). Nothing is left in ``out_dir`` on failure.
    """
    pen_marks = bool(pen_marks)
    P = synthetic_params(
        width,
        height,
        seed,
        mpp=mpp,
        n_cores=n_cores,
        n_cancer=n_cancer,
        pen_marks=pen_marks,
        lab=lab,
    )
    if jpeg_quality is None:
        jpeg_quality = P.lab.jpeg_quality
    objective_power, jpeg_quality, tile = _check_options(name, objective_power, jpeg_quality, tile)
    d = _default_mask_downsample(P.width, P.height) if mask_downsample is None else mask_downsample
    d = _check_int("mask_downsample", d, 1, 4096)
    files = _output_files(Path(out_dir), name, overwrite)
    info = _info(P, objective_power)
    opts = {
        "tile": tile,
        "jpeg_quality": jpeg_quality,
        "n_threads": resolve_threads(n_threads),
        "description": json.dumps({"prostate_fast": info}),
    }
    _write_outputs(P, files, opts, overwrite, _meta(P, info, d, pen_marks, files), d)
    fields = {k: info[k] for k in ("width", "height", "mpp", "objective_power", "seed")}
    polys = {
        k: tuple(p.astype(np.float64) for p in getattr(P, k))
        for k in ("cancer_polygons", "core_polygons")
    }
    return SyntheticSlide(**files, **fields, mask_downsample=d, **polys)


def _check_options(
    name: object, objective_power: object, jpeg_quality: object, tile: object
) -> tuple[float, int, int]:
    """The file options of :func:`make_synthetic`, checked (``ValueError`` names the bad one)."""
    if not isinstance(name, str) or not name or "/" in name or "\\" in name or name.startswith("."):
        raise ValueError(f"name must be a plain file name stem, got {name!r}")
    objective_power = _check_float("objective_power", objective_power, 0.0, 1000.0)
    jpeg_quality = _check_int("jpeg_quality", jpeg_quality, 1, 100)
    tile = _check_int("tile", tile, 64, 1024)
    if tile % 16:
        raise ValueError(f"tile must be a multiple of 16, got {tile}")
    return objective_power, jpeg_quality, tile


def _default_mask_downsample(w: int, h: int) -> int:
    d = 8
    while max(w, h) / d > 4096:
        d *= 2
    return d


def _output_files(out: Path, name: str, overwrite: bool) -> dict[str, Path]:
    """The five output paths; ``FileExistsError`` for one that exists (unless ``overwrite``) or
    that may not be replaced (see :mod:`prostate_fast._outputs`)."""
    files = {k: out / f"{name}{suf}" for k, suf in _SUFFIXES.items()}
    check_outputs(list(files.values()), overwrite=overwrite)  # ours only, never an input
    return files


def _write_outputs(
    P: SyntheticParams, files: dict[str, Path], opts: dict, overwrite: bool, meta: dict, d: int
) -> None:
    """Write every file under a temporary name, rename them all at the end; clean up on failure.

    The output folder is created if missing, and removed again on failure (when still empty).
    """
    out = files["slide"].parent
    check_parent(out)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    png = _mask_png(P, d)
    try:
        with contextlib.ExitStack() as stack:
            tmp = {
                k: stack.enter_context(atomic_path(f, overwrite=overwrite))
                for k, f in files.items()
            }
            _write_slides(P, tmp["slide"], tmp["painted"], opts)
            with naming_disk_errors(files["mask"]):
                tmp["mask"].write_bytes(png)
            with naming_disk_errors(files["geojson"]):
                tmp["geojson"].write_text(json.dumps(_geojson(P), indent=1) + "\n")
            tmp["meta"].write_text(json.dumps(meta, indent=1) + "\n")
    except BaseException:
        if created:
            with contextlib.suppress(OSError):
                out.rmdir()  # only when empty: the folder this call made
        raise


def _write_slides(P: SyntheticParams, slide: Path, painted: Path, opts: dict) -> None:
    """Write the slide, then its painted copy (a copy of the slide file when there is no cancer).

    Chunks are rendered on a pool of ``n_threads`` threads; :func:`prefetch` submits them from its
    own thread, at most ``2 * n_threads`` ahead of the one the writer waits for.
    """
    from ..slide.strips import prefetch

    n, tile = opts["n_threads"], opts["tile"]
    with ThreadPoolExecutor(n) as pool:
        for path, paint in ((slide, False), (painted, True)):
            if paint and not P.cancer_polygons:
                with naming_disk_errors(path):
                    shutil.copyfile(slide, path)
                continue
            render = partial(_render_chunk, P, paint)
            futures = (pool.submit(render, *job) for job in _chunk_jobs(P, tile))
            with contextlib.closing(prefetch(futures, depth=2 * n)) as chunks:
                _write_pyramid(path, _level0_strips(P, tile, chunks), P, opts)


def _write_pyramid(
    path: Path, strips: Iterator[np.ndarray], P: SyntheticParams, opts: dict
) -> None:
    """Write a pyramidal JPEG TIFF from level-0 strips (the package's writer; errors name ``path``)."""
    from ..slide.pyramid import write_pyramid

    with naming_disk_errors(path):  # name the TIFF whose disk write failed
        write_pyramid(
            path,
            strips,
            P.width,
            P.height,
            tile=opts["tile"],
            compression="jpeg",
            quality=opts["jpeg_quality"],
            mpp=P.mpp,
            description=opts["description"],
            n_threads=opts["n_threads"],
            **_PYRAMID,
        )


def _chunk_jobs(P: SyntheticParams, tile: int) -> Iterator[tuple[int, int, int, int]]:
    """Level-0 windows (x, y, w, h): tile rows, each in chunks of about 4096 columns."""
    chunk = max(tile, _CHUNK // tile * tile)
    for y in range(0, P.height, tile):
        for x in range(0, P.width, chunk):
            yield x, y, min(chunk, P.width - x), min(tile, P.height - y)


def _level0_strips(
    P: SyntheticParams, tile: int, chunks: Iterator[Future[np.ndarray]]
) -> Iterator[np.ndarray]:
    """Level 0 in strips of ``tile`` rows, top to bottom, from the chunks of :func:`_chunk_jobs`."""
    chunk = max(tile, _CHUNK // tile * tile)
    cols = range(0, P.width, chunk)
    for y in range(0, P.height, tile):
        if len(cols) == 1:
            yield next(chunks).result()
            continue
        strip = np.empty((min(tile, P.height - y), P.width, 3), np.uint8)
        for x in cols:
            part = next(chunks).result()
            strip[:, x : x + part.shape[1]] = part
        yield strip


def _render_chunk(P: SyntheticParams, paint: bool, x0: int, y0: int, w: int, h: int) -> np.ndarray:
    """A level-0 window of the slide, or of its painted copy."""
    rgb, _ = _render(P, x0, y0, w, h)
    return _paint(P, rgb, x0, y0) if paint else rgb
