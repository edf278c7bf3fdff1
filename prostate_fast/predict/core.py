"""Apply a trained model to a whole slide: per-tile class probabilities over the tissue.

:func:`predict_slide` loads the model once (:func:`load_model`, see :mod:`prostate_fast.engines`
for the three engines), finds the tissue (:func:`prostate_fast.tissue.detect_tissue`), tiles it
with the model's own tile size and scale (``model.json``'s magnification or mpp;
:func:`prostate_fast.tile.build_grid`), and runs the tiles batch by batch while a background
thread reads and normalises the next batch. The result is a :class:`ScoreGrid` (its own module,
:mod:`prostate_fast.predict.scoregrid`): the tiles' grid positions (``tile_rc``), level-0 corners
(``l0_xy``) and probabilities, with everything the overlay needs (classes, colours, thresholds,
scale). Tiles off the tissue are not in it (the overlay shows them as background). A slide
already open (a :class:`~prostate_fast.slide.Slide`) is used as it is, so a caller that also
writes the overlay opens it once.

Scale: the model's scale is looked up on the slide (mpp when both record one, else the objective
magnification). A slide that records neither gets an error asking for ``--slide-mpp`` (the slide's
microns per level-0 pixel, which then overrides the file) or ``--level`` (read that pyramid level
as it is): the scale is never guessed. A ``level`` whose scale differs from the model's by more
than :data:`SCALE_TOLERANCE` (25 %: scanners' "20x" differ by up to 10 %) is refused unless
``ignore_scale``; when the slide records no scale at all, the level's scale is unverified and a
warning says so.

Domain: a model whose ``model.json`` records the stain domain of its training tissue
(:mod:`prostate_fast.model.domain`) is applied only to slides inside it. Before any tile is
scored, up to :data:`DOMAIN_SAMPLE` tissue tiles spread over the slide are measured; a slide
outside (a dark background: fluorescence or dark field; another stain; a far too faint or dark
stain) raises :class:`~prostate_fast.model.domain.OutOfDomainError` unless ``ignore_domain``.
A model written before the domain was recorded is applied without the check (a warning says so,
once per model and process).

Stain: a model whose ``model.json`` records a stain normalisation target (``"stain"``, written
when its dataset was built with ``stain_normalise``) gets every slide normalised to it, as its
training tiles were: the slide's stains are fitted once on its tissue
(:func:`prostate_fast.stain.fit_slide`) and each batch is mapped to the target by the reading
thread (:class:`~prostate_fast.stain.StainTransform`), after the off-tissue fill. A model without
one scores the tiles as read.

int8: an int8 engine (``precision="int8"``) is checked on every slide before it scores it: on the
same sample of tissue tiles as the domain check it must take every decision the same model takes
in fp32 and move no probability by more than :data:`INT8_SLIDE_MAX_DIFF`; otherwise the slide is
scored in fp32 (a warning says so, and the ScoreGrid's engine reads ``onnx``, not ``onnx-int8``).

Tiles partly off tissue: a tile is kept when the tissue mask covers at least ``min_tissue`` of
it (25 % by default), so edge tiles can be mostly glass. Such a tile is scored on its tissue:
before the model sees it, its pixels off the mask (the rule of
:meth:`ScoreGrid.tissue_window`: nearest neighbour of the low-resolution mask) are filled with
the slide's glass colour (:func:`glass_colour`: the light through its glass, read on the
off-tissue pixels of a thumbnail as the stain normalisation reads it), so pen ink, dust and
glass texture beside a biopsy do not drive its score. Tiles fully on tissue are scored exactly
as read. The ScoreGrid records every tile's tissue share and the mask, and the overlay tints
only tissue pixels.

Decision rule (:attr:`ScoreGrid.predicted`): class 0 is the negative class. A tile is assigned
the non-negative class with the highest probability among those whose probability reaches their
threshold; 0 when none does. For two classes: cancer iff ``p_cancer >= threshold``. With one
threshold for several positive classes (model.json's ``"a+b+c"``) their summed probability is
compared with it (:func:`~.scoregrid.decide`).
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
import warnings
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from .._util import resolve_threads
from ..errors import ModelError
from ..model import ModelInfo
from ..model.domain import sample_indices
from ..slide.core import Slide
from .engines import Engine, Predictor, load_model
from .engines.base import chunks, lane_parts
from .scoregrid import ScoreGrid, decide, merge_thresholds, tissue_pixels

#: ``progress(done, total, tiles_per_s)``: called after each batch of tiles.
Progress = Callable[[int, int, float], None]

__all__ = ["Progress", "glass_colour", "predict_slide", "validate_scale"]


#: Largest relative difference between an explicit ``level``'s scale and the model's.
SCALE_TOLERANCE = 0.25
#: Tissue tiles measured for the domain check (and for int8 against fp32).
DOMAIN_SAMPLE = 64
#: Largest probability change from fp32 that an int8 engine may make on a slide's sampled tiles.
INT8_SLIDE_MAX_DIFF = 0.1
_UNKNOWN_DOMAIN_SAID: set[str] = set()


# -- slide scale ----------------------------------------------------------------------------------
def _scale_request(info: ModelInfo, slide: Slide, level: int | None) -> dict[str, Any]:
    """Keyword for ``Slide.choose_level`` / ``build_grid`` that puts the slide at the model's scale."""
    if level is not None:
        return {"level": level}
    if info.mpp is not None and slide.mpp is not None:
        return {"mpp": info.mpp}
    if info.magnification is not None:
        return {"magnification": info.magnification}
    if info.mpp is not None:
        return {"mpp": info.mpp}  # the slide has no mpp: choose_level asks for --slide-mpp/--level
    raise ModelError(
        f"{info.model_dir / 'model.json'}: records neither magnification nor mpp; pass --level"
    )


def _check_level_scale(info: ModelInfo, slide: Slide, choice: Any, ignore: bool) -> None:
    """Refuse an explicit level (``choice``, a LevelChoice) whose scale is not the model's (warn
    when it cannot be known)."""
    if info.mpp is not None and choice.mpp is not None:
        got, want, unit = choice.mpp, info.mpp, "µm/px"
    elif info.magnification is not None and choice.magnification is not None:
        got, want, unit = choice.magnification, info.magnification, "x"
    else:
        warnings.warn(
            f"{slide.path or slide.name}: the slide records no scale; level {choice.level} is "
            "read as it is and its scale is unverified",
            stacklevel=3,
        )
        return
    if abs(got / want - 1.0) > SCALE_TOLERANCE and not ignore:
        raise ModelError(
            f"{slide.path or slide.name}: level {choice.level} is {got:.4g} {unit} but the model "
            f"was trained at {want:.4g} {unit} (tolerance {SCALE_TOLERANCE:.0%}); drop --level "
            "to read the model's scale, or pass --ignore-scale"
        )


def _check_domain(
    info: ModelInfo, slide: Slide, n_tiles: int, tissue: Any, sample: Any, ignore: bool
) -> None:
    """OutOfDomainError when a sample of the slide's tissue tiles (``sample()``: up to
    :data:`DOMAIN_SAMPLE` of its ``n_tiles``, as read) lies outside the model's domain."""
    from ..model.domain import OutOfDomainError, domain_problem

    if ignore or n_tiles == 0:
        return
    if info.domain is None:
        key = str(info.model_dir)
        if key not in _UNKNOWN_DOMAIN_SAID:
            _UNKNOWN_DOMAIN_SAID.add(key)
            warnings.warn(
                f"{info.model_dir / 'model.json'}: records no training domain (written before "
                "prostate-fast recorded it); slides are not checked against it",
                stacklevel=3,
            )
        return
    dark = getattr(tissue, "background", "bright") == "dark"
    reason = domain_problem(info.domain, sample(), dark_background=dark)
    if reason is not None:
        raise OutOfDomainError(
            f"{slide.path or slide.name}: outside the model's training domain: {reason}; "
            "pass --ignore-domain to score it anyway",
            reason,
        )


def validate_scale(mpp: Any, level: Any) -> None:
    """ValueError unless ``mpp`` is None or positive and ``level`` None or an integer."""
    if mpp is not None and (
        isinstance(mpp, bool) or not isinstance(mpp, int | float | np.number) or not mpp > 0
    ):
        raise ValueError(f"mpp must be a positive number, got {mpp!r}")
    if level is not None and (isinstance(level, bool) or not isinstance(level, int | np.integer)):
        raise ValueError(f"level must be an integer, got {level!r}")


def _stain_normaliser(info: ModelInfo, slide: Slide, tissue: Any, n_tiles: int) -> Any:
    """The slide's stain normalisation to the model's target (fitted once, on the slide's tissue);
    None when the model records none, the slide has no tile, its stains cannot be fitted, or
    the map gives back every pixel (a slide under the target's glass light)."""
    if info.stain is None or n_tiles == 0:
        return None
    from .. import stain

    fit = stain.fit_slide(slide, tissue)
    norm = None if fit is None else stain.stain_transform(fit, info.stain)
    return None if norm is None or norm.is_identity else norm


# -- tiles partly off tissue ----------------------------------------------------------------------
def glass_colour(slide: Slide, tissue: Any) -> np.ndarray:
    """(3,) uint8 colour of the slide's glass, read on the pixels of a 512 px thumbnail that
    ``tissue`` (a TissueMask of the slide) calls background.

    Bright field: the light through the glass as the stain normalisation reads it
    (:func:`prostate_fast.stain.glass_light`: the median of the glass-coloured pixels, so a
    scanner's pure white fill of unscanned area, ink and dust are left out), rounded; the
    reference light :data:`~prostate_fast.stain.IO` when too little glass is seen. A dark
    background (``tissue.background == "dark"``): the median of the background pixels. White
    when the thumbnail is empty or all tissue (dark background).
    """
    from ..stain import glass_light

    thumb = np.asarray(slide.get_thumbnail((512, 512)))[..., :3]
    w0, h0 = slide.dimensions
    th, tw = thumb.shape[:2]
    if th == 0 or tw == 0:
        return np.full(3, 255, np.uint8)
    ds = max(w0 / tw, h0 / th)
    off = ~tissue_pixels(
        np.asarray(tissue.mask, bool), float(tissue.downsample), ds, (0, 0, tw, th)
    )
    if getattr(tissue, "background", "bright") != "dark":
        light = glass_light(thumb, off.size, where=off)
        return np.clip(np.round(light), 0, 255).astype(np.uint8)
    if not off.any():
        return np.full(3, 255, np.uint8)
    return np.median(thumb[off], axis=0).round().astype(np.uint8)


def _fill_off_tissue(
    tiles: np.ndarray, grid: Any, idx: np.ndarray, tissue: Any, fill: np.ndarray
) -> np.ndarray:
    """``tiles`` (of grid positions ``idx``) with the off-tissue pixels of partial tiles = fill
    (the rule of :func:`~.scoregrid.tissue_pixels`, in a native kernel)."""
    from .. import _tissue_cy

    part = np.flatnonzero(grid.tissue_fraction[idx] < 1.0)
    mask = np.asarray(tissue.mask, bool)
    if len(part) == 0:
        return tiles
    if mask.size == 0:
        tiles[part] = fill
        return tiles
    origin = grid.tile_rc[idx[part]][:, ::-1].astype(np.int64) * grid.stride
    sub = np.ascontiguousarray(tiles[part]) if len(part) < len(tiles) else tiles
    scale = float(grid.downsample) / float(tissue.downsample)
    u8 = np.ascontiguousarray(mask).view(np.uint8)
    _tissue_cy.fill_off_tissue(sub, origin, u8, scale, np.ascontiguousarray(fill, np.uint8))
    if sub is not tiles:
        tiles[part] = sub
    return tiles


# -- int8, slide by slide -------------------------------------------------------------------------
def _int8_or_fp32(
    predictor: Predictor, slide: Slide, sample: Any, thresholds: Mapping[str, float]
) -> Predictor:
    """The engine that scores this slide: an int8 one when, on the domain check's sample of
    tissue tiles (``sample()``: up to :data:`DOMAIN_SAMPLE`, spread over the slide, as the model
    sees them), it takes every decision its fp32 twin takes and moves no probability by more
    than :data:`INT8_SLIDE_MAX_DIFF`; else its fp32 twin (a warning names the slide and the
    numbers). int8's activation ranges come from the model's validation tiles: tissue unlike
    them (another lab, scanner or organ) can push activations past those ranges, where int8
    saturates."""
    twin = getattr(predictor, "fp32_twin", None)
    if predictor.precision != "int8" or twin is None:
        return predictor
    x = predictor.prepare(sample())
    if len(x) == 0:
        return predictor
    fp32 = twin()
    p8, p32 = predictor.run(x), fp32.run(x)
    t = np.array([thresholds[c] for c in predictor.info.classes[1:]], np.float64)
    changed = int(np.count_nonzero(decide(p8, t) != decide(p32, t)))
    diff = float(np.abs(p8 - p32).max())
    if changed == 0 and diff <= INT8_SLIDE_MAX_DIFF:
        return predictor
    warnings.warn(
        f"{slide.path or slide.name}: int8 differs from fp32 on this slide ({changed} of "
        f"{len(x)} sampled tiles change decision, largest probability change {diff:.2f}); "
        "scored in fp32",
        stacklevel=3,
    )
    return fp32


# -- the stage ------------------------------------------------------------------------------------
def predict_slide(
    model: str | os.PathLike[str] | Predictor,
    slide: str | os.PathLike[str] | Slide,
    *,
    engine: Engine | str = "gluon",
    ctx: Any = "cpu",
    batch_size: int = 64,
    n_threads: int | None = None,
    precision: str = "fp32",
    mpp: float | None = None,
    level: int | None = None,
    thresholds: Mapping[str, float] | None = None,
    tissue: Any = None,
    min_tissue: float | None = None,
    progress: Progress | None = None,
    ignore_domain: bool = False,
    ignore_scale: bool = False,
) -> ScoreGrid:
    """Class probabilities of every tissue tile of a slide.

    Parameters
    ----------
    model : path or Predictor
        A model folder (loaded with :func:`load_model` using ``engine``, ``ctx``, ``batch_size``
        and ``n_threads``), or a :class:`Predictor` already loaded (to reuse over many slides;
        those four arguments are then ignored).
    slide : path or Slide
        The slide (opened and closed here when a path is given; an open Slide is left open).
    engine : {"gluon", "native", "onnx"}
        See :func:`load_model`.
    ctx : str
        ``"cpu"`` or ``"gpu(N)"``.
    batch_size : int
        Tiles per engine call (default 64).
    n_threads : int, optional
        Threads for the engine and the tissue kernels (None = every core).
    precision : {"fp32", "fp16", "int8"}
        See :func:`load_model` (fp16, int8: onnx engine; the ScoreGrid's engine reads ``onnx-fp16``, ``onnx-int8``).
    mpp : float, optional
        Microns per level-0 pixel of the slide: overrides the file's value (required when the
        file records neither mpp nor objective power, unless ``level`` is given).
    level : int, optional
        Read this pyramid level as it is instead of matching the model's scale.
    thresholds : mapping, optional
        Per non-negative class probability thresholds, overriding ``model.json``'s
        (``{"cancer": 0.3}``).
    tissue : TissueMask, optional
        Tissue mask of the slide (default: :func:`prostate_fast.tissue.detect_tissue`).
    min_tissue : float, optional
        Smallest tissue share of a kept tile (default: ``build_grid``'s).
    progress : callable, optional
        Called as ``progress(done, total, tiles_per_s)`` after each batch of tiles.
    ignore_domain : bool
        Score a slide outside the model's training domain anyway (see the module notes).
    ignore_scale : bool
        Read ``level`` even when its scale differs from the model's by more than
        :data:`SCALE_TOLERANCE`.

    Returns
    -------
    ScoreGrid
        Tissue tiles only, in row-major order, with each tile's tissue share and the tissue mask.
        Tiles partly off tissue are scored on their tissue (see the module notes).

    Raises
    ------
    ValueError
        Bad arguments (engine, batch_size, thresholds, mpp, level, a scale finer than level 0).
    ModelError
        A bad model folder (see :func:`load_model`), or ``level`` at another scale than the
        model's (unless ``ignore_scale``).
    SlideError
        Unreadable slide, or a slide that records no scale while the model needs one: the
        message asks for ``--slide-mpp`` or ``--level``.
    OutOfDomainError
        The slide lies outside the model's training domain (unless ``ignore_domain``).

    Notes
    -----
    A background thread reads and normalises batch k + 1 (``read_tiles`` on the cores the engine
    leaves, :func:`reader_threads`) while batch k runs in the engine; the native and ONNX engines
    release the GIL, and Gluon's calls go through ctypes, which does too, so reading and
    inference overlap. Cost is dominated by inference:
    about 300-600 tiles/s for the study network at 128 px on 2 CPU cores (see
    ``bench/bench_predict.py``); a 20x biopsy slide of 20,000 tissue tiles takes about a minute,
    where the 2018 study took 21.
    """
    t_start = time.perf_counter()
    validate_scale(mpp, level)
    own_model = not isinstance(model, Predictor)
    predictor = (
        load_model(
            model,
            engine=engine,
            ctx=ctx,
            batch_size=batch_size,
            n_threads=n_threads,
            precision=precision,
        )
        if own_model
        else model
    )
    assert isinstance(predictor, Predictor)
    from ..slide import open_slide  # after load_model: MXNet's threads are set before any
    from ..tile import build_grid, read_tiles  # OpenMP code of ours runs

    info = predictor.info
    with contextlib.ExitStack() as stack:
        if own_model:
            stack.callback(predictor.close)
        thr = merge_thresholds(info.thresholds, info.classes, thresholds)
        if isinstance(slide, Slide):
            sl = slide
        else:
            sl = stack.enter_context(open_slide(slide, n_threads=n_threads))
        view: Slide = sl.with_mpp(float(mpp)) if mpp is not None else sl
        request = _scale_request(info, view, None if level is None else int(level))
        choice = view.choose_level(**request)  # fails fast (no scale) before the tissue pass
        if level is not None:
            _check_level_scale(info, view, choice, ignore_scale)
        t0 = time.perf_counter()
        if tissue is None:
            from ..tissue import detect_tissue

            tissue = detect_tissue(view, n_threads=n_threads)
        t1 = time.perf_counter()
        kw: dict[str, Any] = {} if min_tissue is None else {"min_tissue": min_tissue}
        grid = build_grid(view, tissue, **request, tile_size=info.tile_size, **kw)
        # one sample of tissue tiles, read once, for the domain check and for int8 against fp32
        sample_idx = np.asarray(sample_indices(len(grid), DOMAIN_SAMPLE), np.int64)
        sampled = functools.cache(lambda: read_tiles(view, grid, sample_idx))
        _check_domain(info, view, len(grid), tissue, sampled, ignore_domain)
        fill = glass_colour(view, tissue) if len(grid) else np.full(3, 255, np.uint8)
        norm = _stain_normaliser(info, view, tissue, len(grid))

        def on_tissue(tiles: np.ndarray, g: Any, idx: np.ndarray) -> np.ndarray:
            tiles = _fill_off_tissue(tiles, g, idx, tissue, fill)
            return tiles if norm is None else norm(tiles)

        def read_on_tissue(slide: Slide, g: Any, idx: np.ndarray, threads: int) -> np.ndarray:
            return on_tissue(read_tiles(slide, g, idx, n_threads=threads), g, idx)

        def sample_on_tissue() -> np.ndarray:
            return on_tissue(sampled().copy(), grid, sample_idx)

        scorer = _int8_or_fp32(predictor, view, sample_on_tissue, thr)
        t2 = time.perf_counter()
        prob = _run_grid(scorer, view, grid, read_on_tissue, progress)
        t3 = time.perf_counter()
    choice = grid.choice
    return ScoreGrid(
        slide_path=str(sl.path) if sl.path is not None else "",
        slide_name=sl.name,
        classes=info.classes,
        colours=dict(info.colours),
        tile_size=grid.tile_size,
        stride=grid.stride,
        level=choice.level,
        downsample=float(choice.downsample),
        scale=float(choice.scale),
        mpp=None if choice.mpp is None else float(choice.mpp),
        grid_shape=(int(grid.grid_shape[0]), int(grid.grid_shape[1])),
        tile_rc=np.ascontiguousarray(grid.tile_rc, np.int32),
        l0_xy=np.ascontiguousarray(grid.l0_xy, np.int64),
        prob=prob,
        thresholds=thr,
        model=str(info.model_dir),
        engine=scorer.engine
        if scorer.precision == "fp32"
        else f"{scorer.engine}-{scorer.precision}",
        timings={
            "tissue": t1 - t0,
            "grid": t2 - t1,
            "inference": t3 - t2,
            "total": time.perf_counter() - t_start,
            "tiles_per_s": len(grid) / (t3 - t2) if len(grid) and t3 > t2 else 0.0,
        },
        tissue_fraction=np.ascontiguousarray(grid.tissue_fraction, np.float32),
        tissue_mask=np.ascontiguousarray(tissue.mask, np.bool_),
        tissue_downsample=float(tissue.downsample),
    )


def _run_grid(
    predictor: Predictor, slide: Slide, grid: Any, read_tiles: Any, progress: Progress | None
) -> np.ndarray:
    """Probabilities of every tile of ``grid``; reading of batch k + 1 overlaps batch k.

    An engine with several lanes (:attr:`Predictor.lanes`) gets each batch shared out over its
    lanes, each part run on a worker thread of its own; the parts of batch k + 1 are queued
    behind those of batch k, so a lane that finishes (or that the reader did not preempt) goes
    on at once instead of waiting for the batch's slowest part.
    """
    n = len(grid)
    prob = np.empty((n, predictor.info.n_classes), np.float32)
    if n == 0:
        return prob
    bounds = chunks(n, predictor.batch_size)
    threads = reader_threads(predictor)
    lanes = max(1, int(predictor.lanes))

    def load(b: tuple[int, int]) -> np.ndarray:
        return predictor.prepare(read_tiles(slide, grid, np.arange(b[0], b[1]), threads))

    ends = {e for _, e in bounds}
    t0 = time.perf_counter()
    running: deque[tuple[int, Future[np.ndarray]]] = deque()
    with contextlib.ExitStack() as stack:
        reader = stack.enter_context(ThreadPoolExecutor(1, thread_name_prefix="pf-read"))
        engine = stack.enter_context(ThreadPoolExecutor(lanes, thread_name_prefix="pf-engine"))
        pending: Future[np.ndarray] = reader.submit(load, bounds[0])
        try:
            for k, (s, e) in enumerate(bounds):
                x = pending.result()
                if k + 1 < len(bounds):
                    pending = reader.submit(load, bounds[k + 1])
                for ps, pe in lane_parts(e - s, lanes):
                    running.append((s + ps, engine.submit(predictor.run_lane, x[ps:pe])))
                # batch k's parts wait their turn; everything before it is collected
                while running and running[0][0] < s:
                    _collect(running, prob, ends, t0, progress)
            while running:
                _collect(running, prob, ends, t0, progress)
        finally:
            pending.cancel()
            for _, f in running:
                f.cancel()
    return prob


def _collect(
    running: deque[tuple[int, Future[np.ndarray]]],
    prob: np.ndarray,
    ends: set[int],
    t0: float,
    progress: Progress | None,
) -> None:
    """Store the oldest running part's probabilities (its errors raised here); ``progress``
    after the last part of a batch (``ends``: the batches' ends)."""
    s, f = running.popleft()
    out = f.result()
    done = s + len(out)
    prob[s:done] = out
    if progress is not None and done in ends:
        progress(done, len(prob), done / max(time.perf_counter() - t0, 1e-9))


def reader_threads(predictor: Predictor) -> int:
    """Threads that read (and decode) the next batch while the engine runs: the CPU cores the
    engine leaves (at least one: on a CPU engine with every core, reading takes its turns beside
    it), every core for an engine on a GPU."""
    cores = resolve_threads(None)
    if predictor.device[0] != "cpu":
        return cores
    return max(1, cores - int(predictor.n_threads or cores))
