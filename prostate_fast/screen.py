"""Screening worklist: predict many slides, score each for cancer, rank them for the pathologist.

:func:`screen_slides` loads the model once, and for every slide runs
:func:`~prostate_fast.predict.predict_slide`, writes into ``out_dir/<slide stem>/`` the overlay
(pyramidal TIFF ``<stem>-overlay.tif`` and its ``-thumb.png``), the QuPath GeoJSON of the
predicted tiles (``<stem>.geojson``) and the scores (``<stem>-scores.npz``), and computes a cancer
score (:func:`cancer_score`). The worklist (:func:`rank_worklist`) is written as CSV, one row per
slide with a ``rank`` column, its text cells escaped against formula injection
(:func:`~prostate_fast._util.csv_cell`).

A slide whose stem is the name of one of the run's own files (``worklist.csv``; a batch adds its
summary and lock files) gets the folder ``<stem>-slide`` instead (:func:`folder_name`), so its
folder and the worklist never collide.

Priority (rank 1 first):

1. slides that could not be screened: they need a manual read (``status`` ``"error: ..."``;
   ``"needs manual read: <reason>"``: the slide lies outside the stain domain the model was
   trained on, e.g. a fluorescence scan given to an H&E model, so it gets no score and no
   outputs; then ``"no tissue"``: no tile of the slide lies on tissue, as on blank glass or an
   all-white scan, so the model looked at nothing; its outputs are still written, to show what
   was scanned);
2. then by ``score``, the mean probability of the slide's most suspicious tiles (the top 1 %,
   at least 10 tiles): a few strongly suspicious tiles outrank many weakly suspicious ones, and
   a large benign slide does not rise just because it has more tissue (the count of tiles over a
   threshold chosen for 99 % sensitivity grows with tissue area on benign slides too);
3. then by number of positive tiles, then by top probability,
4. then by slide name (a stable order for ties).

A slide that fails (unreadable file, a scale the model cannot use, ...) becomes an error row and
does not stop the others; its partial outputs are removed.

What screening needs (engine, device, batch size, thresholds, scale, the overlay's look, threads)
travels as one :class:`ScreeningOptions`, checked when it is built; the ``predict``, ``screen``,
``run`` and ``batch`` commands, :func:`screen_slides` and :func:`prostate_fast.batch.run_batch`
(and its manifests) all take it. Each slide is opened once: the open slide goes to
:func:`~prostate_fast.predict.predict_slide` and then to
:func:`~prostate_fast.overlay.write_overlay`.
"""

from __future__ import annotations

import contextlib
import csv
import os
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from ._outputs import command_inputs, register_csv_header
from ._util import atomic_path, check_outputs, check_writable, csv_cell, resolve_threads
from .errors import ProstateFastError, one_line
from .triage import TOP_K, top_count

__all__ = [
    "ScreeningOptions",
    "WorklistRow",
    "cancer_score",
    "folder_name",
    "rank_worklist",
    "screen_scored",
    "screen_slides",
    "scored_status",
    "write_worklist",
]

#: Worklist status of a slide on which no tile lies on tissue (ranked with the failures).
NO_TISSUE = "no tissue"
#: Worklist status prefix of a slide outside the model's domain (ranked with the failures).
NEEDS_READ = "needs manual read: "
#: The worklist's default name in the output folder.
WORKLIST = "worklist.csv"
#: Names of the :class:`ScreeningOptions` fields that set the overlay's look (and its files).
OVERLAY_LOOK = ("alpha", "mode", "outline", "colours", "quality", "compression", "thumbnail_size")


@dataclass(frozen=True)
class ScreeningOptions:
    """Everything screening needs besides the model and the slides, checked when built.

    Attributes
    ----------
    engine : {"gluon", "native", "onnx"}
        Inference engine (:data:`prostate_fast.predict.ENGINES`, see
        :func:`~prostate_fast.predict.load_model`).
    ctx : str
        ``"cpu"`` or ``"gpu(N)"``.
    batch_size : int
        Tiles per engine call.
    precision : {"fp32", "int8"}
        ``"int8"``: the onnx engine's calibrated int8 network (see
        :func:`~prostate_fast.predict.load_model`).
    thresholds : mapping of str to float
        Decision threshold per non-negative class, overriding the model's (``{"cancer": 0.3}``);
        the class names are checked against the model when it is applied.
    mpp : float, optional
        Microns per level-0 pixel of the slides, overriding the files.
    level : int, optional
        Read this pyramid level as it is instead of matching the model's scale.
    ignore_domain, ignore_scale : bool
        Score slides outside the model's training domain, read a ``level`` at another scale
        than the model's (see :func:`~prostate_fast.predict.predict_slide`).
    alpha, mode, outline, colours, quality, compression, thumbnail_size
        The overlay's look and files, see :func:`~prostate_fast.overlay.write_overlay`.
    n_threads : int, optional
        CPU threads per slide (None: every core; :func:`~prostate_fast.batch.run_batch` divides
        the cores among its workers).

    Raises
    ------
    ValueError
        A field out of its range (the message names it).
    """

    engine: str = "gluon"
    ctx: str = "cpu"
    batch_size: int = 64
    precision: str = "fp32"
    thresholds: Mapping[str, float] = field(default_factory=dict)
    mpp: float | None = None
    level: int | None = None
    ignore_domain: bool = False
    ignore_scale: bool = False
    alpha: float = 0.4
    mode: str = "class"
    outline: int = 0
    colours: Mapping[str, tuple[int, int, int]] = field(default_factory=dict)
    quality: int = 90
    compression: str = "jpeg"
    thumbnail_size: int = 2048
    n_threads: int | None = None

    def __post_init__(self) -> None:
        from .overlay.colours import check_rgb
        from .overlay.core import check_encoding, check_look
        from .predict.core import validate_scale
        from .predict.engines.base import check_engine
        from .predict.scoregrid import check_threshold

        check_engine(self.engine, self.batch_size, self.precision)
        if not isinstance(self.ctx, str):
            raise ValueError(f"ctx must be a string like 'cpu' or 'gpu(0)', got {self.ctx!r}")
        validate_scale(self.mpp, self.level)
        for name in ("ignore_domain", "ignore_scale"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        check_look(self.alpha, self.mode, self.outline)
        check_encoding(self.compression, self.quality, self.thumbnail_size)
        if self.n_threads is not None:
            resolve_threads(self.n_threads)
        thresholds = {str(k): check_threshold(k, v) for k, v in dict(self.thresholds).items()}
        colours = {str(k): check_rgb(k, v) for k, v in dict(self.colours).items()}
        object.__setattr__(self, "thresholds", thresholds)
        object.__setattr__(self, "colours", colours)

    def predict_kwargs(self) -> dict[str, Any]:
        """Keywords of :func:`~prostate_fast.predict.predict_slide` (all but ``n_threads``)."""
        keys = (
            "engine",
            "ctx",
            "batch_size",
            "precision",
            "mpp",
            "level",
            "ignore_domain",
            "ignore_scale",
        )
        return {k: getattr(self, k) for k in keys} | {"thresholds": dict(self.thresholds)}

    def overlay_look(self) -> dict[str, Any]:
        """Keywords of :func:`~prostate_fast.overlay.write_overlay` for the look and the files."""
        return {k: getattr(self, k) for k in OVERLAY_LOOK} | {"colours": dict(self.colours)}

    def load_model(self, model: str | os.PathLike[str], n_threads: int | None = None) -> Any:
        """:func:`~prostate_fast.predict.load_model` with these options (``n_threads`` wins)."""
        from .predict.engines import load_model

        threads = self.n_threads if n_threads is None else n_threads
        return load_model(
            model,
            engine=self.engine,
            ctx=self.ctx,
            batch_size=self.batch_size,
            n_threads=threads,
            precision=self.precision,
        )


@dataclass(frozen=True)
class WorklistRow:
    """One slide of the worklist.

    Attributes
    ----------
    rank : int
        1 = read first (0 until :func:`rank_worklist` ranks the rows).
    slide : str
        Slide file name.
    status : str
        ``"ok"``, ``"no tissue"`` (no tile on tissue: nothing was scored),
        ``"needs manual read: <reason>"`` (outside the model's domain: not scored) or
        ``"error: <one line>"``.
    n_tiles : int
        Tissue tiles scored.
    n_positive : int
        Tiles predicted as a non-negative class (over their threshold).
    positive_share : float
        ``n_positive / n_tiles`` (0 when no tiles).
    positive_area_mm2 : float or None
        ``n_positive * (stride * mpp / 1000) ** 2``: the area the positive tiles stand for (each
        tile counts its stride cell, so overlapping tiles are not counted twice); None without mpp.
    top_probability : float
        Highest probability of a non-negative class over the tiles (0 when no tiles).
    top10_mean : float
        Mean of the 10 highest such probabilities (fewer when fewer tiles).
    score : float
        Priority score: mean of the highest ``max(10, ceil(1 % of n_tiles))`` probabilities.
    overlay, thumbnail, geojson, scores : str
        Output files ("" when not written).
    path : str
        The slide file.
    seconds : float
        Wall time spent on the slide.
    """

    rank: int
    slide: str
    status: str
    n_tiles: int = 0
    n_positive: int = 0
    positive_share: float = 0.0
    positive_area_mm2: float | None = None
    top_probability: float = 0.0
    top10_mean: float = 0.0
    score: float = 0.0
    overlay: str = ""
    thumbnail: str = ""
    geojson: str = ""
    scores: str = ""
    path: str = ""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """True when the slide was screened (not an error, and some tiles were on tissue)."""
        return self.status == "ok"


def scored_status(n_tiles: int) -> str:
    """Worklist status of a slide whose prediction ran: ``"ok"``, or ``"no tissue"`` (0 tiles)."""
    return "ok" if n_tiles else NO_TISSUE


def cancer_score(scores: Any) -> dict[str, Any]:
    """Cancer score of one slide from its ScoreGrid (the numeric fields of :class:`WorklistRow`).

    The probability of a tile is that of its most probable non-negative class (for two classes:
    p(cancer)); positive tiles are those :attr:`ScoreGrid.predicted` assigns a non-negative class.
    """
    prob = np.asarray(scores.prob, dtype=np.float64)
    n = len(prob)
    pred = np.asarray(scores.predicted)
    n_pos = int(np.count_nonzero(pred > 0))
    p = prob[:, 1:].max(axis=1) if n else np.zeros(0)
    ranked = np.sort(p)[::-1]
    top = ranked[:TOP_K]
    mpp = getattr(scores, "mpp", None)
    area = n_pos * (float(scores.stride) * float(mpp) / 1000.0) ** 2 if mpp else None
    return {
        "n_tiles": n,
        "n_positive": n_pos,
        "positive_share": n_pos / n if n else 0.0,
        "positive_area_mm2": area,
        "top_probability": float(top[0]) if n else 0.0,
        "top10_mean": float(top.mean()) if n else 0.0,
        "score": float(ranked[: top_count(n)].mean()) if n else 0.0,  # triage's slide score
    }


def _priority(row: WorklistRow) -> tuple:
    return (
        row.ok,
        row.status == NO_TISSUE,
        -row.score,
        -row.n_positive,
        -row.top_probability,
        row.slide,
    )


def rank_worklist(rows: Iterable[WorklistRow]) -> list[WorklistRow]:
    """Order rows by priority (see the module notes) and number them from 1."""
    ordered = sorted(rows, key=_priority)
    return [replace(r, rank=i + 1) for i, r in enumerate(ordered)]


register_csv_header(",".join(f.name for f in fields(WorklistRow)))  # --overwrite may replace it


def write_worklist(
    rows: Sequence[WorklistRow], path: str | os.PathLike[str], *, overwrite: bool = False
) -> Path:
    """Write ranked rows as CSV (header = :class:`WorklistRow` fields), atomically."""
    path = Path(path)
    names = [f.name for f in fields(WorklistRow)]
    with atomic_path(path, overwrite=overwrite) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=names, lineterminator="\n")
            w.writeheader()
            for r in rows:
                d = asdict(r)
                for k, v in d.items():
                    if isinstance(v, str):
                        d[k] = csv_cell(v)  # slide names, paths, error messages
                    elif isinstance(v, float):
                        d[k] = f"{v:.6g}"
                    elif v is None:
                        d[k] = ""
                w.writerow(d)
    return path


def folder_name(slide: str | os.PathLike[str], reserved: Iterable[str] = (WORKLIST,)) -> str:
    """The name of ``slide``'s output folder: its stem, or ``<stem>-slide`` for a reserved name.

    ``reserved``: the names of the run's own files beside the slide folders (compared ignoring
    case, as on a case-insensitive file system); a slide ``worklist.csv.tif`` gets the folder
    ``worklist.csv-slide``, so the worklist can still be written.
    """
    stem = Path(slide).stem
    taken = {r.casefold() for r in reserved}
    return f"{stem}-slide" if stem.casefold() in taken else stem


def _outputs(out_dir: Path, slide: Path) -> dict[str, Path]:
    folder = out_dir / folder_name(slide)
    return {
        "overlay": folder / f"{slide.stem}-overlay.tif",
        "thumbnail": folder / f"{slide.stem}-overlay-thumb.png",
        "geojson": folder / f"{slide.stem}.geojson",
        "scores": folder / f"{slide.stem}-scores.npz",
    }


def screen_scored(
    slide: Any,
    scores: Any,
    out_dir: str | os.PathLike[str],
    options: ScreeningOptions | None = None,
    *,
    overwrite: bool = False,
) -> WorklistRow:
    """Write one slide's outputs from its ScoreGrid and return its (unranked) worklist row.

    Parameters
    ----------
    slide : path or Slide
        The slide the scores were computed on (an open Slide is read as it is, not reopened).
    scores : ScoreGrid
        Its predictions.
    out_dir : path
        Outputs go to ``out_dir/<slide stem>/`` (see :func:`folder_name`): ``-overlay.tif``, ``-overlay-thumb.png``,
        ``.geojson`` (predicted tiles) and ``-scores.npz``.
    options : ScreeningOptions, optional
        The overlay's look and ``n_threads`` (default: ``ScreeningOptions()``).
    overwrite : bool
        Replace existing outputs; otherwise ``FileExistsError`` before anything is written.

    Returns
    -------
    WorklistRow

    Raises
    ------
    ValueError, FileExistsError, OSError, SlideError
        What the writers raise; on failure nothing of this slide is left.
    """
    from .geojson import export_geojson
    from .overlay.core import write_overlay

    options = options or ScreeningOptions()
    path = Path(slide) if isinstance(slide, str | os.PathLike) else Path(slide.path)
    out = _outputs(Path(out_dir), path)
    order = ("scores", "overlay", "thumbnail", "geojson")  # the order they are written in
    check_outputs([out[k] for k in order], overwrite=overwrite, distinct=False)
    written: list[Path] = []
    try:
        out["overlay"].parent.mkdir(parents=True, exist_ok=True)
        scores.save(out["scores"], overwrite=overwrite)
        written.append(out["scores"])
        res = write_overlay(
            slide,
            scores,
            out["overlay"],
            overwrite=overwrite,
            n_threads=options.n_threads,
            **options.overlay_look(),
        )
        written += [res.path, *([res.thumbnail] if res.thumbnail else [])]
        export_geojson(scores, out["geojson"], colours=options.colours, overwrite=overwrite)
    except BaseException:
        for p in written:
            p.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            out["overlay"].parent.rmdir()  # only when empty
        raise
    files = {"overlay": str(res.path), "thumbnail": str(res.thumbnail or "")}
    return WorklistRow(
        rank=0,
        slide=path.name,
        status=scored_status(len(scores.prob)),
        **cancer_score(scores),
        **files,
        geojson=str(out["geojson"]),
        scores=str(out["scores"]),
        path=str(path),
    )


def screen_slides(
    model: Any,
    slides: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    options: ScreeningOptions | None = None,
    *,
    worklist: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    progress: Callable[[WorklistRow], None] | None = None,
) -> list[WorklistRow]:
    """Screen slides with a model: overlay, GeoJSON, scores and a ranked worklist.

    Parameters
    ----------
    model : path or Predictor
        A model folder (loaded once with ``options``) or a loaded
        :class:`~prostate_fast.predict.Predictor`.
    slides : sequence of path
        Slide files; their file stems must be distinct (each gets ``out_dir/<stem>/``).
    out_dir : path
        Folder of the per-slide outputs (created).
    options : ScreeningOptions, optional
        Engine, thresholds, scale, the overlays' look, threads (default: ``ScreeningOptions()``).
    worklist : path, optional
        Where to write the worklist CSV (default ``out_dir/worklist.csv``).
    overwrite : bool
        Replace existing outputs; otherwise ``FileExistsError`` before any slide is processed.
    progress : callable, optional
        Called with each slide's row when it is done.

    Returns
    -------
    list of WorklistRow
        Ranked (the CSV's rows, in order). Failed slides are rows with ``status`` "error: ...",
        slides outside the model's domain "needs manual read: ...", slides without tissue
        "no tissue" (see the module notes).

    Raises
    ------
    ValueError
        No slides, or two slides with the same file stem.
    FileExistsError
        An output exists and ``overwrite`` is false.
    ModelError
        The model cannot be loaded.

    Notes
    -----
    Cost per slide: prediction (about a minute for 20,000 tissue tiles on 2 cores, see
    :func:`~prostate_fast.predict.predict_slide`) plus the overlay (about 20 ns per overlay pixel).
    Each slide is opened once, for both.
    """
    from .predict.engines import Predictor

    options = options or ScreeningOptions()
    paths = [Path(s) for s in slides]
    if not paths:
        raise ValueError("slides must name at least one slide file")
    distinct_stems(paths)
    out_dir = Path(out_dir)
    worklist = Path(worklist) if worklist is not None else out_dir / WORKLIST
    folders = {out_dir / folder_name(p): p for p in paths}
    if worklist in folders:
        raise ValueError(
            f"{worklist}: the worklist would be the output folder of {folders[worklist]}"
        )
    outputs = [f for p in paths for f in _outputs(out_dir, p).values()]
    with command_inputs([model, *paths]):
        check_outputs([worklist, *outputs], overwrite=overwrite, distinct=False)
        check_writable(worklist.parent, output=worklist)  # a read-only or impossible folder fails
        check_writable(out_dir)  # now, not after the work
        options = replace(options, n_threads=resolve_threads(options.n_threads))
        own = not isinstance(model, Predictor)
        predictor = options.load_model(model) if own else model
        rows = []
        try:
            for p in paths:
                t0 = time.perf_counter()
                row = _screen_one(predictor, p, out_dir, options, overwrite)
                row = replace(row, seconds=time.perf_counter() - t0)
                rows.append(row)
                if progress is not None:
                    progress(row)
        finally:
            if own:
                predictor.close()
        ranked = rank_worklist(rows)
        write_worklist(ranked, worklist, overwrite=overwrite)
        return ranked


def distinct_stems(paths: Sequence[Path], reserved: Iterable[str] = (WORKLIST,)) -> None:
    """ValueError naming two slides that would share an output folder (see :func:`folder_name`)."""
    reserved = tuple(reserved)
    stems: dict[str, Path] = {}
    for p in paths:
        name = folder_name(p, reserved)
        if name in stems:
            q = stems[name]
            same = f"the same stem {p.stem!r}" if q.stem == p.stem else f"one folder {name!r}"
            raise ValueError(f"slides {q} and {p} have {same}")
        stems[name] = p


def _screen_one(
    predictor: Any, path: Path, out_dir: Path, options: ScreeningOptions, overwrite: bool
) -> WorklistRow:
    """Predict and write one slide, opened once; a failure becomes an error row."""
    from .predict.core import predict_slide
    from .predict.scoregrid import merge_thresholds
    from .slide import open_slide

    info = predictor.info
    try:
        merge_thresholds(info.thresholds, info.classes, options.thresholds)  # before the file
        with open_slide(path, n_threads=options.n_threads) as sl:
            scores = predict_slide(
                predictor, sl, **options.predict_kwargs(), n_threads=options.n_threads
            )
            return screen_scored(sl, scores, out_dir, options, overwrite=overwrite)
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:  # noqa: BLE001 - reported in the worklist
        if not isinstance(exc, OSError | ValueError | ProstateFastError):
            traceback.print_exc()
        return error_row(path, exc)


def error_row(path: Path, exc: BaseException, seconds: float = 0.0) -> WorklistRow:
    """The (unranked) worklist row of slide ``path`` that failed with ``exc``
    (:func:`error_status`)."""
    status = error_status(exc)
    return WorklistRow(rank=0, slide=path.name, status=status, path=str(path), seconds=seconds)


def error_status(exc: BaseException) -> str:
    """The worklist status of a slide that failed with ``exc``.

    ``"needs manual read: <reason>"`` for a slide outside the model's domain
    (:class:`~prostate_fast.model.domain.OutOfDomainError`), else ``"error: <one line>"``.
    """
    reason = getattr(exc, "reason", None)
    if isinstance(exc, ProstateFastError) and isinstance(reason, str):
        return NEEDS_READ + " ".join(reason.split())
    return "error: " + one_line(exc)
