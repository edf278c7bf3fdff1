"""Batch screening: the per-slide pipeline over many slides, resumable, on a process pool or Dask.

:func:`run_batch` runs, for every slide, what :mod:`prostate_fast.screen` does for one (predict,
overlay TIFF + thumbnail, GeoJSON, scores, a worklist row) in worker processes: a local
``spawn`` process pool (``workers``), or a Dask cluster (``scheduler``: ``tcp://HOST:PORT``,
``local[:N]`` for a LocalCluster on 127.0.0.1, ``slurm:JOBS`` for dask-jobqueue's SLURMCluster).

Options: one :class:`~prostate_fast.screen.ScreeningOptions` (engine, thresholds, scale, the
overlays' look, threads per slide), as for :func:`~prostate_fast.screen.screen_slides`. Each
slide is opened once, in its worker, for prediction and overlay.

Outputs, per slide, in ``out_dir/<slide stem>/`` (``<stem>-slide/`` when the stem is the name of
one of the batch's own files, see :func:`~prostate_fast.screen.folder_name`): ``<stem>-overlay.tif``,
``<stem>-overlay-thumb.png``, ``<stem>.geojson``, ``<stem>-scores.npz`` and ``manifest.json``
(:mod:`prostate_fast.batch.manifest`: input size, mtime and sha256; model files' sha256;
settings; package version; every output with its size and sha256; timings). A slide's folder is built as ``out_dir/.<stem>.part-XXXX/``
and renamed into place with its manifest inside, so a folder that exists is complete. At the end
(of every run, resumed or not) ``out_dir/worklist.csv`` (ranked as :func:`screen.rank_worklist`)
and ``out_dir/batch-summary.csv`` (one row per slide: done, skipped or error with its reason) are
written atomically.

Resuming: a slide is skipped when its manifest matches the slide (same path, size and mtime;
otherwise the sha256 is recomputed and compared), the model files, the settings and the package
version, and every listed output exists with its recorded size (and sha256 with ``verify``).
Anything else is redone. Leftover ``.part`` folders of a killed run are removed at start; a lock
file keeps two batches from writing one ``out_dir`` at once, and a second one (held by every pool
worker) makes a new run wait until the workers of a killed one have exited. An existing
``out_dir/<stem>`` that is not a slide folder of a batch (no ``manifest.json``) is never replaced:
that slide fails instead.

Stopping: the pool's workers die with the driver, even when it is killed with SIGKILL (Linux:
``PR_SET_PDEATHSIG``). SIGTERM (``timeout``, Slurm) makes the driver kill its workers, wait for
them, release the lock and exit with status 143; the slides finished so far are kept, and a
rerun resumes.

Failures: a slide that fails becomes an ``error`` row with a one-line reason; the others go on.
A worker that dies (a native crash, out of memory) breaks a process pool: the slides in flight
are retried one at a time in a fresh pool, so the culprit is found and reported.

Limits: only the slide file is hashed (not an MRXS/VMS companion folder). A killed driver stops
its pool workers with it, but not the workers of a Dask cluster: let their tasks finish (or
restart the cluster) before rerunning into the same ``out_dir``.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import os
import re
import shutil
import socket
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .._outputs import register_csv_header
from .._util import atomic_path, csv_cell, resolve_threads
from ..errors import ProstateFastError
from ..screen import WORKLIST, ScreeningOptions, folder_name
from .executors import (
    _init_worker,
    check_scheduler,
    run_dask,
    run_pool,
    sigterm_exits,
    wait_for_workers,
)
from .manifest import (
    OUTPUT_KEYS,
    ROW_NUMBERS,
    complete,
    model_identity,
    new_manifest,
    row_from_manifest,
    settings,
    sha256,
    write_manifest,
)

__all__ = ["SLIDE_EXTENSIONS", "BatchResult", "SlideResult", "discover_slides", "run_batch"]

SLIDE_EXTENSIONS = (
    ".svs",
    ".ndpi",
    ".tif",
    ".tiff",
    ".mrxs",
    ".scn",
    ".bif",
    ".vms",
    ".jpg",
    ".png",
)
SUMMARY = "batch-summary.csv"
LOCK = ".prostate-fast-batch.lock"
#: :attr:`SlideResult.status` of a slide outside the model's training domain.
NEEDS_READ = "needs manual read"
WORKERS_LOCK = ".prostate-fast-batch.workers.lock"  # shared by the pool's workers while they live
#: The batch's own file names in ``out_dir``: no slide folder takes one (see ``folder_name``).
RESERVED = (SUMMARY, WORKLIST, LOCK, WORKERS_LOCK)
_PART = re.compile(r"^\..+\.part-[A-Za-z0-9_]+$")


@dataclass(frozen=True)
class SlideResult:
    """What happened to one slide.

    Attributes
    ----------
    slide, path : str
        Slide file name, and the slide file.
    status : str
        ``"done"`` (processed now), ``"skipped"`` (complete outputs found), ``"error"`` or
        ``"needs manual read"`` (outside the model's training domain: not scored, no outputs).
    reason : str
        One line saying why, for ``"error"`` and ``"needs manual read"`` ("" otherwise).
    folder : str
        The slide's output folder ("" for errors).
    seconds : float
        Wall time spent on the slide in this run.
    row : WorklistRow
        The slide's (unranked) worklist row.
    """

    slide: str
    path: str
    status: str
    reason: str = ""
    folder: str = ""
    seconds: float = 0.0
    row: Any = None


@dataclass(frozen=True)
class BatchResult:
    """Results of :func:`run_batch`: one :class:`SlideResult` per slide, in input order."""

    results: tuple[SlideResult, ...]
    summary: Path
    worklist: Path
    seconds: float

    @property
    def counts(self) -> dict[str, int]:
        """Number of slides per status: ``done``, ``skipped``, ``error``, and ``needs manual read``
        when a slide lies outside the model's domain."""
        c = Counter(r.status for r in self.results)
        keys = (
            ("done", "skipped", "error", NEEDS_READ)
            if c[NEEDS_READ]
            else ("done", "skipped", "error")
        )
        return {k: c.get(k, 0) for k in keys}

    @property
    def failed(self) -> list[SlideResult]:
        """The slides that failed or need a manual read (outside the model's domain)."""
        return [r for r in self.results if r.status in ("error", NEEDS_READ)]


@dataclass(frozen=True)
class _Task:
    """Everything a worker needs for one slide (small and picklable).

    ``options.n_threads`` is the threads per slide (None: the worker's, see
    :func:`_worker_threads`); ``settings`` is what the manifest records of ``options``.
    """

    slide: str
    out_dir: str
    model_dir: str
    model: dict[str, Any]
    settings: dict[str, Any]
    options: ScreeningOptions
    verify: bool = False
    force: bool = False


# -- discovery --------------------------------------------------------------------------------
def discover_slides(source: str | os.PathLike[str]) -> list[Path]:
    """Slide files named by a folder, a list file or a single slide.

    Parameters
    ----------
    source : path
        A folder (its files with a slide extension, see :data:`SLIDE_EXTENSIONS`, case
        insensitive, hidden files excluded, sorted by name; not recursive), a text file with one
        slide path per line (blank lines and ``#`` comments ignored; relative paths are relative
        to the list file's folder), or one slide file.

    Returns
    -------
    list of pathlib.Path

    Raises
    ------
    FileNotFoundError
        ``source`` does not exist.
    ValueError
        No slide found.
    """
    src = Path(source)
    if src.is_dir():
        paths = sorted(
            p
            for p in src.iterdir()
            if p.suffix.lower() in SLIDE_EXTENSIONS and not p.name.startswith(".") and p.is_file()
        )
    elif src.is_file() and src.suffix.lower() in SLIDE_EXTENSIONS:
        paths = [src]
    elif src.is_file():
        paths = []
        for line in src.read_text(encoding="utf-8").splitlines():
            text = line.strip()
            if text and not text.startswith("#"):
                p = Path(text).expanduser()
                paths.append(p if p.is_absolute() else src.parent / p)
    else:
        raise FileNotFoundError(2, "no such slide folder or list file", str(src))
    if not paths:
        raise ValueError(f"{src}: no slide files (extensions {' '.join(SLIDE_EXTENSIONS)})")
    return paths


# -- the per-slide work (runs in a worker process) --------------------------------------------
_PREDICTOR: dict[tuple, Any] = {}


def _worker_threads(n_threads: int | None) -> int:
    if n_threads is not None:
        return n_threads
    with contextlib.suppress(KeyError, ValueError):  # Dask's nanny sets OMP_NUM_THREADS=1
        return max(1, int(os.environ["OMP_NUM_THREADS"]))
    return resolve_threads(None)


def _predictor(task: _Task, options: ScreeningOptions) -> Any:
    """The model of ``task``, loaded once per worker process (one model kept at a time)."""
    o = options
    key = (
        task.model_dir,
        task.model["sha256"],
        o.engine,
        o.precision,
        o.ctx,
        o.batch_size,
        o.n_threads,
    )
    if key not in _PREDICTOR:
        for old in _PREDICTOR.values():
            old.close()
        _PREDICTOR.clear()
        _PREDICTOR[key] = options.load_model(task.model_dir)
    return _PREDICTOR[key]


def _error(task: _Task, exc: BaseException, seconds: float = 0.0) -> SlideResult:
    from ..screen import error_row

    slide = Path(task.slide)
    row = error_row(slide, exc, seconds)  # "error: <one line>" or "needs manual read: <reason>"
    kind, _, reason = row.status.partition(": ")
    return SlideResult(slide.name, str(slide), kind, reason, "", seconds, row)


def _final(task: _Task) -> Path:
    """The slide's output folder, ``out_dir/<stem>`` (see :data:`RESERVED`)."""
    return Path(task.out_dir) / folder_name(task.slide, RESERVED)


def _install(folder: Path, final: Path, part: Path) -> None:
    """Move a finished slide folder into place; an older one goes into ``part`` (then removed).

    Only a slide folder of a batch (a directory with ``manifest.json``) is replaced: anything
    else at ``final`` is the user's, and the slide fails instead.
    """
    if final.is_symlink() or (final.exists() and not (final / "manifest.json").is_file()):
        raise ProstateFastError(
            f"{final}: exists and is not a slide folder of a batch (no manifest.json); "
            "move it away or write to another folder"
        )
    if final.exists():
        os.replace(final, part / "previous")
    os.replace(folder, final)


def _process_slide(task: _Task) -> SlideResult:
    """Process one slide (or find it complete); never raises for a slide's own failure."""
    t0 = time.perf_counter()
    slide = Path(task.slide)
    final = _final(task)
    try:
        st = slide.stat()
        source = {
            "path": str(slide),
            "name": slide.name,
            "size": st.st_size,
            "mtime_ns": st.st_mtime_ns,
            "sha256": sha256(slide),
        }
        t_hash = time.perf_counter() - t0
        m = None if task.force else complete(final, task, source)
        if m is not None:
            return _skipped(m, final, slide, source, time.perf_counter() - t0)
        return _screen(task, final, source, t0, t_hash)
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:  # noqa: BLE001 - reported as the slide's row
        if not isinstance(exc, OSError | ValueError | ProstateFastError):
            traceback.print_exc()
        return _error(task, exc, time.perf_counter() - t0)


def _skipped(m: dict, final: Path, slide: Path, source: dict, seconds: float) -> SlideResult:
    """The result of a slide whose complete outputs were found (its manifest updated if moved)."""
    rec = m["source"]
    if (rec.get("path"), rec.get("mtime_ns")) != (source["path"], source["mtime_ns"]):
        m["source"] = source  # same content, touched or moved: no rehash next time
        write_manifest(final, m, atomic=True)
    row = row_from_manifest(m, final, slide)
    return SlideResult(slide.name, str(slide), "skipped", "", str(final), seconds, row)


def _screen(task: _Task, final: Path, source: dict, t0: float, t_hash: float) -> SlideResult:
    """Predict and write one slide (opened once) in a ``.part`` folder, then move it to ``final``."""
    from ..predict.core import predict_slide
    from ..screen import screen_scored
    from ..slide import open_slide

    slide = Path(task.slide)
    threads = _worker_threads(task.options.n_threads)
    if "mxnet" not in sys.modules:  # OMP_NUM_THREADS before libgomp loads (MXNET-NOTES.md)
        _init_worker(threads)
    options = replace(task.options, n_threads=threads)
    with open_slide(slide, n_threads=threads) as sl:  # a damaged slide fails here, before the model
        predictor = _predictor(task, options)
        t1 = time.perf_counter()
        scores = predict_slide(predictor, sl, **options.predict_kwargs(), n_threads=threads)
        t2 = time.perf_counter()
        part = Path(tempfile.mkdtemp(prefix=f".{slide.stem}.part-", dir=task.out_dir))
        try:
            row = screen_scored(sl, scores, part, options)
            t3 = time.perf_counter()
            steps = {"checksum": t_hash, "load_model": t1 - t0 - t_hash, "predict": t2 - t1}
            steps |= {"outputs": t3 - t2, "predict_steps": dict(scores.timings)}
            return _install_slide(task, part, final, source, row, t0, steps, threads)
        finally:
            shutil.rmtree(part, ignore_errors=True)


def _install_slide(
    task: _Task,
    part: Path,
    final: Path,
    source: dict,
    row: Any,
    t0: float,
    steps: dict[str, Any],
    threads: int,
) -> SlideResult:
    """Write the manifest of the slide folder built in ``part`` and move it to ``final``.

    ``steps``: the seconds of each step so far (the manifest's ``timings`` but the total).
    """
    slide = Path(task.slide)
    folder = Path(row.scores).parent  # part/<folder name>, as screen_scored made it
    outputs = {}
    for key in OUTPUT_KEYS:
        if getattr(row, key):
            p = Path(getattr(row, key))
            outputs[key] = {"file": p.name, "size": p.stat().st_size, "sha256": sha256(p)}
    seconds = time.perf_counter() - t0
    files = {k: str(final / v["file"]) for k, v in outputs.items()}
    row = replace(row, seconds=seconds, **files)
    predict_steps = steps.pop("predict_steps")
    timings = {**steps, "total": seconds, "predict_steps": predict_steps}
    manifest = new_manifest(
        source=source,
        model=task.model,
        settings=task.settings,
        outputs=outputs,
        row={k: getattr(row, k) for k in ROW_NUMBERS},
        timings=timings,
        n_threads=threads,
        host=socket.gethostname(),
        pid=os.getpid(),
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )
    write_manifest(folder, manifest)
    _install(folder, final, part)
    return SlideResult(slide.name, str(slide), "done", "", str(final), seconds, row)


# -- the driver -------------------------------------------------------------------------------
@contextlib.contextmanager
def _locked(out_dir: Path) -> Iterator[None]:
    with open(out_dir / LOCK, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ProstateFastError(
                f"{out_dir}: another prostate-fast batch is writing there (it holds {LOCK})"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _clean_stale(out_dir: Path) -> None:
    """Remove what killed runs left: ``.<stem>.part-*`` folders and our CSVs' temporary files."""
    for p in out_dir.iterdir():
        if _PART.match(p.name) and p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        elif p.is_file() and p.name.endswith(".part"):
            if p.name.startswith((f".{SUMMARY}.", f".{WORKLIST}.")):
                p.unlink(missing_ok=True)


_SUMMARY_NAMES = ["slide", "status", "reason", "seconds", "folder", "path"]
register_csv_header(",".join(_SUMMARY_NAMES))  # --overwrite may replace it


def _write_summary(results: Sequence[SlideResult], path: Path) -> None:
    names = _SUMMARY_NAMES
    with (
        atomic_path(path, overwrite=True) as tmp,
        open(tmp, "w", newline="", encoding="utf-8") as fh,
    ):
        w = csv.DictWriter(fh, fieldnames=names, lineterminator="\n", extrasaction="ignore")
        w.writeheader()
        for r in results:
            cells = {k: csv_cell(getattr(r, k)) for k in names}  # names, paths, messages
            w.writerow({**cells, "seconds": f"{r.seconds:.3f}"})


def run_batch(
    slides: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    model: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    options: ScreeningOptions | None = None,
    *,
    workers: int = 1,
    scheduler: Any = None,
    force: bool = False,
    verify: bool = False,
    progress: Callable[[SlideResult], None] | None = None,
) -> BatchResult:
    """Screen many slides into ``out_dir``, resumably, on a process pool or a Dask cluster.

    Parameters
    ----------
    slides : path or sequence of path
        A folder, a list file or a slide (see :func:`discover_slides`), or the slide files.
        Their stems must be distinct (each gets ``out_dir/<stem>/``).
    model : path
        Model folder (loaded once per worker process).
    out_dir : path
        Output folder (created); see the module notes for its content.
    workers : int
        Worker processes of the local pool (0: run in this process, for debugging); with
        ``scheduler="local"``, the LocalCluster's worker count.
    scheduler : str or distributed.Client, optional
        None: the local pool. ``"tcp://HOST:PORT"``: an existing Dask scheduler (its workers must
        see the slides, the model and ``out_dir`` at the same paths). ``"local"`` or
        ``"local:N"``: a LocalCluster on 127.0.0.1. ``"slurm:JOBS"``: a dask-jobqueue
        SLURMCluster configured by the dask config (``jobqueue.slurm``), scaled to JOBS jobs.
    options : ScreeningOptions, optional
        Engine, thresholds, scale, the overlays' look (default: ``ScreeningOptions()``), and
        ``n_threads``, the threads per slide. Default threads: the cores divided by ``workers``
        for the pool; for Dask, the worker's ``OMP_NUM_THREADS`` (1 under Dask's nanny) or else
        its cores. The manifest records the options that change an output.
    force : bool
        Redo every slide, even those whose outputs are complete.
    verify : bool
        Before skipping a slide, hash its file and its outputs (default: trust an unchanged
        path, size and mtime, and the outputs' sizes).
    progress : callable, optional
        Called with each :class:`SlideResult` as it completes (the CLI passes
        :class:`~prostate_fast.batch.executors.Progress`, its progress bar).

    Returns
    -------
    BatchResult
        Per-slide results in input order, and the summary and worklist CSVs.

    Raises
    ------
    ValueError
        No slides, two slides with the same stem, a bad ``workers`` or ``scheduler``.
    FileNotFoundError
        ``slides`` does not exist.
    ModelError
        A bad model folder (checked before any slide starts).
    ProstateFastError
        Another batch is writing into ``out_dir``.
    SystemExit
        Status 143 on SIGTERM (in the main thread, unless a SIGTERM handler is installed): the
        pool's workers are killed and waited for, and the lock released, first.

    Notes
    -----
    Outputs do not depend on the executor or the thread counts: the pool and Dask give the same
    overlay, thumbnail and GeoJSON bytes (the scores ``.npz`` differ only in their timings and
    zip timestamps). Cost per slide: as :func:`~prostate_fast.screen.screen_slides`, plus one
    sha256 pass over the slide (about 1 s per GB) and over the outputs; each worker pays the
    model load (about 1 s) once. Throughput is best with ``workers * n_threads`` = cores.
    """
    from ..screen import distinct_stems, rank_worklist, write_worklist

    start = time.perf_counter()
    options = options or ScreeningOptions()
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ValueError(f"workers must be a non-negative integer, got {workers!r}")
    if scheduler is not None:
        check_scheduler(scheduler)
    if isinstance(slides, str | os.PathLike):
        paths = discover_slides(slides)
    else:
        paths = [Path(s) for s in slides]
    if not paths:
        raise ValueError("slides must name at least one slide file")
    paths = [p.absolute() for p in paths]
    distinct_stems(paths, RESERVED)
    model_dir = Path(model).absolute()
    ident, model_thresholds = model_identity(model_dir)
    recorded = settings(options, model_thresholds)
    if options.n_threads is not None:  # 0: every core, as for the other stages
        options = replace(options, n_threads=resolve_threads(options.n_threads))
    if scheduler is None and options.n_threads is None and workers > 0:
        options = replace(options, n_threads=max(1, resolve_threads(None) // workers))
    out = Path(out_dir).absolute()
    out.mkdir(parents=True, exist_ok=True)
    tasks = [
        _Task(str(p), str(out), str(model_dir), ident, recorded, options, verify, force)
        for p in paths
    ]
    with _locked(out), sigterm_exits():
        if not wait_for_workers(out / WORKERS_LOCK):
            raise ProstateFastError(
                f"{out}: worker processes of an earlier batch still run (they hold {WORKERS_LOCK})"
            )
        _clean_stale(out)
        results = _run_tasks(tasks, out, scheduler, workers, progress)
        summary, worklist = out / SUMMARY, out / WORKLIST
        _write_summary(results, summary)
        write_worklist(rank_worklist(r.row for r in results), worklist, overwrite=True)
    return BatchResult(results, summary, worklist, time.perf_counter() - start)


def _run_tasks(
    tasks: Sequence[_Task],
    out: Path,
    scheduler: Any,
    workers: int,
    progress: Callable[[SlideResult], None] | None,
) -> tuple[SlideResult, ...]:
    """Each task's result in task order: the complete ones skipped here, the rest executed."""
    results: dict[str, SlideResult] = {}

    def on_result(r: SlideResult) -> None:
        results[r.path] = r
        if progress is not None:
            progress(r)

    def on_error(t: _Task, exc: BaseException) -> None:
        on_result(_error(t, exc))

    todo = []
    for t in tasks:
        folder = _final(t)
        m = None if (t.force or t.verify) else complete(folder, t, None)
        if m is None:
            todo.append(t)
        else:
            row = row_from_manifest(m, folder, Path(t.slide))
            on_result(SlideResult(row.slide, t.slide, "skipped", "", str(folder), 0.0, row))
    if todo and scheduler is not None:
        run_dask(todo, _process_slide, on_result, on_error, scheduler=scheduler, workers=workers)
    elif todo and workers == 0:
        for t in todo:
            on_result(_process_slide(t))
    elif todo:
        n_threads = tasks[0].options.n_threads
        pool = {"workers": min(workers, len(todo)), "n_threads": n_threads}
        pool["worker_lock"] = out / WORKERS_LOCK
        run_pool(todo, _process_slide, on_result, on_error, **pool)
    lost = RuntimeError("no result came back from the executor")
    return tuple(results.get(t.slide) or _error(t, lost) for t in tasks)
