"""The plan of a dataset: which tiles of which slides go into which split, before any is read.

:func:`make_plan` is the first step of :func:`~prostate_fast.dataset.build_dataset`: it loads the
label tables (:mod:`.reading`), checks that every slide file exists, maps slides to patients,
assigns them to splits, and per split keeps the tiles the white cleaning and the class balance
select (:mod:`.selection`, one seeded generator drawn in a fixed order). The result, a
:class:`DatasetPlan`, holds one :class:`~.records.TileJob` per slide and split (what
:func:`~.records.pack_split` reads) and the counts that ``summary.json`` reports.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DatasetError
from ..metrics import MIN_CLASS_TILES, SmallSplitWarning
from .reading import TableSource, load_tables
from .records import TileJob
from .selection import (
    SPLIT_NAMES,
    assign_splits,
    balance_indices,
    parse_balance,
    read_patients,
    white_keep_mask,
)

__all__ = ["BuildOptions", "DatasetPlan", "make_plan", "origins"]


@dataclass(frozen=True, eq=False)
class BuildOptions:
    """The choices of one :func:`~prostate_fast.dataset.build_dataset` call (already checked)."""

    white_threshold: float
    white_keep: float
    balance: str | Mapping[str, float] | Sequence[float] | None
    balance_splits: Sequence[str]
    class_weights: bool
    split: Mapping[str, Sequence[str]] | None
    fractions: Sequence[float]
    folds: int | None
    fold: int | None
    patients: str | os.PathLike[str] | Mapping[str, str] | None
    encoding: str
    quality: int
    png_compression: int
    seed: int

    def split_names(self) -> list[str]:
        """The splits the dataset has, in order."""
        if self.folds is not None:
            return ["train", "val"] + (["test"] if self.split and "test" in self.split else [])
        if self.split:
            return [s for s in SPLIT_NAMES if s == "train" or s in self.split]
        return list(SPLIT_NAMES[: len(self.fractions)])


@dataclass(frozen=True, eq=False)
class DatasetPlan:
    """What goes where: the tables, their merged classes, and per split its jobs and counts.

    ``splits`` maps split name (in order) to ``{"records", "per_class", "slides",
    "white_tiles", "white_kept", "white_records"}``; ``slides`` maps slide name to its counts
    (see :class:`~.summary.DatasetSummary`); ``jobs`` maps split name to one job per slide.
    """

    sources: list[TableSource]
    classes: list[str]
    shares: np.ndarray | None
    splits: dict[str, dict[str, Any]]
    slides: dict[str, dict[str, Any]]
    jobs: dict[str, list[TileJob]]


def origins(sources: Sequence[TableSource]) -> str:
    """The label tables of ``sources``, for a message (the first three, then a count)."""
    names = [s.origin for s in sources]
    more = f" and {len(names) - 3} more" if len(names) > 3 else ""
    return ", ".join(names[:3]) + more


def make_plan(tables: Sequence[Any], opts: BuildOptions) -> DatasetPlan:
    """Load the tables and select every split's tiles (see the module docstring).

    Raises
    ------
    DatasetError
        Missing table or slide file, a slide that is not the one labelled (other dimensions or
        content fingerprint) or a tile outside its slide (see
        :func:`~prostate_fast.label.table.check_table_slide`), tables with different classes, an
        empty selection, a split left empty, a patient in two splits.
    ValueError
        A bad ``balance`` or ``split`` argument.

    Warns
    -----
    SmallSplitWarning
        A val or test split with fewer than 20 tiles of a class.
    """
    sources, classes = load_tables(tables)
    shares = parse_balance(opts.balance, classes)
    if sum(len(s.label) for s in sources) == 0:
        raise DatasetError(f"{origins(sources)}: empty selection: no labelled tile in the table")
    missing = [str(s.slide_path) for s in sources if not s.slide_path.is_file()]
    if missing:
        raise DatasetError(f"slide file(s) not found: {', '.join(missing)}")
    for s in sources:
        _check_slide(s)
    names = [s.slide_name for s in sources]
    lookup = _name_lookup(names)
    patient_of = _patient_map(opts.patients, names, lookup)
    rng = np.random.default_rng(opts.seed)
    assign = assign_splits(
        names,
        patient_of,
        split=opts.split,
        fractions=opts.fractions,
        folds=opts.folds,
        fold=opts.fold,
        lookup=lookup,
        rng=rng,
        counts={s.slide_name: _kept_counts(s, len(classes), opts) for s in sources},
    )
    plan = DatasetPlan(sources, classes, shares, {}, {}, {})
    for name in opts.split_names():
        members = [s for s in sources if assign[s.slide_name] == name]
        if not members:
            raise DatasetError(f"split {name!r} is empty: no slide is assigned to it")
        balanced = shares if name in opts.balance_splits else None
        pos = _select(name, members, classes, opts, balanced, rng, plan.splits)
        plan.jobs[name] = _split_jobs(name, members, pos, classes, patient_of, opts, plan.slides)
    return plan


def _kept_counts(src: TableSource, n_classes: int, opts: BuildOptions) -> np.ndarray:
    """Per-class counts of the slide's tiles that white cleaning keeps for sure (not white)."""
    keep = src.white_fraction <= opts.white_threshold
    return np.bincount(src.label[keep], minlength=n_classes)


def _check_slide(src: TableSource) -> None:
    """DatasetError unless the table's slide is the one labelled and its tiles lie on it."""
    from ..label.table import check_table_slide
    from ..slide import open_slide

    with open_slide(src.slide_path) as slide:
        check_table_slide(src, slide, src.origin)


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


def _select(
    name: str,
    members: Sequence[TableSource],
    classes: Sequence[str],
    opts: BuildOptions,
    shares: np.ndarray | None,
    rng: np.random.Generator,
    split_info: dict[str, dict[str, Any]],
) -> np.ndarray:
    """White cleaning then (when ``shares``) balancing of one split: the kept positions.

    Positions index the split's tiles concatenated over ``members``; the split's counts are
    recorded in ``split_info[name]``.
    """
    n_cls = len(classes)
    labels = np.concatenate([s.label for s in members])
    white = np.concatenate([s.white_fraction for s in members]) > opts.white_threshold
    keep, kept_white = white_keep_mask(white, opts.white_keep, rng)
    pos = np.flatnonzero(keep)
    per_class = np.bincount(labels[pos], minlength=n_cls)
    if shares is not None:
        short = [classes[c] for c in range(n_cls) if shares[c] > 0 and per_class[c] == 0]
        if short:
            raise DatasetError(
                f"split {name!r} has no {', '.join(map(repr, short))} tile to balance "
                f"{opts.balance!r} (slides {', '.join(s.slide_name for s in members)})"
            )
        sub, per_class = balance_indices(labels[pos], shares, rng)  # the counts it kept
        pos = pos[sub]
    if len(pos) == 0:
        raise DatasetError(
            f"{origins(members)}: split {name!r} is empty after white cleaning and balancing"
        )
    for c in np.flatnonzero(per_class < MIN_CLASS_TILES) if name != "train" else []:
        warnings.warn(
            f"split {name!r} has only {per_class[c]} {classes[c]!r} tile(s) "
            f"(< {MIN_CLASS_TILES}): an AUC or threshold on it is unreliable "
            f"(slides {', '.join(s.slide_name for s in members)})",
            SmallSplitWarning,
            stacklevel=2,
        )
    split_info[name] = {
        "records": int(len(pos)),
        "per_class": [int(v) for v in per_class],
        "slides": [s.slide_name for s in members],
        "white_tiles": int(white.sum()),
        "white_kept": int(kept_white),
        "white_records": int(white[pos].sum()),
    }
    return pos


def _split_jobs(
    name: str,
    members: Sequence[TableSource],
    pos: np.ndarray,
    classes: Sequence[str],
    patient_of: Mapping[str, str],
    opts: BuildOptions,
    slides_info: dict[str, dict[str, Any]],
) -> list[TileJob]:
    """One job per slide of the split with its kept tiles; the slides' counts go to ``slides_info``."""
    starts = np.cumsum([0] + [len(s.label) for s in members])
    jobs = []
    for i, s in enumerate(members):
        mine = pos[(pos >= starts[i]) & (pos < starts[i + 1])] - starts[i]
        lab = s.label[mine]
        patient = patient_of[s.slide_name]
        jobs.append(
            TileJob(
                s.slide_path,
                s.slide_name,
                patient,
                s.tile_size,
                s.level,
                s.downsample,
                s.choice,
                s.l0_xy[mine],
                lab,
                s.white_fraction[mine],
            )
        )
        sw = s.white_fraction > opts.white_threshold
        slides_info[s.slide_name] = {
            "split": name,
            "patient": patient,
            "tiles": int(len(s.label)),
            "white_tiles": int(sw.sum()),
            "white_records": int(sw[mine].sum()),
            "records": int(len(mine)),
            "per_class": [int(v) for v in np.bincount(lab, minlength=len(classes))],
        }
    return jobs
