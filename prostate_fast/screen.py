"""Screening worklist: predict many slides, score each for cancer, rank them for the pathologist.

:func:`screen_slides` loads the model once, and for every slide runs
:func:`~prostate_fast.predict.predict_slide`, writes into ``out_dir/<slide stem>/`` the overlay
(pyramidal TIFF ``<stem>-overlay.tif`` and its ``-thumb.png``), the QuPath GeoJSON of the
predicted tiles (``<stem>.geojson``) and the scores (``<stem>-scores.npz``), and computes a cancer
score (:func:`cancer_score`). The worklist (:func:`rank_worklist`) is written as CSV, one row per
slide with a ``rank`` column.

Priority (rank 1 first):

1. slides that could not be screened: they need a manual read (``status`` ``"error: ..."``, then
   ``"no tissue"``: no tile of the slide lies on tissue, as on blank glass or an all-white scan,
   so the model looked at nothing; its outputs are still written, to show what was scanned);
2. then by ``score``, the mean probability of the slide's most suspicious tiles (the top 1 %,
   at least 10 tiles): a few strongly suspicious tiles outrank many weakly suspicious ones, and
   a large benign slide does not rise just because it has more tissue (the count of tiles over a
   threshold chosen for 99 % sensitivity grows with tissue area on benign slides too);
3. then by number of positive tiles, then by top probability,
4. then by slide name (a stable order for ties).

A slide that fails (unreadable file, a scale the model cannot use, ...) becomes an error row and
does not stop the others; its partial outputs are removed.
"""

from __future__ import annotations

import contextlib
import csv
import os
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from ._util import atomic_path, check_writable, resolve_threads

__all__ = [
    "WorklistRow",
    "cancer_score",
    "rank_worklist",
    "screen_scored",
    "screen_slides",
    "scored_status",
    "write_worklist",
]

TOP_K = 10
#: Worklist status of a slide on which no tile lies on tissue (ranked with the failures).
NO_TISSUE = "no tissue"


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
        ``"ok"``, ``"no tissue"`` (no tile on tissue: nothing was scored) or
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
    k = max(TOP_K, -(-n // 100))
    mpp = getattr(scores, "mpp", None)
    area = n_pos * (float(scores.stride) * float(mpp) / 1000.0) ** 2 if mpp else None
    return {
        "n_tiles": n,
        "n_positive": n_pos,
        "positive_share": n_pos / n if n else 0.0,
        "positive_area_mm2": area,
        "top_probability": float(top[0]) if n else 0.0,
        "top10_mean": float(top.mean()) if n else 0.0,
        "score": float(ranked[:k].mean()) if n else 0.0,
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
                    if isinstance(v, float):
                        d[k] = f"{v:.6g}"
                    elif v is None:
                        d[k] = ""
                w.writerow(d)
    return path


def _outputs(out_dir: Path, slide: Path) -> dict[str, Path]:
    folder = out_dir / slide.stem
    return {
        "overlay": folder / f"{slide.stem}-overlay.tif",
        "thumbnail": folder / f"{slide.stem}-overlay-thumb.png",
        "geojson": folder / f"{slide.stem}.geojson",
        "scores": folder / f"{slide.stem}-scores.npz",
    }


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.filename and exc.strerror:
        return f"error: {exc.filename}: {exc.strerror}"
    return "error: " + " ".join((str(exc) or type(exc).__name__).split())


def screen_scored(
    slide: str | os.PathLike[str],
    scores: Any,
    out_dir: str | os.PathLike[str],
    *,
    overlay_options: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    n_threads: int | None = None,
) -> WorklistRow:
    """Write one slide's outputs from its ScoreGrid and return its (unranked) worklist row.

    Outputs go to ``out_dir/<slide stem>/``: ``-overlay.tif``, ``-overlay-thumb.png``,
    ``.geojson`` (predicted tiles) and ``-scores.npz``. ``overlay_options`` are passed to
    :func:`~prostate_fast.overlay.write_overlay` (alpha, mode, outline, colours, quality).
    Raises what those writers raise; on failure nothing of this slide is left.
    """
    from .overlay.core import write_overlay

    slide = Path(slide)
    out = _outputs(Path(out_dir), slide)
    written: list[Path] = []
    try:
        out["overlay"].parent.mkdir(parents=True, exist_ok=True)
        scores.save(out["scores"], overwrite=overwrite)
        written.append(out["scores"])
        res = write_overlay(
            slide, scores, out["overlay"], geojson=out["geojson"], overwrite=overwrite,
            n_threads=n_threads, **dict(overlay_options or {}),
        )  # fmt: skip
    except BaseException:
        for p in written:
            p.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            out["overlay"].parent.rmdir()  # only when empty
        raise
    return WorklistRow(
        rank=0, slide=slide.name, status=scored_status(len(scores.prob)), **cancer_score(scores),
        overlay=str(res.path), thumbnail=str(res.thumbnail or ""), geojson=str(res.geojson or ""),
        scores=str(out["scores"]), path=str(slide),
    )  # fmt: skip


def screen_slides(
    model: Any,
    slides: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    worklist: str | os.PathLike[str] | None = None,
    engine: str = "gluon",
    ctx: str = "cpu",
    batch_size: int = 64,
    thresholds: Mapping[str, float] | None = None,
    mpp: float | None = None,
    overlay_options: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    n_threads: int | None = None,
    progress: Callable[[WorklistRow], None] | None = None,
) -> list[WorklistRow]:
    """Screen slides with a model: overlay, GeoJSON, scores and a ranked worklist.

    Parameters
    ----------
    model : path or Predictor
        A model folder (loaded once with ``engine``, ``ctx``, ``batch_size``) or a loaded
        :class:`~prostate_fast.predict.Predictor`.
    slides : sequence of path
        Slide files; their file stems must be distinct (each gets ``out_dir/<stem>/``).
    out_dir : path
        Folder of the per-slide outputs (created).
    worklist : path, optional
        Where to write the worklist CSV (default ``out_dir/worklist.csv``).
    engine, ctx, batch_size, thresholds, mpp
        See :func:`~prostate_fast.predict.predict_slide`.
    overlay_options : mapping, optional
        Look of the overlays (alpha, mode, outline, colours, quality).
    overwrite : bool
        Replace existing outputs; otherwise ``FileExistsError`` before any slide is processed.
    n_threads : int, optional
        Threads for prediction and overlay (None = all cores).
    progress : callable, optional
        Called with each slide's row when it is done.

    Returns
    -------
    list of WorklistRow
        Ranked (the CSV's rows, in order). Failed slides are rows with ``status`` "error: ...",
        slides without tissue rows with ``status`` "no tissue" (see the module notes).

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
    """
    from .predict.core import Predictor, load_model, predict_slide

    paths = [Path(s) for s in slides]
    if not paths:
        raise ValueError("slides must name at least one slide file")
    stems: dict[str, Path] = {}
    for p in paths:
        if p.stem in stems:
            raise ValueError(f"slides {stems[p.stem]} and {p} have the same stem {p.stem!r}")
        stems[p.stem] = p
    out_dir = Path(out_dir)
    worklist = Path(worklist) if worklist is not None else out_dir / "worklist.csv"
    if not overwrite:
        for f in [worklist, *(f for p in paths for f in _outputs(out_dir, p).values())]:
            if f.exists():
                raise FileExistsError(
                    f"{f}: already exists; pass overwrite=True (--overwrite) to replace it"
                )
    check_writable(worklist.parent, output=worklist)  # a read-only or impossible folder fails
    check_writable(out_dir)  # now, not after the work
    threads = resolve_threads(n_threads)
    own = not isinstance(model, Predictor)
    predictor = (
        load_model(model, engine=engine, ctx=ctx, batch_size=batch_size, n_threads=threads)
        if own
        else model
    )
    rows = []
    try:
        for p in paths:
            t0 = time.perf_counter()
            try:
                scores = predict_slide(
                    predictor, p, n_threads=threads, mpp=mpp, thresholds=thresholds
                )
                row = screen_scored(
                    p, scores, out_dir, overlay_options=overlay_options, overwrite=overwrite,
                    n_threads=threads,
                )  # fmt: skip
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as exc:  # noqa: BLE001 - reported in the worklist
                if not isinstance(exc, OSError | ValueError) and not _is_domain(exc):
                    traceback.print_exc()
                row = WorklistRow(rank=0, slide=p.name, status=_one_line(exc), path=str(p))
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


def _is_domain(exc: BaseException) -> bool:
    from .errors import ProstateFastError

    return isinstance(exc, ProstateFastError)
