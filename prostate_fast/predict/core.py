"""Apply a trained model to a whole slide: per-tile class probabilities over the tissue.

:func:`predict_slide` loads the model once (:func:`load_model`, see :mod:`prostate_fast.engines`
for the three engines), finds the tissue (:func:`prostate_fast.tissue.detect_tissue`), tiles it
with the model's own tile size and scale (``model.json``'s magnification or mpp;
:func:`prostate_fast.tile.build_grid`), and runs the tiles batch by batch while a background
thread reads and normalises the next batch. The result is a :class:`ScoreGrid`: the tiles'
grid positions (``tile_rc``), level-0 corners (``l0_xy``) and probabilities, with everything the
overlay needs (classes, colours, thresholds, scale). Tiles off the tissue are not in it (the
overlay shows them as background).

Scale: the model's scale is looked up on the slide (mpp when both record one, else the objective
magnification). A slide that records neither gets an error asking for ``--mpp`` (the slide's
microns per level-0 pixel, which then overrides the file) or ``--level`` (read that pyramid level
as it is): the scale is never guessed.

Decision rule (:attr:`ScoreGrid.predicted`): class 0 is the negative class. A tile is assigned
the non-negative class with the highest probability among those whose probability reaches their
threshold; 0 when none does. For two classes: cancer iff ``p_cancer >= threshold``.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import sys
import time
import zipfile
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._util import atomic_path, write_npz
from ..errors import ModelError, ProstateFastError
from ..slide.core import Slide
from .engines import (
    ENGINES,
    Engine,
    ModelInfo,
    Predictor,
    export_onnx,
    load_model,
    read_model_info,
)

__all__ = [
    "ENGINES",
    "ModelInfo",
    "Predictor",
    "ScoreGrid",
    "export_onnx",
    "load_model",
    "load_score_grid",
    "predict_slide",
    "read_model_info",
]

SCORE_FORMAT = "prostate-fast score grid"
SCORE_VERSION = 1


# -- the artefact ---------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class ScoreGrid:
    """Per-tile class probabilities of one slide (tissue tiles only).

    Attributes
    ----------
    slide_path : str
        Path of the slide file ("" for an in-memory slide).
    slide_name : str
        File name of the slide.
    classes : tuple of str
        Class names; index 0 is the negative class.
    colours : dict
        Class name to (R, G, B) overlay colour (the model's).
    tile_size : int
        Tile side in pixels at the model's scale.
    stride : int
        Pixels (at that scale) between tile origins.
    level : int
        Pyramid level the tiles were read from.
    downsample : float
        Level-0 pixels per tile pixel.
    scale : float
        Level pixels per tile pixel (1.0: the level as it is).
    mpp : float or None
        Microns per tile pixel, when known.
    grid_shape : (int, int)
        (rows, cols) of the full tile grid over the slide.
    tile_rc : numpy.ndarray
        (n, 2) int32 (row, column) of each predicted tile (``tile.py``'s frame).
    l0_xy : numpy.ndarray
        (n, 2) int64 level-0 (x, y) of each tile's top-left corner.
    prob : numpy.ndarray
        (n, n_classes) float32 class probabilities (rows sum to 1).
    thresholds : dict
        Probability threshold of each non-negative class (model.json's, or the user's).
    model : str
        Model folder.
    engine : str
        Engine that computed ``prob``.
    timings : dict
        Seconds spent per step (``tissue``, ``grid``, ``inference``, ``total``) and the
        ``tiles_per_s`` of the tiling + inference loop; informative only.
    """

    slide_path: str
    slide_name: str
    classes: tuple[str, ...]
    colours: dict[str, tuple[int, int, int]]
    tile_size: int
    stride: int
    level: int
    downsample: float
    scale: float
    mpp: float | None
    grid_shape: tuple[int, int]
    tile_rc: np.ndarray
    l0_xy: np.ndarray
    prob: np.ndarray
    thresholds: dict[str, float]
    model: str
    engine: str
    timings: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.tile_rc)
        k = len(self.classes)
        if k < 2:
            raise ValueError(f"classes must name at least 2 classes, got {self.classes!r}")
        for name, arr, shape, dtype in (
            ("tile_rc", self.tile_rc, (n, 2), np.int32),
            ("l0_xy", self.l0_xy, (n, 2), np.int64),
            ("prob", self.prob, (n, k), np.float32),
        ):
            if not isinstance(arr, np.ndarray) or arr.shape != shape or arr.dtype != dtype:
                got = (getattr(arr, "shape", None), getattr(arr, "dtype", None))
                raise ValueError(f"{name} must be {np.dtype(dtype)} of shape {shape}, got {got}")
        missing = [c for c in self.classes[1:] if c not in self.thresholds]
        if missing:
            raise ValueError(f"thresholds lacks the classes {missing}")

    # -- derived ----------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.tile_rc)

    @property
    def n_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)

    @property
    def predicted(self) -> np.ndarray:
        """(n,) int16 predicted class of each tile (see the module docstring for the rule)."""
        thr = np.array([self.thresholds[c] for c in self.classes[1:]], np.float32)
        pos = self.prob[:, 1:]
        passing = pos >= thr
        best = np.argmax(np.where(passing, pos, -np.inf), axis=1) + 1
        return np.where(passing.any(axis=1), best, 0).astype(np.int16)

    def class_counts(self) -> dict[str, int]:
        """Number of tiles predicted as each class."""
        counts = np.bincount(self.predicted, minlength=self.n_classes)
        return {c: int(counts[i]) for i, c in enumerate(self.classes)}

    def positive_share(self, cls: str | None = None) -> float:
        """Share of the tiles predicted as ``cls`` (default: any non-negative class)."""
        if len(self) == 0:
            return 0.0
        pred = self.predicted
        if cls is None:
            return float(np.count_nonzero(pred > 0) / len(pred))
        if cls not in self.classes:
            raise ValueError(f"cls must be one of {self.classes}, got {cls!r}")
        return float(np.count_nonzero(pred == self.classes.index(cls)) / len(pred))

    def cancer_share(self) -> float:
        """Share of the tissue tiles predicted as any non-negative class (cancer)."""
        return self.positive_share()

    def prob_map(self, cls: str | int = -1) -> np.ndarray:
        """(rows, cols) float32 probability of class ``cls`` per grid cell; NaN off the tissue."""
        i = self.classes.index(cls) if isinstance(cls, str) else int(cls) % self.n_classes
        out = np.full(self.grid_shape, np.nan, np.float32)
        out[self.tile_rc[:, 0], self.tile_rc[:, 1]] = self.prob[:, i]
        return out

    def with_thresholds(self, thresholds: Mapping[str, float]) -> ScoreGrid:
        """A copy with some thresholds replaced (``{"cancer": 0.3}``)."""
        from dataclasses import replace

        return replace(self, thresholds=_merge_thresholds(self.thresholds, self.classes,
                                                          thresholds))  # fmt: skip

    # -- files ------------------------------------------------------------------------------------
    def meta(self) -> dict[str, Any]:
        """Everything but the arrays, as JSON-friendly values."""
        return {
            "format": SCORE_FORMAT,
            "version": SCORE_VERSION,
            "slide_path": self.slide_path,
            "slide_name": self.slide_name,
            "classes": list(self.classes),
            "colours": {k: list(v) for k, v in self.colours.items()},
            "tile_size": self.tile_size,
            "stride": self.stride,
            "level": self.level,
            "downsample": self.downsample,
            "scale": self.scale,
            "mpp": self.mpp,
            "grid_shape": list(self.grid_shape),
            "thresholds": dict(self.thresholds),
            "model": self.model,
            "engine": self.engine,
            "timings": dict(self.timings),
        }

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write to ``.npz`` (arrays + JSON meta) or ``.csv`` (one row per tile), atomically.

        The CSV starts with one comment line ``# prostate-fast score grid {json meta}``, then
        the header ``row,col,x,y,p_<class>...,predicted``; probabilities are written with 9
        significant digits, so a load returns the same float32 values.

        Raises
        ------
        ValueError
            A suffix other than .npz or .csv.
        FileExistsError
            ``path`` exists and ``overwrite`` is false.
        """
        path = Path(path)
        kind = path.suffix.lower()
        if kind not in (".npz", ".csv"):
            raise ValueError(f"path must end in .npz or .csv, got {path}")
        meta = json.dumps(self.meta())
        with atomic_path(path, overwrite=overwrite) as tmp:
            if kind == ".npz":
                write_npz(
                    tmp, meta=np.array(meta), tile_rc=self.tile_rc, l0_xy=self.l0_xy, prob=self.prob
                )
            else:
                with open(tmp, "w", newline="", encoding="utf-8") as fh:
                    fh.write(f"# {SCORE_FORMAT} {meta}\n")
                    w = csv.writer(fh, lineterminator="\n")
                    w.writerow(["row", "col", "x", "y", *(f"p_{c}" for c in self.classes),
                                "predicted"])  # fmt: skip
                    pred = self.predicted
                    for i in range(len(self)):
                        w.writerow([
                            int(self.tile_rc[i, 0]), int(self.tile_rc[i, 1]),
                            int(self.l0_xy[i, 0]), int(self.l0_xy[i, 1]),
                            *(f"{v:.9g}" for v in self.prob[i].tolist()), int(pred[i]),
                        ])  # fmt: skip
            os.chmod(tmp, 0o644)
        return path


def _grid_from_meta(meta: dict[str, Any], tile_rc: np.ndarray, l0_xy: np.ndarray,
                    prob: np.ndarray, path: Path) -> ScoreGrid:  # fmt: skip
    if not isinstance(meta, dict) or meta.get("format") != SCORE_FORMAT:
        raise ProstateFastError(f"{path}: not a prostate-fast score grid")
    if meta.get("version") != SCORE_VERSION:
        raise ProstateFastError(f"{path}: unsupported score grid version {meta.get('version')!r}")
    try:
        return ScoreGrid(
            slide_path=str(meta["slide_path"]),
            slide_name=str(meta["slide_name"]),
            classes=tuple(meta["classes"]),
            colours={k: tuple(int(x) for x in v) for k, v in meta["colours"].items()},  # type: ignore[misc]
            tile_size=int(meta["tile_size"]),
            stride=int(meta["stride"]),
            level=int(meta["level"]),
            downsample=float(meta["downsample"]),
            scale=float(meta["scale"]),
            mpp=None if meta["mpp"] is None else float(meta["mpp"]),
            grid_shape=(int(meta["grid_shape"][0]), int(meta["grid_shape"][1])),
            tile_rc=np.ascontiguousarray(tile_rc, np.int32).reshape(-1, 2),
            l0_xy=np.ascontiguousarray(l0_xy, np.int64).reshape(-1, 2),
            prob=np.ascontiguousarray(prob, np.float32).reshape(len(tile_rc), len(meta["classes"])),
            thresholds={k: float(v) for k, v in meta["thresholds"].items()},
            model=str(meta["model"]),
            engine=str(meta["engine"]),
            timings={k: float(v) for k, v in meta.get("timings", {}).items()},
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ProstateFastError(f"{path}: damaged score grid ({exc})") from exc


def load_score_grid(path: str | os.PathLike[str]) -> ScoreGrid:
    """Read a :class:`ScoreGrid` written by :meth:`ScoreGrid.save` (``.npz`` or ``.csv``).

    Raises
    ------
    ValueError
        A suffix other than .npz or .csv.
    ProstateFastError
        Missing, unreadable or damaged file (the message names it).
    """
    path = Path(path)
    kind = path.suffix.lower()
    if kind not in (".npz", ".csv"):
        raise ValueError(f"path must end in .npz or .csv, got {path}")
    if not path.is_file():
        raise ProstateFastError(f"{path}: no such file")
    try:
        if kind == ".npz":
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                return _grid_from_meta(meta, z["tile_rc"], z["l0_xy"], z["prob"], path)
        text = path.read_text(encoding="utf-8")
        first, _, body = text.partition("\n")
        prefix = f"# {SCORE_FORMAT} "
        if not first.startswith(prefix):
            raise ProstateFastError(f"{path}: not a prostate-fast score grid CSV")
        meta = json.loads(first[len(prefix) :])
        k = len(meta["classes"])
        if body.strip().count("\n") == 0:  # the header only: no tiles
            data = np.zeros((0, 5 + k))
        else:
            data = np.loadtxt(io.StringIO(body), delimiter=",", skiprows=1, ndmin=2,
                              dtype=np.float64)  # fmt: skip
        if data.shape[1] != 5 + k:
            raise ProstateFastError(f"{path}: expected {5 + k} columns, got {data.shape[1]}")
        rows = data[:, :4].astype(np.int64)
        return _grid_from_meta(meta, rows[:, :2], rows[:, 2:4], data[:, 4 : 4 + k], path)
    except ProstateFastError:
        raise
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as exc:
        raise ProstateFastError(f"{path}: damaged score grid ({exc})") from exc


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
        return {"mpp": info.mpp}  # the slide has no mpp: choose_level asks for --mpp/--level
    raise ModelError(
        f"{info.model_dir / 'model.json'}: records neither magnification nor mpp; pass --level"
    )


def _merge_thresholds(
    base: Mapping[str, float], classes: tuple[str, ...], override: Mapping[str, float] | None
) -> dict[str, float]:
    out = {c: float(base[c]) for c in classes[1:]}
    for key, value in (override or {}).items():
        if key not in classes[1:]:
            raise ValueError(
                f"thresholds: {key!r} is not a non-negative class of the model {classes[1:]}"
            )
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            raise ValueError(f"thresholds: {key!r} must be a number in [0, 1], got {value!r}")
        out[key] = float(value)
    return out


# -- the stage ------------------------------------------------------------------------------------
def predict_slide(
    model: str | os.PathLike[str] | Predictor,
    slide: str | os.PathLike[str] | Slide,
    *,
    engine: Engine | str = "gluon",
    ctx: Any = "cpu",
    batch_size: int = 64,
    n_threads: int | None = None,
    mpp: float | None = None,
    level: int | None = None,
    thresholds: Mapping[str, float] | None = None,
    tissue: Any = None,
    min_tissue: float | None = None,
    progress: bool = False,
) -> ScoreGrid:
    """Class probabilities of every tissue tile of a slide.

    Parameters
    ----------
    model : path or Predictor
        A model folder (loaded with :func:`load_model` using ``engine``, ``ctx``, ``batch_size``
        and ``n_threads``), or a :class:`Predictor` already loaded (to reuse over many slides;
        those four arguments are then ignored).
    slide : path or Slide
        The slide (opened and closed here when a path is given).
    engine : {"gluon", "native", "onnx"}
        See :func:`load_model`.
    ctx : str
        ``"cpu"`` or ``"gpu(N)"``.
    batch_size : int
        Tiles per engine call (default 64).
    n_threads : int, optional
        Threads for the engine and the tissue kernels (None = every core).
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
    progress : bool
        Print progress to stderr.

    Returns
    -------
    ScoreGrid
        Tissue tiles only, in row-major order.

    Raises
    ------
    ValueError
        Bad arguments (engine, batch_size, thresholds, mpp, level, a scale finer than level 0).
    ModelError
        A bad model folder (see :func:`load_model`).
    SlideError
        Unreadable slide, or a slide that records no scale while the model needs one: the
        message asks for ``--mpp`` or ``--level``.

    Notes
    -----
    A single background thread reads and normalises batch k + 1 (``read_tiles``) while batch k
    runs in the engine; the native and ONNX engines release the GIL, and Gluon's calls go through
    ctypes, which does too, so reading and inference overlap. Cost is dominated by inference:
    about 300-600 tiles/s for the study network at 128 px on 2 CPU cores (see
    ``bench/bench_predict.py``); a 20x biopsy slide of 20,000 tissue tiles takes about a minute,
    where the 2018 study took 21.
    """
    t_start = time.perf_counter()
    if mpp is not None and (
        isinstance(mpp, bool) or not isinstance(mpp, int | float | np.number) or not mpp > 0
    ):
        raise ValueError(f"mpp must be a positive number, got {mpp!r}")
    if level is not None and (isinstance(level, bool) or not isinstance(level, int | np.integer)):
        raise ValueError(f"level must be an integer, got {level!r}")
    own_model = not isinstance(model, Predictor)
    predictor = (
        load_model(model, engine=engine, ctx=ctx, batch_size=batch_size, n_threads=n_threads)
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
        thr = _merge_thresholds(info.thresholds, info.classes, thresholds)
        if isinstance(slide, Slide):
            sl = slide
        else:
            sl = stack.enter_context(open_slide(slide, n_threads=n_threads))
        view: Slide = sl.with_mpp(float(mpp)) if mpp is not None else sl
        request = _scale_request(info, view, None if level is None else int(level))
        view.choose_level(**request)  # fails fast (no scale recorded) before the tissue pass
        t0 = time.perf_counter()
        if tissue is None:
            from ..tissue import detect_tissue

            tissue = detect_tissue(view, n_threads=n_threads)
        t1 = time.perf_counter()
        kw: dict[str, Any] = {} if min_tissue is None else {"min_tissue": min_tissue}
        grid = build_grid(view, tissue, **request, tile_size=info.tile_size, **kw)
        t2 = time.perf_counter()
        prob = _run_grid(predictor, view, grid, read_tiles, progress)
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
        engine=predictor.engine,
        timings={
            "tissue": t1 - t0,
            "grid": t2 - t1,
            "inference": t3 - t2,
            "total": time.perf_counter() - t_start,
            "tiles_per_s": len(grid) / (t3 - t2) if len(grid) and t3 > t2 else 0.0,
        },
    )


def _run_grid(predictor: Predictor, slide: Slide, grid: Any, read_tiles: Any,
              progress: bool) -> np.ndarray:  # fmt: skip
    """Probabilities of every tile of ``grid``; reading of batch k + 1 overlaps batch k."""
    n = len(grid)
    prob = np.empty((n, predictor.info.n_classes), np.float32)
    if n == 0:
        return prob
    bounds = [(s, min(s + predictor.batch_size, n)) for s in range(0, n, predictor.batch_size)]

    def load(b: tuple[int, int]) -> np.ndarray:
        return predictor.prepare(read_tiles(slide, grid, np.arange(b[0], b[1])))

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="pf-read") as pool:
        pending: Future[np.ndarray] = pool.submit(load, bounds[0])
        try:
            for k, (s, e) in enumerate(bounds):
                x = pending.result()
                if k + 1 < len(bounds):
                    pending = pool.submit(load, bounds[k + 1])
                prob[s:e] = predictor.run(x)
                if progress:
                    rate = e / max(time.perf_counter() - t0, 1e-9)
                    print(f"\rpredict: {e}/{n} tiles, {rate:.0f} tiles/s", end="",
                          file=sys.stderr, flush=True)  # fmt: skip
        finally:
            pending.cancel()
    if progress:
        print(file=sys.stderr)
    return prob
