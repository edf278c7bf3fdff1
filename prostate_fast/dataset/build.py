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
   (see :mod:`prostate_fast._records`), then ``dataset.json`` (the contract training codes
   against) and ``summary.json``.

Everything is built in a hidden folder beside ``out_dir`` and renamed into place when complete, so
an error leaves nothing behind. The same inputs and seed give byte-identical files, whatever the
thread count. :func:`record_iter` returns the ImageRecordIter training reads with.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._util import check_parent, disk_error_naming, resolve_threads
from ..errors import DatasetError
from .reading import (
    FORMAT,
    VERSION,
    DatasetInfo,
    SplitInfo,
    TableSource,
    count_records,
    load_dataset_info,
    load_side_car,
    load_tables,
    read_records,
    record_iter,
)
from .records import PackedSlide, TileJob, epoch_batches, pack_split
from .selection import (
    SPLIT_NAMES,
    assign_splits,
    balance_indices,
    check_build_args,
    parse_balance,
    read_patients,
    white_keep_mask,
)

__all__ = [
    "WHITE_THRESHOLD",
    "DatasetInfo",
    "DatasetSummary",
    "SplitInfo",
    "build_dataset",
    "count_records",
    "epoch_batches",
    "load_dataset_info",
    "load_side_car",
    "read_records",
    "record_iter",
]

#: A tile is white (glass) when its white fraction exceeds this.
WHITE_THRESHOLD = 0.5
#: The white tiles the study kept so the network sees glass.
WHITE_KEEP = 0.02
_DEFAULT_COLOURS = ([0, 255, 0], [255, 0, 0], [0, 0, 255], [255, 255, 0], [255, 0, 255])


@dataclass(frozen=True)
class DatasetSummary:
    """What :func:`build_dataset` wrote (``to_dict()`` is ``summary.json``; timings are not saved).

    Attributes
    ----------
    path : pathlib.Path
        The dataset folder.
    classes : tuple of str
    splits : dict
        Split name → ``{"records", "per_class", "slides", "white_tiles", "white_kept",
        "white_records"}``: white tiles of the split's slides, kept by the white cleaning, and
        left among the records after balancing.
    white : dict
        ``{"threshold", "requested", "white_tiles", "kept", "share", "records"}`` over all
        splits (``share`` = kept / white_tiles, what ``white_keep`` requests).
    slides : dict
        Slide name → ``{"split", "patient", "tiles", "white_tiles", "white_records", "records",
        "per_class"}``.
    class_weights : list of float or None
    settings : dict
    pack_seconds : float
        Time spent reading, encoding and writing tiles.
    """

    path: Path
    classes: tuple[str, ...]
    splits: dict[str, dict[str, Any]]
    white: dict[str, Any]
    slides: dict[str, dict[str, Any]]
    class_weights: list[float] | None
    settings: dict[str, Any]
    pack_seconds: float = field(default=0.0, compare=False)

    @property
    def records(self) -> int:
        """Records in all splits."""
        return sum(s["records"] for s in self.splits.values())

    @property
    def tiles_per_second(self) -> float:
        """Packing throughput (tiles read, encoded and written per second)."""
        return self.records / self.pack_seconds if self.pack_seconds > 0 else float("nan")

    def to_dict(self) -> dict[str, Any]:
        """The JSON-friendly summary saved as ``summary.json`` (no timings: files stay identical)."""
        return {
            "classes": list(self.classes),
            "splits": self.splits,
            "white": self.white,
            "slides": self.slides,
            "class_weights": self.class_weights,
            "settings": self.settings,
        }

    def format(self) -> str:
        """A plain-text table: tiles per class per split, white kept, per-slide counts."""
        cls = list(self.classes)
        w = max([8, *(len(c) + 1 for c in cls)])
        head = f"{'split':<7}{'records':>9}" + "".join(f"{c:>{w}}" for c in cls)
        lines = [
            f"dataset {self.path}",
            head + f"{'white kept':>14}{'in records':>12}{'slides':>8}",
        ]
        for name, s in self.splits.items():
            white = f"{s['white_kept']}/{s['white_tiles']}"
            lines.append(
                f"{name:<7}{s['records']:>9}"
                + "".join(f"{n:>{w}}" for n in s["per_class"])
                + f"{white:>14}{s['white_records']:>12}{len(s['slides']):>8}"
            )
        wh = self.white
        lines.append(
            f"white tiles (white fraction > {wh['threshold']:g}): {wh['white_tiles']}, kept "
            f"{wh['kept']} ({100 * wh['share']:.2f} %, requested {100 * wh['requested']:.2f} %), "
            f"{wh['records']} in the records"
        )
        if self.class_weights is not None:
            lines.append("class weights: " + ", ".join(f"{v:.4g}" for v in self.class_weights))
        sw = max([6, *(len(s) + 1 for s in self.slides)])
        lines.append(
            f"{'slide':<{sw}}{'split':>6}{'tiles':>8}{'white':>7}{'in rec':>8}{'records':>9}"
            + "".join(f"{c:>{w}}" for c in cls)
        )
        for name, s in self.slides.items():
            lines.append(
                f"{name:<{sw}}{s['split']:>6}{s['tiles']:>8}{s['white_tiles']:>7}"
                f"{s['white_records']:>8}{s['records']:>9}"
                + "".join(f"{n:>{w}}" for n in s["per_class"])
            )
        if self.pack_seconds > 0:
            lines.append(
                f"packed {self.records} tiles in {self.pack_seconds:.1f} s "
                f"({self.tiles_per_second:.0f} tiles/s)"
            )
        return "\n".join(lines)


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not overwrite:
        if out.is_dir() and not any(out.iterdir()):
            return
        raise FileExistsError(
            f"{out}: already exists; pass overwrite=True (--overwrite) to replace it"
        )


def _origins(sources: Sequence[TableSource]) -> str:
    """The label tables of ``sources``, for a message (the first three, then a count)."""
    names = [s.origin for s in sources]
    more = f" and {len(names) - 3} more" if len(names) > 3 else ""
    return ", ".join(names[:3]) + more


def _install(tmp: Path, out: Path, overwrite: bool) -> None:
    """Rename the finished folder into place; an old one is replaced only now, and only if asked."""
    _check_out(out, overwrite)
    if out.exists() and (out.is_file() or any(out.iterdir())):
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.replace(out, old / "d")
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


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


def _name_lookup(names: Sequence[str]) -> dict[str, str]:
    """Slide file name or unambiguous stem → slide file name."""
    lookup: dict[str, str] = {}
    for n in names:
        lookup[n] = n
        stem = Path(n).stem
        lookup[stem] = n if stem not in lookup or lookup[stem] == n else ""
    return {k: v for k, v in lookup.items() if v}


def _patient_map(
    patients: str | os.PathLike[str] | Mapping[str, str] | None,
    names: Sequence[str],
    lookup: Mapping[str, str],
) -> dict[str, str]:
    """Slide → patient; each slide is its own patient when no mapping is given."""
    if patients is None:
        return {n: n for n in names}
    out = {lookup[k]: v for k, v in read_patients(patients).items() if k in lookup}
    lacking = [n for n in names if n not in out]
    if lacking:
        raise DatasetError(f"{patients}: no patient for slide(s) {', '.join(lacking)}")
    return out


def _select_split(
    name: str,
    members: Sequence[TableSource],
    classes: Sequence[str],
    patient_of: Mapping[str, str],
    *,
    white_threshold: float,
    white_keep: float,
    shares: np.ndarray | None,
    balance: object,
    rng: np.random.Generator,
    slides_info: dict[str, dict[str, Any]],
) -> tuple[dict[str, Any], list[TileJob]]:
    """White cleaning then (when ``shares``) balancing of one split; its summary and jobs."""
    n_cls = len(classes)
    wf = np.concatenate([s.white_fraction for s in members])
    labels = np.concatenate([s.label for s in members])
    starts = np.cumsum([0] + [len(s.label) for s in members])
    white = wf > white_threshold
    keep, kept_white = white_keep_mask(white, white_keep, rng)
    pos = np.flatnonzero(keep)
    if shares is not None:
        counts = np.bincount(labels[pos], minlength=n_cls)
        short = [classes[c] for c in range(n_cls) if shares[c] > 0 and counts[c] == 0]
        if short:
            raise DatasetError(
                f"split {name!r} has no {', '.join(map(repr, short))} tile to balance "
                f"{balance!r} (slides {', '.join(s.slide_name for s in members)})"
            )
        sub, _ = balance_indices(labels[pos], shares, rng)
        pos = pos[sub]
    if len(pos) == 0:
        raise DatasetError(
            f"{_origins(members)}: split {name!r} is empty after white cleaning and balancing"
        )
    info = {
        "records": int(len(pos)),
        "per_class": [int(v) for v in np.bincount(labels[pos], minlength=n_cls)],
        "slides": [s.slide_name for s in members],
        "white_tiles": int(white.sum()),
        "white_kept": int(kept_white),
        "white_records": int(white[pos].sum()),
    }
    jobs = []
    for i, s in enumerate(members):
        mine = pos[(pos >= starts[i]) & (pos < starts[i + 1])] - starts[i]
        lab = s.label[mine]
        jobs.append(
            TileJob(
                s.slide_path,
                s.slide_name,
                patient_of[s.slide_name],
                s.tile_size,
                s.level,
                s.downsample,
                s.choice,
                s.l0_xy[mine],
                lab,
                s.white_fraction[mine],
            )
        )
        sw = s.white_fraction > white_threshold
        slides_info[s.slide_name] = {
            "split": name,
            "patient": patient_of[s.slide_name],
            "tiles": int(len(s.label)),
            "white_tiles": int(sw.sum()),
            "white_records": int(sw[mine].sum()),
            "records": int(len(mine)),
            "per_class": [int(v) for v in np.bincount(lab, minlength=n_cls)],
        }
    return info, jobs


def build_dataset(
    tables: Sequence[str | os.PathLike[str] | Any],
    out_dir: str | os.PathLike[str],
    *,
    white_threshold: float = WHITE_THRESHOLD,
    white_keep: float = WHITE_KEEP,
    balance: str | Mapping[str, float] | Sequence[float] | None = "50:50",
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
        ``"50:50"`` (default, the study's best), ``"30:70"``, ``"70:30"`` (class order, i.e.
        non-cancer:cancer for two classes), any ``"a:b[:c...]"``, a dict class → share, or
        ``"all"``/None to keep every tile.
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
        JPEG quality (default 95). png_compression : int, zlib level 0-9 (default 1: fast).
    seed : int
        Seed of every random choice; the same seed gives byte-identical files.
    n_threads : int, optional
        Threads reading and encoding tiles (None = all cores); the output does not depend on it.
    overwrite : bool
        Replace an existing non-empty ``out_dir`` (only once the new dataset is complete).

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
    out = Path(out_dir)
    _check_out(out, overwrite)
    sources, classes = load_tables(tables)
    shares = parse_balance(balance, classes)
    if sum(len(s.label) for s in sources) == 0:
        raise DatasetError(f"{_origins(sources)}: empty selection: no labelled tile in the table")
    missing = [str(s.slide_path) for s in sources if not s.slide_path.is_file()]
    if missing:
        raise DatasetError(f"slide file(s) not found: {', '.join(missing)}")
    names = [s.slide_name for s in sources]
    lookup = _name_lookup(names)
    patient_of = _patient_map(patients, names, lookup)
    rng = np.random.default_rng(seed)
    assign = assign_splits(
        names,
        patient_of,
        split=split,
        fractions=fractions,
        folds=folds,
        fold=fold,
        lookup=lookup,
        rng=rng,
    )
    if folds is not None:
        split_names = ["train", "val"] + (["test"] if split and "test" in split else [])
    elif split:
        split_names = [s for s in SPLIT_NAMES if s == "train" or s in split]
    else:
        split_names = list(SPLIT_NAMES[: len(fractions)])

    slides_info: dict[str, dict[str, Any]] = {}
    split_info: dict[str, dict[str, Any]] = {}
    jobs: dict[str, list[TileJob]] = {}
    for name in split_names:
        members = [s for s in sources if assign[s.slide_name] == name]
        if not members:
            raise DatasetError(f"split {name!r} is empty: no slide is assigned to it")
        split_info[name], jobs[name] = _select_split(
            name,
            members,
            classes,
            patient_of,
            white_threshold=white_threshold,
            white_keep=white_keep,
            shares=shares if name in balance_splits else None,
            balance=balance,
            rng=rng,
            slides_info=slides_info,
        )
    white_total = sum(v["white_tiles"] for v in split_info.values())
    white_kept = sum(v["white_kept"] for v in split_info.values())
    white_records = sum(v["white_records"] for v in split_info.values())
    weights = None
    if class_weights:
        c = np.asarray(split_info["train"]["per_class"], np.float64)
        present = c > 0
        w = np.zeros(len(classes))
        w[present] = c.sum() / (present.sum() * c[present])
        weights = [round(float(v), 6) for v in w]
    settings = {
        "seed": int(seed),
        "white_threshold": float(white_threshold),
        "white_keep": float(white_keep),
        "balance": balance
        if isinstance(balance, str) or balance is None
        else {c: float(v) for c, v in zip(classes, shares, strict=True)},  # type: ignore[arg-type]
        "balance_splits": list(balance_splits),
        "split": {
            "mode": "folds" if folds is not None else ("lists" if split else "fractions"),
            "fractions": [float(f) for f in fractions] if not split and folds is None else None,
            "folds": folds,
            "fold": fold,
            "lists": {k: list(v) for k, v in split.items()} if split else None,
        },
        "patients": str(patients) if isinstance(patients, str | os.PathLike) else None,
        "encoding": encoding,
        "png_compression": int(png_compression) if encoding == "png" else None,
        "tables": [s.origin for s in sources],
    }
    try:
        check_parent(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.part-", dir=out.parent))
    except OSError as exc:  # read-only folder, ...: name the output, not the temporary name
        raise OSError(exc.errno, exc.strerror, str(out)) from exc
    try:
        os.chmod(tmp, 0o755)
        packed: list[PackedSlide] = []
        seconds = 0.0
        for name in split_names:
            done, dt = pack_split(
                tmp / name,
                jobs[name],
                encoding=encoding,
                quality=int(quality),
                png_compression=int(png_compression),
                n_threads=n_threads,
            )
            packed += done
            seconds += dt
        meta = {
            "format": FORMAT,
            "version": VERSION,
            "classes": list(classes),
            "colours": _colours(sources, classes),
            "tile_size": int(sources[0].tile_size),
            "downsample": _common([p.choice.downsample for p in packed]),
            "mpp": _common([p.choice.mpp for p in packed]),
            "magnification": _common([p.choice.magnification for p in packed]),
            "encoding": encoding,
            "jpeg_quality": int(quality) if encoding == "jpeg" else None,
            "channel_order": "RGB",
            "normalisation": {"scale": 1.0 / 255.0},
            "splits": {
                k: {"records": v["records"], "per_class": v["per_class"], "slides": v["slides"]}
                for k, v in split_info.items()
            },
            "class_weights": weights,
            "settings": settings,
        }
        summary = DatasetSummary(
            out,
            tuple(classes),
            split_info,
            {
                "threshold": float(white_threshold),
                "requested": float(white_keep),
                "white_tiles": white_total,
                "kept": white_kept,
                "share": white_kept / white_total if white_total else 0.0,
                "records": white_records,
            },
            dict(sorted(slides_info.items())),
            weights,
            settings,
            seconds,
        )
        for fname, obj in (("dataset.json", meta), ("summary.json", summary.to_dict())):
            (tmp / fname).write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")
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
