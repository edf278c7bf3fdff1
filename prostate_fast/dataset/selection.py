"""Which tiles go into a dataset, and into which split: the pure-NumPy part of ``dataset``.

Every random choice draws from one ``numpy.random.Generator`` passed in by the caller, in a fixed
order (split assignment, then per split in the order train, val, test: white tiles kept, then
class undersampling), over slides in sorted order, so one seed gives one dataset.

Folds (:func:`stratified_group_folds`) are grouped and stratified: whole patients (or slides)
go to one fold, dealt so that every fold's class counts come as close as they can to an equal
share of each class.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ..errors import DatasetError

__all__ = [
    "SPLIT_NAMES",
    "apportion",
    "assign_splits",
    "balance_indices",
    "check_build_args",
    "parse_balance",
    "read_patients",
    "stratified_group_folds",
    "white_keep_mask",
]

SPLIT_NAMES = ("train", "val", "test")
_EPS = 1e-9


def _floor(x: float) -> int:
    return int(math.floor(x + _EPS))


def check_build_args(
    white_threshold: float,
    white_keep: float,
    fractions: Sequence[float],
    folds: int | None,
    fold: int | None,
    encoding: str,
    quality: int,
    png_compression: int,
    balance_splits: Sequence[str],
) -> None:
    """ValueError naming the first bad argument of ``build_dataset``."""
    if not 0.0 <= float(white_threshold) <= 1.0:
        raise ValueError(f"white_threshold must be in [0, 1], got {white_threshold!r}")
    if not 0.0 <= float(white_keep) <= 1.0:
        raise ValueError(f"white_keep must be in [0, 1], got {white_keep!r}")
    fr = [float(f) for f in fractions]
    if not 2 <= len(fr) <= 3 or any(not f > 0 for f in fr) or abs(sum(fr) - 1.0) > 1e-6:
        raise ValueError(
            f"fractions must be 2 or 3 positive numbers summing to 1 (train, val[, test]), "
            f"got {fractions!r}"
        )
    if folds is not None:
        if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
            raise ValueError(f"folds must be an integer >= 2, got {folds!r}")
        if fold is None or not 0 <= int(fold) < folds:
            raise ValueError(f"fold must be in [0, {folds}) when folds is given, got {fold!r}")
    elif fold is not None:
        raise ValueError("fold is given without folds")
    if encoding not in ("png", "jpeg"):
        raise ValueError(f"encoding must be 'png' or 'jpeg', got {encoding!r}")
    if not 1 <= int(quality) <= 100:
        raise ValueError(f"quality must be in [1, 100], got {quality!r}")
    if not 0 <= int(png_compression) <= 9:
        raise ValueError(f"png_compression must be in [0, 9], got {png_compression!r}")
    bad = [s for s in balance_splits if s not in SPLIT_NAMES]
    if bad:
        raise ValueError(f"balance_splits must be among {SPLIT_NAMES}, got {bad}")


def parse_balance(balance: object, classes: Sequence[str]) -> np.ndarray | None:
    """Class shares (summing to 1) from ``"50:50"``, ``"all"``, a sequence or a dict; None = all.

    ``"a:b"`` lists one share per class, in class order (for two classes: non-cancer:cancer).
    A dict maps class names to shares; classes it does not name get share 0 (they are dropped).
    """
    if balance is None or (isinstance(balance, str) and balance.strip().lower() == "all"):
        return None
    n = len(classes)
    if isinstance(balance, str):
        parts = balance.replace("/", ":").split(":")
        try:
            values = [float(p) for p in parts]
        except ValueError:
            raise ValueError(f"balance must be like '50:50' or 'all', got {balance!r}") from None
    elif isinstance(balance, Mapping):
        unknown = sorted(set(map(str, balance)) - set(classes))
        if unknown:
            raise ValueError(
                f"balance names unknown classes {unknown}; classes are {list(classes)}"
            )
        values = [float(balance.get(c, 0.0)) for c in classes]
    elif isinstance(balance, Sequence):
        values = [float(v) for v in balance]
    else:
        raise ValueError(f"balance must be a ratio string, a dict or 'all', got {balance!r}")
    if len(values) != n:
        raise ValueError(
            f"balance {balance!r} gives {len(values)} shares for {n} classes {classes}"
        )
    shares = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(shares)) or np.any(shares < 0) or shares.sum() <= 0:
        raise ValueError(
            f"balance shares must be non-negative with a positive sum, got {balance!r}"
        )
    return shares / shares.sum()


def apportion(shares: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Largest total N and per-class counts n_i <= counts with |n_i - share_i * N| < 1.

    N = floor(min over classes with a positive share of count_i / share_i), split by largest
    remainders. A class with a positive share and no tile gives N = 0.
    """
    shares = np.asarray(shares, np.float64)
    counts = np.asarray(counts, np.int64)
    pos = shares > 0
    total = min(_floor(counts[i] / shares[i]) for i in np.flatnonzero(pos))
    ideal = shares * total
    n = np.floor(ideal + _EPS).astype(np.int64)
    rest = total - int(n.sum())
    if rest > 0:
        order = np.argsort(-(ideal - n), kind="stable")
        n[order[:rest]] += 1
    return np.minimum(n, counts)


def white_keep_mask(
    white: np.ndarray, keep: float, rng: np.random.Generator
) -> tuple[np.ndarray, int]:
    """Boolean mask of tiles kept: every non-white tile and round(keep * n_white) white ones."""
    idx = np.flatnonzero(white)
    k = _floor(keep * len(idx) + 0.5)
    mask = ~white
    if k:
        mask[np.sort(rng.choice(idx, size=k, replace=False))] = True
    return mask, k


def balance_indices(
    labels: np.ndarray, shares: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Positions (sorted) kept by undersampling ``labels`` to ``shares``; and the per-class counts."""
    counts = np.bincount(labels, minlength=len(shares))
    target = apportion(shares, counts)
    keep = []
    for c, n in enumerate(target):
        idx = np.flatnonzero(labels == c)
        if n == len(idx):
            keep.append(idx)
        elif n:
            keep.append(rng.choice(idx, size=int(n), replace=False))
    out = np.sort(np.concatenate(keep)) if keep else np.zeros(0, np.int64)
    return out, target


def read_patients(patients: str | Path | Mapping[str, object]) -> dict[str, str]:
    """Slide → patient from a dict or a CSV with ``slide`` and ``patient`` columns (any order)."""
    if isinstance(patients, Mapping):
        return {str(k): str(v) for k, v in patients.items()}
    path = Path(patients)
    if not path.is_file():
        raise DatasetError(f"{path}: no such patients CSV")
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            fields = {(f or "").strip().lower(): f for f in reader.fieldnames or []}
            if "slide" not in fields or "patient" not in fields:
                raise DatasetError(
                    f"{path}: a patients CSV needs a header with 'slide' and 'patient' columns, "
                    f"got {reader.fieldnames}"
                )
            out: dict[str, str] = {}
            for row in reader:
                slide = (row[fields["slide"]] or "").strip()
                patient = (row[fields["patient"]] or "").strip()
                if not slide:
                    continue
                if not patient:
                    raise DatasetError(f"{path}: slide {slide!r} has an empty patient")
                if out.get(slide, patient) != patient:
                    raise DatasetError(f"{path}: slide {slide!r} is given two patients")
                out[slide] = patient
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"{path}: cannot read the patients CSV: {exc}") from exc
    return out


def _resolve(names: Sequence[str], lookup: Mapping[str, str], what: str) -> list[str]:
    out = []
    for name in names:
        key = str(name)
        if key not in lookup:
            raise DatasetError(f"{what} names slide {key!r}, which no label table has")
        out.append(lookup[key])
    return out


def _counts_for(fractions: Sequence[float], n: int) -> list[int]:
    """Groups per split by largest remainder, at least one each (n >= len(fractions))."""
    ideal = [f * n for f in fractions]
    counts = [_floor(v) for v in ideal]
    for i in sorted(range(len(ideal)), key=lambda i: counts[i] - ideal[i])[: n - sum(counts)]:
        counts[i] += 1
    for i in range(len(counts)):
        while counts[i] == 0:
            donor = max(range(len(counts)), key=lambda j: counts[j])
            counts[donor] -= 1
            counts[i] += 1
    return counts


def assign_splits(
    slides: Sequence[str],
    patient_of: Mapping[str, str],
    *,
    split: Mapping[str, Sequence[str]] | None,
    fractions: Sequence[float],
    folds: int | None,
    fold: int | None,
    lookup: Mapping[str, str],
    rng: np.random.Generator,
    counts: Mapping[str, Sequence[int]] | None = None,
) -> dict[str, str]:
    """Slide → split name. Patients (or slides, without a mapping) never straddle two splits.

    Explicit ``split`` lists fix their slides; slides not listed go to ``train`` unless ``folds``
    is given, in which case ``split`` may only name ``test`` slides and the others are dealt into
    folds (fold ``fold`` is ``val``) by :func:`stratified_group_folds` on the per-class tile
    ``counts`` of each slide (no counts: by size only, one tile per slide). Without lists, groups
    are shuffled and dealt by ``fractions`` (train, val[, test]), each split getting at least one
    group.
    """
    fixed = _listed(split, folds, lookup)
    free = [s for s in slides if s not in fixed]
    if split and folds is None:
        fixed.update({s: "train" for s in free})
        free = []
    groups: dict[str, list[str]] = {}
    for s in free:
        groups.setdefault(patient_of[s], []).append(s)
    for s, name in fixed.items():  # a patient with a fixed slide must not have free slides
        p = patient_of[s]
        if p in groups:
            raise DatasetError(
                f"patient {p!r} has slide {s!r} in split {name!r} and unlisted slides "
                f"{groups[p]}; list them in the same split"
            )
    assign = dict(fixed)
    names = sorted(groups)
    if names:
        order = [names[i] for i in rng.permutation(len(names))]
        g_counts = {
            g: np.sum([np.asarray((counts or {}).get(s, [1]), np.int64) for s in groups[g]], 0)
            for g in order
        }
        for g, name in _deal(order, folds, fold, fractions, g_counts).items():
            for s in groups[g]:
                assign[s] = name
    by_patient: dict[str, set[str]] = {}
    for s, name in assign.items():
        by_patient.setdefault(patient_of[s], set()).add(name)
    mixed = {p: sorted(v) for p, v in by_patient.items() if len(v) > 1}
    if mixed:
        p, where = next(iter(sorted(mixed.items())))
        raise DatasetError(f"patient {p!r} would have slides in splits {where}; split by patient")
    return assign


def _listed(
    split: Mapping[str, Sequence[str]] | None, folds: int | None, lookup: Mapping[str, str]
) -> dict[str, str]:
    """Slide → split name for the slides the explicit ``split`` lists name."""
    fixed: dict[str, str] = {}
    for name, listed in (split or {}).items():
        if name not in SPLIT_NAMES:
            raise ValueError(f"split names must be among {SPLIT_NAMES}, got {name!r}")
        if folds is not None and name != "test":
            raise ValueError("with folds, split may only list 'test' slides")
        for slide in _resolve(list(listed), lookup, f"split {name!r}"):
            if fixed.get(slide, name) != name:
                raise DatasetError(
                    f"slide {slide!r} is listed in splits {fixed[slide]!r} and {name!r}"
                )
            fixed[slide] = name
    return fixed


def _deal(
    order: Sequence[str],
    folds: int | None,
    fold: int | None,
    fractions: Sequence[float],
    counts: Mapping[str, np.ndarray],
) -> dict[str, str]:
    """Group (patient or slide, in shuffled ``order``) → split: by folds, else by fractions."""
    out: dict[str, str] = {}
    if folds is not None:
        if len(order) < folds:
            raise DatasetError(
                f"{folds} folds need at least {folds} slides or patients, got {len(order)}"
            )
        of = stratified_group_folds({g: counts[g] for g in order}, folds)
        return {g: "val" if of[g] == int(fold or 0) else "train" for g in order}
    split_names = SPLIT_NAMES[: len(fractions)]
    if len(order) < len(fractions):
        raise DatasetError(
            f"{len(order)} slide(s) or patient(s) cannot fill {len(fractions)} splits "
            f"{list(split_names)}: a split would be empty"
        )
    start = 0
    for name, count in zip(split_names, _counts_for(fractions, len(order)), strict=True):
        for g in order[start : start + count]:
            out[g] = name
        start += count
    return out


def stratified_group_folds(counts: Mapping[str, Sequence[int]], folds: int) -> dict[str, int]:
    """Group → fold in ``range(folds)``: whole groups, class counts per fold as even as can be.

    Parameters
    ----------
    counts : mapping of str to sequence of int
        Per-class tile counts of each group (patient or slide), all of one length. The mapping's
        order breaks ties (shuffle it first for a seeded deal).
    folds : int
        Number of folds, at most the number of groups.

    Returns
    -------
    dict
        Group → fold index. Every fold gets at least one group.

    Raises
    ------
    ValueError
        ``folds`` < 2 or more folds than groups.

    Notes
    -----
    Greedy: groups, largest first (stable, so equal sizes keep the given order), each go to the
    fold where adding them least increases ``sum over folds and classes of ((n_fc - T_c) /
    T_c)^2``, with ``T_c`` the class's total divided by ``folds``; ties go to the fold with fewer
    tiles, then the lower index. A fold still empty when as many groups are left as empty folds
    takes the next group. A class rarer than ``folds`` groups cannot reach every fold.
    """
    names = list(counts)
    if folds < 2 or folds > len(names):
        raise ValueError(f"folds must be in [2, {len(names)}] for {len(names)} groups, got {folds}")
    c = np.array([np.asarray(counts[g], np.float64) for g in names]).reshape(len(names), -1)
    target = c.sum(axis=0) / folds
    weight = np.where(target > 0, 1.0 / np.maximum(target, 1e-300) ** 2, 0.0)
    fold_c = np.zeros((folds, c.shape[1]))
    n_groups = np.zeros(folds, np.int64)
    out: dict[str, int] = {}
    for k, i in enumerate(np.argsort(-c.sum(axis=1), kind="stable")):
        empty = np.flatnonzero(n_groups == 0)
        if len(names) - k <= len(empty):
            f = int(empty[0])
        else:
            after = ((fold_c + c[i] - target) ** 2 - (fold_c - target) ** 2) @ weight
            key = np.lexsort((np.arange(folds), fold_c.sum(axis=1), np.round(after, 12)))
            f = int(key[0])
        fold_c[f] += c[i]
        n_groups[f] += 1
        out[names[i]] = f
    return out
