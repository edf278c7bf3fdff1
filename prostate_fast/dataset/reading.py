"""Reading side of :mod:`prostate_fast.dataset`: label tables in, dataset folders out and back.

* :func:`load_tables` turns label tables (files or :class:`~prostate_fast.label.LabelTable`) into
  :class:`TableSource` records and merges their classes.
* :func:`load_dataset_info` validates ``dataset.json``; :func:`record_iter`, :func:`count_records`,
  :func:`read_records` and :func:`load_side_car` read a split back.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DatasetError
from ..slide import LevelChoice
from ..stain import StainFit
from . import records as _records

__all__ = [
    "FORMAT",
    "VERSION",
    "DatasetInfo",
    "SplitInfo",
    "TableSource",
    "count_records",
    "load_dataset_info",
    "load_side_car",
    "load_tables",
    "read_records",
    "record_iter",
]

FORMAT = "prostate-fast-dataset"
VERSION = 1


# -- label tables in ----------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class TableSource:
    """The parts of one slide's label table a dataset needs (labels mapped to merged classes)."""

    origin: str
    slide_path: Path
    slide_name: str
    classes: tuple[str, ...]
    colours: dict[str, tuple[int, int, int]]
    tile_size: int
    level: int
    downsample: float
    choice: LevelChoice | None
    l0_xy: np.ndarray  # (n, 2) int64, labelled tiles only
    label: np.ndarray  # (n,) int64 in [0, n_classes)
    white_fraction: np.ndarray  # (n,) float32
    slide_dimensions: tuple[int, int] | None = None  # as labelled (None: an older table)
    slide_fingerprint: str | None = None


def _get(obj: Any, *names: str) -> Any:
    for n in names:
        value = getattr(obj, n, None)
        if value is not None:
            return value
    return None


def _source(obj: Any, origin: str) -> TableSource:
    """Adapt a LabelTable (attribute names as in :mod:`prostate_fast.label`)."""
    classes = tuple(str(c) for c in _get(obj, "classes", "class_names"))
    slide = _get(obj, "slide_path", "slide")
    if slide is None:
        raise DatasetError(f"{origin}: the label table names no slide file")
    slide_path = Path(slide)
    name = str(_get(obj, "slide_name") or slide_path.name)
    choice = _get(obj, "choice")
    if not isinstance(choice, LevelChoice):
        choice = None
    level = int(choice.level if choice else _get(obj, "level"))
    downsample = float(choice.downsample if choice else _get(obj, "downsample"))
    l0_xy = np.asarray(obj.l0_xy, np.int64).reshape(-1, 2)
    label = np.asarray(_get(obj, "label", "labels"), np.int64).ravel()
    wf = _get(obj, "white_fraction")
    if wf is None:
        raise DatasetError(f"{origin}: the label table has no white_fraction column")
    wf = np.asarray(wf, np.float32).ravel()
    if np.isnan(wf).any():
        raise DatasetError(
            f"{origin}: the label table has no white fraction for {int(np.isnan(wf).sum())} "
            "tile(s); label the slide with white fractions (the default) to clean white tiles"
        )
    if not len(l0_xy) == len(label) == len(wf):
        raise DatasetError(f"{origin}: l0_xy, label and white_fraction differ in length")
    if len(label) and int(label.max()) >= len(classes):
        raise DatasetError(f"{origin}: label {int(label.max())} but only {len(classes)} classes")
    keep = label >= 0
    raw = _get(obj, "colours", "colors") or {}
    if not isinstance(raw, dict):
        raw = dict(zip(classes, raw, strict=False))
    colours = {str(k): tuple(int(c) for c in v) for k, v in raw.items() if v is not None}
    return TableSource(
        origin,
        slide_path,
        name,
        classes,
        colours,  # type: ignore[arg-type]
        int(_get(obj, "tile_size")),
        level,
        downsample,
        choice,
        np.ascontiguousarray(l0_xy[keep]),
        label[keep],
        np.ascontiguousarray(wf[keep]),
        _get(obj, "slide_dimensions"),
        _get(obj, "slide_fingerprint"),
    )


def load_tables(tables: Sequence[Any]) -> tuple[list[TableSource], list[str]]:
    """Load and check label tables; return them sorted by slide name, and the merged classes.

    Raises
    ------
    DatasetError
        No table, a missing or unreadable table file, two tables of one slide, tables that share
        no class or differ in their classes, different tile sizes.
    """
    tables = [tables] if isinstance(tables, str | os.PathLike) else list(tables)
    if not tables:
        raise DatasetError("empty selection: no label table given")
    sources = []
    for t in tables:
        if isinstance(t, str | os.PathLike):
            path = Path(t)
            if not path.is_file():
                raise DatasetError(f"{path}: no such label table")
            from ..label.table import load_label_table

            try:
                obj = load_label_table(path)
            except DatasetError:
                raise
            except Exception as exc:  # noqa: BLE001 - any loader failure names the file
                raise DatasetError(f"{path}: cannot read the label table: {exc}") from exc
            src = _source(obj, str(path.resolve()))
            if not src.slide_path.is_absolute() and not src.slide_path.is_file():
                # a relative slide path is taken from the working directory, else the table's
                src = _relocate(src, path.parent / src.slide_path)
        else:
            src = _source(t, f"<{type(t).__name__} {_get(t, 'slide_name', 'slide_path')}>")
        sources.append(src)
    sources.sort(key=lambda s: s.slide_name)
    seen: dict[str, str] = {}
    for s in sources:
        if s.slide_name in seen:
            raise DatasetError(
                f"slide {s.slide_name!r} has two label tables: {seen[s.slide_name]} and {s.origin}"
            )
        seen[s.slide_name] = s.origin
    first = sources[0]
    classes = list(first.classes)
    for s in sources[1:]:
        if set(s.classes) == set(classes):
            continue
        common = set(s.classes) & set(classes)
        why = "share no class" if not common else "have different classes"
        raise DatasetError(
            f"label tables {first.origin} {list(first.classes)} and {s.origin} "
            f"{list(s.classes)} {why}; relabel them with one class list"
        )
    sizes = {s.tile_size for s in sources}
    if len(sizes) > 1:
        raise DatasetError(f"label tables have different tile sizes {sorted(sizes)}")
    out = []
    for s in sources:
        if list(s.classes) != classes:
            remap = np.array([classes.index(c) for c in s.classes], np.int64)
            s = _relocate(s, s.slide_path, label=remap[s.label], classes=tuple(classes))
        out.append(s)
    return out, classes


def _relocate(src: TableSource, path: Path, **changes: Any) -> TableSource:
    from dataclasses import replace

    return replace(src, slide_path=path, **changes)


# -- dataset folders back -----------------------------------------------------------------------
@dataclass(frozen=True)
class SplitInfo:
    """One split of a dataset: counts, slides and its files."""

    name: str
    records: int
    per_class: tuple[int, ...]
    slides: tuple[str, ...]
    rec: Path
    idx: Path
    lst: Path
    csv: Path


@dataclass(frozen=True)
class DatasetInfo:
    """``dataset.json`` of a dataset folder, validated (see :mod:`prostate_fast.dataset`)."""

    path: Path
    classes: tuple[str, ...]
    colours: dict[str, tuple[int, int, int]]
    tile_size: int
    downsample: float | None
    mpp: float | None
    magnification: float | None
    encoding: str
    jpeg_quality: int | None
    channel_order: str
    scale: float
    splits: dict[str, SplitInfo]
    class_weights: tuple[float, ...] | None
    settings: dict[str, Any]
    stain: StainFit | None = None  # the stain normalisation target (``"stain"``), if any

    def split(self, name: str) -> SplitInfo:
        """The split ``name``; ValueError listing the splits when there is none."""
        if name not in self.splits:
            raise ValueError(f"{self.path}: no split {name!r}; splits are {list(self.splits)}")
        return self.splits[name]


def load_dataset_info(dataset_dir: str | os.PathLike[str]) -> DatasetInfo:
    """Read and validate ``DATASET_DIR/dataset.json``; check each split's .rec and .idx exist.

    Raises
    ------
    DatasetError
        The folder or ``dataset.json`` is missing, not JSON, not a prostate-fast dataset of a
        known version, lacks a field, or a split's files are missing. The message names the file.
    """
    root = Path(dataset_dir)
    meta_path = root / "dataset.json"
    if not meta_path.is_file():
        raise DatasetError(f"{meta_path}: no such file (not a prostate-fast dataset folder)")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{meta_path}: corrupt dataset description: {exc}") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise DatasetError(f"{meta_path}: not a {FORMAT} description")
    if meta.get("version") != VERSION:
        raise DatasetError(f"{meta_path}: version {meta.get('version')!r}, expected {VERSION}")
    try:
        classes = tuple(str(c) for c in meta["classes"])
        splits = {}
        for name, s in meta["splits"].items():
            files = {ext: root / f"{name}.{ext}" for ext in ("rec", "idx", "lst", "csv")}
            for ext in ("rec", "idx"):
                if not files[ext].is_file():
                    raise DatasetError(f"{files[ext]}: missing (split {name!r} of {root})")
            per_class = tuple(int(v) for v in s["per_class"])
            if len(per_class) != len(classes):
                raise DatasetError(f"{meta_path}: split {name!r} per_class does not match classes")
            splits[name] = SplitInfo(
                name,
                int(s["records"]),
                per_class,
                tuple(s["slides"]),
                files["rec"],
                files["idx"],
                files["lst"],
                files["csv"],
            )
        scale = float(meta["normalisation"]["scale"])
        weights = meta.get("class_weights")
        info = DatasetInfo(
            root,
            classes,
            {k: tuple(int(c) for c in v) for k, v in (meta.get("colours") or {}).items()},  # type: ignore[misc]
            int(meta["tile_size"]),
            _opt_float(meta.get("downsample")),
            _opt_float(meta.get("mpp")),
            _opt_float(meta.get("magnification")),
            str(meta["encoding"]),
            None if meta.get("jpeg_quality") is None else int(meta["jpeg_quality"]),
            str(meta.get("channel_order", "RGB")),
            scale,
            splits,
            None if weights is None else tuple(float(w) for w in weights),
            dict(meta.get("settings") or {}),
            _stain(meta, meta_path),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise DatasetError(f"{meta_path}: corrupt dataset description ({exc!r})") from exc
    if not classes or info.tile_size <= 0 or not math.isfinite(scale) or scale <= 0:
        raise DatasetError(f"{meta_path}: corrupt dataset description (classes, tile size, scale)")
    return info


def _stain(meta: dict[str, Any], path: Path) -> StainFit | None:
    """The ``"stain"`` target of ``dataset.json``; DatasetError naming the file when bad."""
    try:
        return None if meta.get("stain") is None else StainFit.from_json(meta["stain"], str(path))
    except ValueError as exc:
        raise DatasetError(str(exc)) from None


def _opt_float(v: Any) -> float | None:
    return None if v is None else float(v)


def count_records(dataset_dir: str | os.PathLike[str], split: str) -> int:
    """Number of records of a split, counted in its ``.idx`` (one line per record)."""
    info = load_dataset_info(dataset_dir).split(split)
    with open(info.idx, encoding="utf-8") as fh:
        return sum(1 for line in fh if line.strip())


def load_side_car(dataset_dir: str | os.PathLike[str], split: str) -> dict[str, np.ndarray]:
    """The side-car table of a split as columns: record, slide, patient, l0_x, l0_y, level,
    downsample, label, white_fraction (numpy arrays in record order)."""
    info = load_dataset_info(dataset_dir).split(split)
    if not info.csv.is_file():
        raise DatasetError(f"{info.csv}: missing side-car table of split {split!r}")
    with open(info.csv, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    if not rows or tuple(rows[0]) != _records.SIDE_CAR_COLUMNS:
        raise DatasetError(f"{info.csv}: not a side-car table (header {rows[:1]})")
    cols = list(zip(*rows[1:], strict=True)) if len(rows) > 1 else [()] * len(rows[0])
    types = {
        "record": np.int64,
        "l0_x": np.int64,
        "l0_y": np.int64,
        "level": np.int64,
        "label": np.int64,
        "downsample": np.float64,
        "white_fraction": np.float32,
    }
    out = {}
    for name, col in zip(_records.SIDE_CAR_COLUMNS, cols, strict=True):
        out[name] = (
            np.asarray(col, dtype=types.get(name, object))
            if col
            else np.zeros(0, types.get(name, object))
        )
    return out


def read_records(
    dataset_dir: str | os.PathLike[str], split: str, records: Sequence[int] | None = None
) -> Iterator[tuple[int, np.ndarray, int]]:
    """Yield ``(record id, RGB uint8 tile, class index)`` of a split, decoded with OpenCV."""
    info = load_dataset_info(dataset_dir).split(split)
    for rid, rgb, label in _records.read_records(info.rec, info.idx, records):
        yield rid, rgb, int(label)


def record_iter(
    dataset_dir: str | os.PathLike[str],
    split: str,
    *,
    batch_size: int = 32,
    shuffle: bool = True,
    augment: bool | str = False,
    seed: int = 0,
    scale: float | None = None,
    n_threads: int | None = None,
    round_batch: bool = False,
    num_parts: int = 1,
    part_index: int = 0,
) -> Any:
    """An ``mx.io.ImageRecordIter`` over a split, with the study's preprocessing.

    Parameters
    ----------
    dataset_dir : path
    split : str
        ``"train"``, ``"val"`` or ``"test"``.
    batch_size : int
    shuffle : bool
        Reshuffle every epoch (seeded by ``seed``).
    augment : bool or {"flips", "colour"}
        ``"flips"`` (or True): random horizontal mirror (ImageRecordIter's ``rand_mirror``) and a
        random exact rotation by 0, 90, 180 or 270 degrees per sample, together the 8
        label-preserving symmetries of a histology tile. ImageRecordIter's ``max_rotate_angle``
        interpolates and fills corners, so the quarter turns are applied by a small wrapper
        DataIter on the decoded batch. ``"colour"``: those, then a random HED jitter, brightness
        and contrast per sample on the decoded 0-255 values
        (:func:`prostate_fast.stain.augment_colour`), seeded by ``seed``.
    seed : int
        Seed of the shuffle and of the augmentations.
    scale : float, optional
        Pixel scale; None = ``dataset.json``'s normalisation (1/255, as the study).
    n_threads : int, optional
        Decoding threads (None = all cores).
    round_batch : bool
        False (default): every epoch has ``ceil(records / batch_size)`` batches and starts with the
        first record; the tail of the last batch is filler and MXNet reports ``pad=0`` there, so
        use :func:`~prostate_fast.dataset.epoch_batches` (or count records yourself) for exact
        passes. True: MXNet wraps around into the next epoch.
    num_parts, part_index : int
        Read one part of ``num_parts`` (distributed training: one part per worker).

    Returns
    -------
    mx.io.DataIter
        ImageRecordIter (or its rotation wrapper when ``augment``): data float32 (batch, 3,
        tile, tile) RGB multiplied by ``scale``; label float32 (batch,) class index.

    Raises
    ------
    DatasetError
        Not a dataset folder, the split's files are missing, or its first records do not
        decode (MXNet decodes the first batch when the iterator is made). Errors in later
        batches come from ``next()`` as ``mxnet.base.MXNetError``.
    ValueError
        Unknown split or a bad argument.
    """
    info = load_dataset_info(dataset_dir)
    sp = info.split(split)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if not 0 <= part_index < num_parts:
        raise ValueError(f"part_index must be in [0, num_parts), got {part_index}/{num_parts}")
    factor = info.scale if scale is None else float(scale)
    if not factor > 0:
        raise ValueError(f"scale must be positive, got {scale!r}")
    return _records.make_record_iter(
        sp.rec,
        sp.idx,
        info.tile_size,
        batch_size=batch_size,
        shuffle=shuffle,
        augment=augment,
        seed=int(seed),
        scale=factor,
        n_threads=n_threads,
        round_batch=round_batch,
        num_parts=int(num_parts),
        part_index=int(part_index),
    )
