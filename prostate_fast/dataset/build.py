"""Training set from label tables: white cleaning, class balance, split by slide, MXNet RecordIO.

:func:`build_dataset` turns the label tables of many slides (:mod:`prostate_fast.label`) into the
training set the 2018 study built by hand, packed so that ``mx.io.ImageRecordIter`` streams it:

1. **Labelled tiles** of every table (tiles labelled < 0, if a table has such, are left out).
   Tables must carry the same set of classes (their order may differ: labels are mapped to the
   first table's order); tables that share no class, or differ in any class, are refused: merging
   e.g. ``cancer`` with ``gleason4`` is a study decision, not a packing one. Every slide file must
   exist before anything is written.
2. **Split by slide, never by tile**: explicit lists, fractions of the slides (default 80/20,
   shuffled with the seed, every split at least one slide), or k folds; with a slide-to-patient
   mapping the unit is the patient, so one patient never lands in two splits.
3. **White cleaning**, per split: tiles whose white fraction exceeds ``white_threshold`` are
   dropped, except a seeded random ``white_keep`` share of them (2 %, as the study did) so the
   network still sees glass.
4. **Class balance** by seeded undersampling, in the ``balance_splits`` (default: train only, so
   the validation and test sets keep the slides' own mix and the ratio experiments of the study,
   30:70, 50:50, 70:30 and all, are compared on the same test set). Counts are within one tile of
   the ratio. ``"all"`` keeps every tile; ``class_weights=True`` then writes inverse-frequency
   weights of the train split.
5. **RecordIO** per split (``.rec`` + ``.idx`` + ``.lst``) and a side-car ``.csv`` mapping record
   id to slide and level-0 coordinates, tiles read straight from the slides by several threads
   (see :mod:`.records`), then ``dataset.json`` (the contract training codes against) and
   ``summary.json``.

In code the steps are three: **plan** (:func:`~.plan.make_plan`: steps 1-4, nothing read from the
slides yet), **pack** (step 5's records, :func:`~.records.pack_split` per split) and **metadata**
(``dataset.json`` and ``summary.json``, :class:`~.summary.DatasetSummary`).

Everything is built in a hidden folder beside ``out_dir`` and renamed into place when complete, so
an error leaves nothing behind. The same inputs and seed give byte-identical files, whatever the
thread count. :func:`record_iter` returns the ImageRecordIter training reads with.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from .._outputs import (
    check_replaceable,
    clean_stale,
    command_inputs,
    output_lock,
    remove_output,
    temp_path,
)
from .._util import check_parent, disk_error_naming, resolve_threads
from ..errors import DatasetError
from ..stain import METHODS
from .plan import BuildOptions, DatasetPlan, make_plan, origins
from .reading import FORMAT, VERSION, TableSource
from .records import PackedSlide, pack_split
from .selection import check_build_args
from .summary import DatasetSummary

__all__ = ["WHITE_THRESHOLD", "build_dataset"]

#: A tile is white (glass) when its white fraction exceeds this.
WHITE_THRESHOLD = 0.5
#: The white tiles the study kept so the network sees glass.
WHITE_KEEP = 0.02
_DEFAULT_COLOURS = ([0, 255, 0], [255, 0, 0], [0, 0, 255], [255, 255, 0], [255, 0, 255])


def build_dataset(
    tables: Sequence[str | os.PathLike[str] | Any],
    out_dir: str | os.PathLike[str],
    *,
    white_threshold: float = WHITE_THRESHOLD,
    white_keep: float = WHITE_KEEP,
    balance: str | Mapping[str, float] | Sequence[float] | None = "all",
    balance_splits: Sequence[str] = ("train",),
    class_weights: bool = False,
    split: Mapping[str, Sequence[str]] | None = None,
    fractions: Sequence[float] = (0.8, 0.2),
    folds: int | None = None,
    fold: int | None = None,
    patients: str | os.PathLike[str] | Mapping[str, str] | None = None,
    encoding: str = "png",
    quality: int = 95,
    png_compression: int = 1,
    seed: int = 0,
    n_threads: int | None = None,
    overwrite: bool = False,
    stain_normalise: str | None = "glass",
) -> DatasetSummary:
    """Build a RecordIO training set from label tables (see the module docstring for the steps).

    Parameters
    ----------
    tables : sequence of path or LabelTable
        Label tables (``.npz``/``.csv`` files written by :mod:`prostate_fast.label`, or loaded
        :class:`~prostate_fast.label.LabelTable` objects), one per slide.
    out_dir : path
        Dataset folder to create (the layout is described in ``docs``/``dataset.json``).
    white_threshold : float
        A tile is white when its white fraction is above this (default 0.5).
    white_keep : float
        Share of white tiles kept, chosen at random (default 0.02, as the study).
    balance : str, dict, sequence or None
        ``"all"``/None (default) to keep every tile (training's default recipe weighs the classes
        instead of discarding), ``"50:50"`` (the study's: the larger class discarded down to the
        smaller), ``"30:70"``, ``"70:30"`` (class order, i.e. non-cancer:cancer for two
        classes), any ``"a:b[:c...]"`` or a dict class → share.
    balance_splits : sequence of str
        Splits that are balanced (default only ``train``).
    class_weights : bool
        Write inverse-frequency class weights of the train split (``n / (k * n_c)``).
    split : dict, optional
        Explicit slide lists ``{"val": [...], "test": [...], "train": [...]}`` (names with or
        without extension); unlisted slides go to train. With ``folds``, only ``"test"``.
    fractions : sequence of float
        (train, val) or (train, val, test) shares of the slides (or patients), default 0.8/0.2.
    folds, fold : int, optional
        k-fold cross-validation: the slides are dealt into ``folds`` folds; fold ``fold`` is val.
    patients : path or dict, optional
        Slide → patient (CSV with ``slide`` and ``patient`` columns); every slide must be named.
    encoding : {"png", "jpeg"}
        PNG is lossless (records decode to the slide's exact pixels); JPEG is smaller.
    quality : int
        JPEG quality (default 95) of re-encoded tiles: a tile read at a level as it is, inside
        one JPEG tile of a TIFF slide, with no stain change, is copied losslessly from the
        slide's JPEG (DCT-domain crop); ``dataset.json``'s ``settings.jpeg_tiles`` counts both.
        png_compression : int, zlib level 0-9 (default 1: fast).
    seed : int
        Seed of every random choice; the same seed gives byte-identical files.
    n_threads : int, optional
        Threads reading and encoding tiles (None = all cores); the output does not depend on it.
    overwrite : bool
        Replace an existing non-empty ``out_dir`` (only once the new dataset is complete).
    stain_normalise : {"glass", "macenko"} or None
        Normalise every slide (:mod:`prostate_fast.stain`): each slide is fitted once on its
        tissue and glass, the target is the median of the train split's slides, and every tile
        is mapped to it before encoding: ``"glass"`` (default) brings each slide's glass light to
        the target's (stains untouched; slides of one scanner are left as they are, a gain of
        about 1), ``"macenko"`` also maps its stains. ``dataset.json``'s ``"stain"`` records
        the target (and each slide's fit); training copies it to ``model.json`` so prediction
        normalises the same way. None: tiles are packed as read.

    Returns
    -------
    DatasetSummary

    Raises
    ------
    ValueError
        A bad argument (named).
    FileExistsError
        ``out_dir`` exists and is not empty, and ``overwrite`` is false.
    DatasetError
        Missing table or slide file, tables with different classes, an empty selection, a split
        left empty, a patient in two splits. Nothing is written.

    Notes
    -----
    Cost is dominated by reading and encoding tiles (PNG level 1: about 1,000-2,000 tiles/s on two
    cores; JPEG is faster); see ``bench/bench_dataset.py``.
    """
    check_build_args(
        white_threshold,
        white_keep,
        fractions,
        folds,
        fold,
        encoding,
        quality,
        png_compression,
        balance_splits,
    )
    resolve_threads(n_threads)
    if stain_normalise is not None and stain_normalise not in METHODS:
        raise ValueError(
            f"stain_normalise must be one of {', '.join(METHODS)} or None, got {stain_normalise!r}"
        )
    out = Path(out_dir)
    inputs = [*tables, patients if isinstance(patients, str | os.PathLike) else None]
    with command_inputs(inputs):
        check_replaceable(out, overwrite=overwrite, folder=True)
        opts = BuildOptions(
            white_threshold=white_threshold,
            white_keep=white_keep,
            balance=balance,
            balance_splits=balance_splits,
            class_weights=class_weights,
            split=split,
            fractions=fractions,
            folds=folds,
            fold=fold,
            patients=patients,
            encoding=encoding,
            quality=quality,
            png_compression=png_compression,
            seed=seed,
        )
        plan = make_plan(tables, opts)
        _parent(out)
        with output_lock(out):  # a second build of ``out`` fails at once
            return _build(plan, opts, out, overwrite, n_threads, stain_normalise)


def _build(
    plan: DatasetPlan,
    opts: BuildOptions,
    out: Path,
    overwrite: bool,
    n_threads: int | None,
    stain_method: str | None = None,
) -> DatasetSummary:
    """Pack ``plan`` in a temporary folder beside ``out``, then rename it to ``out``."""
    check_replaceable(out, overwrite=overwrite, folder=True)  # again, under the lock
    clean_stale(out)  # what a killed build of ``out`` left
    tmp = temp_path(out)
    try:
        tmp.mkdir(0o755)
        stain = _fit_stains(plan, n_threads, stain_method) if stain_method else None
        packed, seconds = _pack(tmp, plan, opts, n_threads, stain)
        summary = _write_metadata(tmp, out, plan, packed, seconds, opts, stain)
        _install(tmp, out, overwrite)
    except OSError as exc:  # a full disk: say which dataset could not be written
        named = disk_error_naming(exc, out, also=tmp)
        if named is None:
            raise
        raise named from exc
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return summary


def _parent(out: Path) -> None:
    """Create the folder that will hold ``out``."""
    try:
        check_parent(out)
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # read-only folder, ...: name the output, not the temporary name
        raise OSError(exc.errno, exc.strerror, str(out)) from exc


def _install(tmp: Path, out: Path, overwrite: bool) -> None:
    """Rename the finished folder into place; an old one (ours) is replaced only now."""
    check_replaceable(out, overwrite=overwrite, folder=True)
    if out.exists() and (out.is_file() or any(out.iterdir())):
        old = temp_path(out, "old")
        os.replace(out, old)
        os.replace(tmp, out)
        remove_output(old)
    else:
        os.replace(tmp, out)


# -- pack ---------------------------------------------------------------------------------------
def _fit_stains(plan: DatasetPlan, n_threads: int | None, method: str) -> dict[str, Any]:
    """Fit every slide's stains and glass once (on its tissue) and the target (median of the
    train split's slides, normalising by ``method``); ``{"target": StainFit, "fits": {slide:
    StainFit or None}, "transforms": {...}}``."""
    from .. import stain as _stain
    from ..slide import open_slide
    from ..tissue import detect_tissue

    def fit(src: TableSource) -> Any:
        with open_slide(src.slide_path, n_threads=n_threads) as slide:
            return _stain.fit_slide(slide, detect_tissue(slide, n_threads=n_threads))

    threads = min(resolve_threads(n_threads), len(plan.sources))
    if threads > 1:  # slides fitted side by side (the kernels release the GIL), in plan order
        with ThreadPoolExecutor(threads, thread_name_prefix="pf-fit") as pool:
            done = list(pool.map(fit, plan.sources))
    else:
        done = [fit(src) for src in plan.sources]
    fits = {src.slide_name: f for src, f in zip(plan.sources, done, strict=True)}
    train = plan.splits["train"]["slides"]
    target = _stain.reference_target([fits.get(name) for name in train], method)
    if target is None:
        raise DatasetError(
            f"{origins(plan.sources)}: no slide of the train split has enough stained tissue "
            "to fit a stain normalisation target"
        )
    transforms = {
        n: None if f is None else _stain.stain_transform(f, target) for n, f in fits.items()
    }
    return {"target": target, "fits": fits, "transforms": transforms}


def _pack(
    tmp: Path,
    plan: DatasetPlan,
    opts: BuildOptions,
    n_threads: int | None,
    stain: dict[str, Any] | None = None,
) -> tuple[list[PackedSlide], float]:
    """Write every split's records into ``tmp``; the per-slide facts and the seconds spent."""
    packed: list[PackedSlide] = []
    seconds = 0.0
    for name, jobs in plan.jobs.items():
        done, dt = pack_split(
            tmp / name,
            jobs,
            encoding=opts.encoding,
            quality=int(opts.quality),
            png_compression=int(opts.png_compression),
            n_threads=n_threads,
            stain=None if stain is None else stain["transforms"],
        )
        packed += done
        seconds += dt
    return packed, seconds


# -- metadata -----------------------------------------------------------------------------------
def _write_metadata(
    tmp: Path,
    out: Path,
    plan: DatasetPlan,
    packed: Sequence[PackedSlide],
    seconds: float,
    opts: BuildOptions,
    stain: dict[str, Any] | None = None,
) -> DatasetSummary:
    """Write ``dataset.json`` and ``summary.json`` into ``tmp``; the summary of ``out``."""
    weights = _class_weights(plan) if opts.class_weights else None
    settings = _settings(plan, opts)
    if stain is not None:
        settings["stain_normalise"] = stain["target"].method
    if opts.encoding == "jpeg":
        copied = sum(p.copied for p in packed)
        re_encoded = sum(p.records for p in packed) - copied
        settings["jpeg_tiles"] = {"copied": copied, "re_encoded": re_encoded}
    summary = DatasetSummary(
        out,
        tuple(plan.classes),
        plan.splits,
        _white_totals(plan, opts),
        dict(sorted(plan.slides.items())),
        weights,
        settings,
        seconds,
    )
    meta = _dataset_json(plan, packed, opts, weights, settings)
    if stain is not None:
        meta["stain"] = {
            **stain["target"].to_json(),
            "slides": {n: None if f is None else f.to_json() for n, f in stain["fits"].items()},
        }
    for fname, obj in (("dataset.json", meta), ("summary.json", summary.to_dict())):
        (tmp / fname).write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")
    return summary


def _dataset_json(
    plan: DatasetPlan,
    packed: Sequence[PackedSlide],
    opts: BuildOptions,
    weights: list[float] | None,
    settings: dict[str, Any],
) -> dict[str, Any]:
    """The content of ``dataset.json`` (see :func:`~.reading.load_dataset_info`)."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "classes": list(plan.classes),
        "colours": _colours(plan.sources, plan.classes),
        "tile_size": int(plan.sources[0].tile_size),
        "downsample": _common([p.choice.downsample for p in packed]),
        "mpp": _common([p.choice.mpp for p in packed]),
        "magnification": _common([p.choice.magnification for p in packed]),
        "encoding": opts.encoding,
        "jpeg_quality": int(opts.quality) if opts.encoding == "jpeg" else None,
        "channel_order": "RGB",
        "normalisation": {"scale": 1.0 / 255.0},
        "splits": {
            k: {"records": v["records"], "per_class": v["per_class"], "slides": v["slides"]}
            for k, v in plan.splits.items()
        },
        "class_weights": weights,
        "settings": settings,
    }


def _white_totals(plan: DatasetPlan, opts: BuildOptions) -> dict[str, Any]:
    """White tiles over all splits: found, kept by the cleaning, left in the records."""
    total = sum(v["white_tiles"] for v in plan.splits.values())
    kept = sum(v["white_kept"] for v in plan.splits.values())
    return {
        "threshold": float(opts.white_threshold),
        "requested": float(opts.white_keep),
        "white_tiles": total,
        "kept": kept,
        "share": kept / total if total else 0.0,
        "records": sum(v["white_records"] for v in plan.splits.values()),
    }


def _class_weights(plan: DatasetPlan) -> list[float]:
    """Inverse-frequency weights of the train split, ``n / (k * n_c)`` (0 for absent classes)."""
    c = np.asarray(plan.splits["train"]["per_class"], np.float64)
    present = c > 0
    w = np.zeros(len(plan.classes))
    w[present] = c.sum() / (present.sum() * c[present])
    return [round(float(v), 6) for v in w]


def _settings(plan: DatasetPlan, opts: BuildOptions) -> dict[str, Any]:
    """The ``settings`` entry of both JSON files: every choice that made the dataset."""
    split, folds, balance = opts.split, opts.folds, opts.balance
    if not (isinstance(balance, str) or balance is None):
        balance = {c: float(v) for c, v in zip(plan.classes, plan.shares, strict=True)}  # type: ignore[arg-type]
    return {
        "seed": int(opts.seed),
        "white_threshold": float(opts.white_threshold),
        "white_keep": float(opts.white_keep),
        "balance": balance,
        "balance_splits": list(opts.balance_splits),
        "split": {
            "mode": "folds" if folds is not None else ("lists" if split else "fractions"),
            "fractions": [float(f) for f in opts.fractions]
            if not split and folds is None
            else None,
            "folds": folds,
            "fold": opts.fold,
            "lists": {k: list(v) for k, v in split.items()} if split else None,
        },
        "patients": str(opts.patients) if isinstance(opts.patients, str | os.PathLike) else None,
        "encoding": opts.encoding,
        "png_compression": int(opts.png_compression) if opts.encoding == "png" else None,
        "tables": [s.origin for s in plan.sources],
    }


def _colours(sources: Sequence[TableSource], classes: Sequence[str]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for src in sources:
        for name, rgb in src.colours.items():
            if name in classes:
                out.setdefault(name, [int(v) for v in rgb])
    others = [c for c in classes[1:] if c not in out]
    for c, rgb in zip(others, _DEFAULT_COLOURS, strict=False):
        out[c] = list(rgb)
    return {c: out[c] for c in classes if c in out}


def _common(values: Sequence[float | None]) -> float | None:
    """The shared value (within 2 %), or None when unknown or different across slides."""
    if not values or any(v is None for v in values):
        return None
    first = float(values[0])  # type: ignore[arg-type]
    ok = all(abs(float(v) - first) <= 0.02 * abs(first) for v in values)  # type: ignore[arg-type]
    return round(first, 6) if ok else None
