"""Batch screening: the per-slide pipeline over many slides, resumable, on a process pool or Dask.

:func:`run_batch` runs, for every slide, what :mod:`prostate_fast.screen` does for one (predict,
overlay TIFF + thumbnail, GeoJSON, scores, a worklist row) in worker processes: a local
``spawn`` process pool (``workers``), or a Dask cluster (``scheduler``: ``tcp://HOST:PORT``,
``local[:N]`` for a LocalCluster on 127.0.0.1, ``slurm:JOBS`` for dask-jobqueue's SLURMCluster).

Outputs, per slide, in ``out_dir/<slide stem>/``: ``<stem>-overlay.tif``,
``<stem>-overlay-thumb.png``, ``<stem>.geojson``, ``<stem>-scores.npz`` and ``manifest.json``
(input size, mtime and sha256; model files' sha256; settings; package version; every output
with its size and sha256; timings). A slide's folder is built as ``out_dir/.<stem>.part-XXXX/``
and renamed into place with its manifest inside, so a folder that exists is complete. At the end
(of every run, resumed or not) ``out_dir/worklist.csv`` (ranked as :func:`screen.rank_worklist`)
and ``out_dir/batch-summary.csv`` (one row per slide: done, skipped or error with its reason) are
written atomically.

Resuming: a slide is skipped when its manifest matches the slide (same path, size and mtime;
otherwise the sha256 is recomputed and compared), the model files, the settings and the package
version, and every listed output exists with its recorded size (and sha256 with ``verify``).
Anything else is redone. Leftover ``.part`` folders of a killed run are removed at start; a lock
file keeps two batches from writing one ``out_dir`` at once.

Failures: a slide that fails becomes an ``error`` row with a one-line reason; the others go on.
A worker that dies (a native crash, out of memory) breaks a process pool: the slides in flight
are retried one at a time in a fresh pool, so the culprit is found and reported.

Limits: only the slide file is hashed (not an MRXS/VMS companion folder). A killed driver stops
its pool workers with it (same process group), but not the workers of a Dask cluster: let their
tasks finish (or restart the cluster) before rerunning into the same ``out_dir``.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import hashlib
import json
import os
import re
import shutil
import socket
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from .. import __version__
from .._util import atomic_path, resolve_threads
from ..errors import ProstateFastError
from .executors import Progress, _init_worker, check_scheduler, run_dask, run_pool

__all__ = [
    "SLIDE_EXTENSIONS",
    "BatchResult",
    "SlideResult",
    "discover_slides",
    "read_manifest",
    "run_batch",
]

SLIDE_EXTENSIONS = (".svs", ".ndpi", ".tif", ".tiff", ".mrxs", ".scn", ".bif", ".vms", ".jpg",
                    ".png")  # fmt: skip
MANIFEST = "manifest.json"
MANIFEST_FORMAT = "prostate-fast batch manifest"
MANIFEST_VERSION = 1
SUMMARY = "batch-summary.csv"
WORKLIST = "worklist.csv"
LOCK = ".prostate-fast-batch.lock"
_PART = re.compile(r"^\..+\.part-[A-Za-z0-9_]+$")
_OUTPUT_KEYS = ("overlay", "thumbnail", "geojson", "scores")
_ROW_NUMBERS = ("n_tiles", "n_positive", "positive_share", "positive_area_mm2",
                "top_probability", "top10_mean", "score", "seconds")  # fmt: skip


@dataclass(frozen=True)
class SlideResult:
    """What happened to one slide.

    Attributes
    ----------
    slide, path : str
        Slide file name, and the slide file.
    status : str
        ``"done"`` (processed now), ``"skipped"`` (complete outputs found) or ``"error"``.
    reason : str
        One line saying why, for ``"error"`` ("" otherwise).
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
        """Number of slides per status (``done``, ``skipped``, ``error``)."""
        c = Counter(r.status for r in self.results)
        return {k: c.get(k, 0) for k in ("done", "skipped", "error")}

    @property
    def failed(self) -> list[SlideResult]:
        """The slides that failed."""
        return [r for r in self.results if r.status == "error"]


@dataclass(frozen=True)
class _Task:
    """Everything a worker needs for one slide (small and picklable)."""

    slide: str
    out_dir: str
    model_dir: str
    model: dict[str, Any]
    settings: dict[str, Any]
    options: dict[str, Any] = field(default_factory=dict)
    n_threads: int | None = None
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
            p for p in src.iterdir()
            if p.suffix.lower() in SLIDE_EXTENSIONS and not p.name.startswith(".") and p.is_file()
        )  # fmt: skip
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


# -- checksums and manifests ------------------------------------------------------------------
def _sha256(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()  # streamed in chunks


def _model_identity(model_dir: Path) -> tuple[dict[str, Any], dict[str, float]]:
    """Checksums of a model's files, and its thresholds (ModelError on a bad folder)."""
    from ..model import read_model_info

    info = read_model_info(model_dir)  # ModelError on a bad folder, before any worker starts
    files = {p.name: _sha256(p) for p in (model_dir / "model.json", info.symbol_file,
                                          info.params_file)}  # fmt: skip
    whole = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()
    return {"path": str(model_dir), "files": files, "sha256": whole}, dict(info.thresholds)


def _overlay_settings(options: Mapping[str, Any]) -> dict[str, Any]:
    """Overlay options with write_overlay's defaults filled in (the same look, the same key)."""
    import inspect

    from ..overlay.core import write_overlay

    params = inspect.signature(write_overlay).parameters
    keys = ("alpha", "mode", "outline", "colours", "quality", "compression", "thumbnail_size")
    out = {k: params[k].default for k in keys} | dict(options)
    out["colours"] = dict(out["colours"] or {})
    return out


def read_manifest(folder: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The ``manifest.json`` of a slide's output folder, or None when missing or unreadable."""
    try:
        m = json.loads((Path(folder) / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    ok = isinstance(m, dict) and m.get("format") == MANIFEST_FORMAT
    return m if ok and m.get("version") == MANIFEST_VERSION else None


def _complete(folder: Path, task: _Task, source: Mapping[str, Any] | None) -> dict | None:
    """The manifest of ``folder`` if its outputs are complete and match ``task`` (else None).

    ``source`` (size, sha256) compares the slide's content; without it, the slide's path, size
    and mtime must equal the recorded ones (the cheap check, no hashing). A damaged manifest
    means "not complete".
    """
    m = read_manifest(folder)
    try:
        want = (__version__, task.model["sha256"], task.settings)
        if m is None or (m["package_version"], m["model"]["sha256"], m["settings"]) != want:
            return None
        rec, outputs = m["source"], m["outputs"]
        if source is not None:
            if (rec["size"], rec["sha256"]) != (source["size"], source["sha256"]):
                return None
        else:
            st = os.stat(task.slide)
            if (rec["path"], rec["size"], rec["mtime_ns"]) != (
                task.slide, st.st_size, st.st_mtime_ns,
            ):  # fmt: skip
                return None
        if not outputs or not isinstance(m["row"], dict):
            return None
        for out in outputs.values():
            name = str(out["file"])
            p = folder / name  # a plain file name, present, with its recorded size (and sha256)
            if not name or Path(name).name != name or not p.is_file():
                return None
            if p.stat().st_size != out["size"] or (task.verify and _sha256(p) != out["sha256"]):
                return None
    except (KeyError, TypeError, AttributeError, OSError):
        return None
    return m


def _row_from_manifest(m: Mapping[str, Any], folder: Path, slide: Path) -> Any:
    from ..screen import WorklistRow, scored_status

    files = {k: str(folder / v["file"]) for k, v in m["outputs"].items()}
    nums = {k: m["row"][k] for k in _ROW_NUMBERS if k in m["row"]}
    status = scored_status(int(nums.get("n_tiles", 1)))
    return WorklistRow(rank=0, slide=slide.name, status=status, path=str(slide),
                       **{k: files.get(k, "") for k in _OUTPUT_KEYS}, **nums)  # fmt: skip


# -- the per-slide work (runs in a worker process) --------------------------------------------
_PREDICTOR: dict[tuple, Any] = {}


def _worker_threads(n_threads: int | None) -> int:
    if n_threads is not None:
        return n_threads
    with contextlib.suppress(KeyError, ValueError):  # Dask's nanny sets OMP_NUM_THREADS=1
        return max(1, int(os.environ["OMP_NUM_THREADS"]))
    return resolve_threads(None)


def _predictor(task: _Task, threads: int) -> Any:
    """The model of ``task``, loaded once per worker process (one model kept at a time)."""
    from ..predict.core import load_model

    o = task.settings
    key = (task.model_dir, task.model["sha256"], o["engine"], o["ctx"], o["batch_size"], threads)
    if key not in _PREDICTOR:
        for old in _PREDICTOR.values():
            old.close()
        _PREDICTOR.clear()
        _PREDICTOR[key] = load_model(task.model_dir, engine=o["engine"], ctx=o["ctx"],
                                     batch_size=o["batch_size"], n_threads=threads)  # fmt: skip
    return _PREDICTOR[key]


def _error(task: _Task, exc: BaseException, seconds: float = 0.0) -> SlideResult:
    from ..screen import WorklistRow, _one_line

    status = _one_line(exc)  # "error: <one line>", as screen's worklist rows say it
    slide = Path(task.slide)
    row = WorklistRow(rank=0, slide=slide.name, status=status, path=str(slide), seconds=seconds)
    return SlideResult(slide.name, str(slide), "error", status.removeprefix("error: "), "",
                       seconds, row)  # fmt: skip


def _install(folder: Path, final: Path, part: Path) -> None:
    """Move a finished slide folder into place; an older one goes into ``part`` (then removed)."""
    if final.exists() or final.is_symlink():
        os.replace(final, part / "previous")
    os.replace(folder, final)


def _process_slide(task: _Task) -> SlideResult:
    """Process one slide (or find it complete); never raises for a slide's own failure."""
    from ..errors import ProstateFastError as DomainError

    t0 = time.perf_counter()
    slide = Path(task.slide)
    out_dir = Path(task.out_dir)
    final = out_dir / slide.stem
    part: Path | None = None
    try:
        st = slide.stat()
        source = {"path": str(slide), "name": slide.name, "size": st.st_size,
                  "mtime_ns": st.st_mtime_ns, "sha256": _sha256(slide)}  # fmt: skip
        t_hash = time.perf_counter() - t0
        m = None if task.force else _complete(final, task, source)
        if m is not None:
            rec = m["source"]
            if (rec.get("path"), rec.get("mtime_ns")) != (source["path"], source["mtime_ns"]):
                m["source"] = source  # same content, touched or moved: no rehash next time
                with atomic_path(final / MANIFEST, overwrite=True) as tmp:
                    tmp.write_text(json.dumps(m, indent=1) + "\n", encoding="utf-8")
            row = _row_from_manifest(m, final, slide)
            return SlideResult(slide.name, str(slide), "skipped", "", str(final),
                               time.perf_counter() - t0, row)  # fmt: skip
        from ..predict.core import predict_slide
        from ..screen import screen_scored
        from ..slide import open_slide

        threads = _worker_threads(task.n_threads)
        if "mxnet" not in sys.modules:  # OMP_NUM_THREADS before libgomp loads (MXNET-NOTES.md)
            _init_worker(threads)
        with open_slide(slide, n_threads=threads):
            pass  # a damaged slide fails here, before the model loads (seconds)
        predictor = _predictor(task, threads)
        t1 = time.perf_counter()
        scores = predict_slide(predictor, slide, n_threads=threads, mpp=task.options.get("mpp"),
                               thresholds=task.options.get("thresholds"))  # fmt: skip
        t2 = time.perf_counter()
        part = Path(tempfile.mkdtemp(prefix=f".{slide.stem}.part-", dir=out_dir))
        row = screen_scored(slide, scores, part, n_threads=threads,
                            overlay_options=task.options.get("overlay"))  # fmt: skip
        t3 = time.perf_counter()
        folder = part / slide.stem
        outputs = {}
        for key in _OUTPUT_KEYS:
            if getattr(row, key):
                p = Path(getattr(row, key))
                outputs[key] = {"file": p.name, "size": p.stat().st_size, "sha256": _sha256(p)}
        seconds = time.perf_counter() - t0
        row = replace(
            row, seconds=seconds, **{k: str(final / v["file"]) for k, v in outputs.items()}
        )
        manifest = {
            "format": MANIFEST_FORMAT,
            "version": MANIFEST_VERSION,
            "package_version": __version__,
            "source": source,
            "model": task.model,
            "settings": task.settings,
            "outputs": outputs,
            "row": {k: getattr(row, k) for k in _ROW_NUMBERS},
            "timings": {
                "checksum": t_hash,
                "load_model": t1 - t0 - t_hash,
                "predict": t2 - t1,
                "outputs": t3 - t2,
                "total": seconds,
                "predict_steps": dict(scores.timings),
            },
            "n_threads": threads,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        (folder / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
        _install(folder, final, part)
        return SlideResult(slide.name, str(slide), "done", "", str(final), seconds, row)
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:  # noqa: BLE001 - reported as the slide's row
        if not isinstance(exc, OSError | ValueError | DomainError):
            traceback.print_exc()
        return _error(task, exc, time.perf_counter() - t0)
    finally:
        if part is not None:
            shutil.rmtree(part, ignore_errors=True)


# -- the driver -------------------------------------------------------------------------------
@contextlib.contextmanager
def _locked(out_dir: Path) -> Iterator[None]:
    with open(out_dir / LOCK, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ProstateFastError(f"{out_dir}: another prostate-fast batch is writing there "
                                    f"(it holds {LOCK})") from None  # fmt: skip
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _clean_stale(out_dir: Path) -> None:
    """Remove what killed runs left: ``.<stem>.part-*`` folders and our CSVs' temporary files."""
    for p in out_dir.iterdir():
        if _PART.match(p.name) and p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        elif p.is_file() and p.name.endswith(".part") and p.name.startswith((f".{SUMMARY}.",
                                                                            f".{WORKLIST}.")):  # fmt: skip
            p.unlink(missing_ok=True)


def _write_summary(results: Sequence[SlideResult], path: Path) -> None:
    names = ["slide", "status", "reason", "seconds", "folder", "path"]
    with (
        atomic_path(path, overwrite=True) as tmp,
        open(tmp, "w", newline="", encoding="utf-8") as fh,
    ):
        w = csv.DictWriter(fh, fieldnames=names, lineterminator="\n", extrasaction="ignore")
        w.writeheader()
        for r in results:
            w.writerow({**asdict(r), "seconds": f"{r.seconds:.3f}"})


def run_batch(
    slides: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    model: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    workers: int = 1,
    scheduler: Any = None,
    engine: str = "gluon",
    ctx: str = "cpu",
    batch_size: int = 64,
    thresholds: Mapping[str, float] | None = None,
    mpp: float | None = None,
    overlay_options: Mapping[str, Any] | None = None,
    n_threads: int | None = None,
    force: bool = False,
    verify: bool = False,
    progress: bool | Callable[[SlideResult], None] = False,
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
    engine, ctx, batch_size, thresholds, mpp
        See :func:`~prostate_fast.predict.predict_slide`.
    overlay_options : mapping, optional
        Look of the overlays (alpha, mode, outline, colours, quality).
    n_threads : int, optional
        Threads per slide. Default: the cores divided by ``workers`` for the pool; for Dask, the
        worker's ``OMP_NUM_THREADS`` (1 under Dask's nanny) or else its cores.
    force : bool
        Redo every slide, even those whose outputs are complete.
    verify : bool
        Before skipping a slide, hash its file and its outputs (default: trust an unchanged
        path, size and mtime, and the outputs' sizes).
    progress : bool or callable
        True: a progress bar on stderr; a callable is called with each :class:`SlideResult`.

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

    Notes
    -----
    Outputs do not depend on the executor or the thread counts: the pool and Dask give the same
    overlay, thumbnail and GeoJSON bytes (the scores ``.npz`` differ only in their timings and
    zip timestamps). Cost per slide: as :func:`~prostate_fast.screen.screen_slides`, plus one
    sha256 pass over the slide (about 1 s per GB) and over the outputs; each worker pays the
    model load (about 1 s) once. Throughput is best with ``workers * n_threads`` = cores.
    """
    from ..screen import rank_worklist, write_worklist

    start = time.perf_counter()
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ValueError(f"workers must be a non-negative integer, got {workers!r}")
    if n_threads is not None:
        n_threads = resolve_threads(n_threads)
    if scheduler is not None:
        check_scheduler(scheduler)
    if isinstance(slides, str | os.PathLike):
        paths = discover_slides(slides)
    else:
        paths = [Path(s) for s in slides]
    if not paths:
        raise ValueError("slides must name at least one slide file")
    paths = [p.absolute() for p in paths]
    stems: dict[str, Path] = {}
    for p in paths:
        if p.stem in stems:
            raise ValueError(f"slides {stems[p.stem]} and {p} have the same stem {p.stem!r}")
        stems[p.stem] = p
    model_dir = Path(model).absolute()
    ident, model_thresholds = _model_identity(model_dir)
    overlay = dict(overlay_options or {})
    settings = json.loads(json.dumps({  # the effective values: defaults spelt out
        "engine": engine, "ctx": str(ctx), "batch_size": int(batch_size), "mpp": mpp,
        "thresholds": {**model_thresholds, **dict(thresholds or {})},
        "overlay": _overlay_settings(overlay),
    }, sort_keys=True))  # fmt: skip
    if scheduler is None and n_threads is None and workers > 0:
        n_threads = max(1, resolve_threads(None) // workers)
    out = Path(out_dir).absolute()
    out.mkdir(parents=True, exist_ok=True)
    options = {"mpp": mpp, "thresholds": dict(thresholds or {}), "overlay": overlay}
    tasks = [_Task(str(p), str(out), str(model_dir), ident, settings, options, n_threads,
                   verify, force) for p in paths]  # fmt: skip
    report = Progress(len(tasks)) if progress is True else progress or None
    results: dict[str, SlideResult] = {}

    def on_result(r: SlideResult) -> None:
        results[r.path] = r
        if report is not None:
            report(r)

    def on_error(t: _Task, exc: BaseException) -> None:
        on_result(_error(t, exc))

    with _locked(out):
        _clean_stale(out)
        todo = []
        for t in tasks:
            m = None if (force or verify) else _complete(out / Path(t.slide).stem, t, None)
            if m is None:
                todo.append(t)
            else:
                folder = out / Path(t.slide).stem
                row = _row_from_manifest(m, folder, Path(t.slide))
                on_result(SlideResult(row.slide, t.slide, "skipped", "", str(folder), 0.0, row))
        if todo and scheduler is not None:
            run_dask(
                todo, _process_slide, on_result, on_error, scheduler=scheduler, workers=workers
            )
        elif todo and workers == 0:
            for t in todo:
                on_result(_process_slide(t))
        elif todo:
            run_pool(todo, _process_slide, on_result, on_error, workers=min(workers, len(todo)),
                     n_threads=n_threads)  # fmt: skip
        lost = RuntimeError("no result came back from the executor")
        ordered = tuple(results.get(t.slide) or _error(t, lost) for t in tasks)
        summary, worklist = out / SUMMARY, out / WORKLIST
        _write_summary(ordered, summary)
        write_worklist(rank_worklist(r.row for r in ordered), worklist, overwrite=True)
    return BatchResult(ordered, summary, worklist, time.perf_counter() - start)
