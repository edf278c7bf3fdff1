"""Which tiles go into a dataset, and into which split: the pure-NumPy part of ``dataset``.

Every random choice draws from one ``numpy.random.Generator`` passed in by the caller, in a fixed
order (split assignment, then per split in the order train, val, test: white tiles kept, then
class undersampling), over slides in sorted order, so one seed gives one dataset.
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
) -> dict[str, str]:
    """Slide → split name. Patients (or slides, without a mapping) never straddle two splits.

    Explicit ``split`` lists fix their slides; slides not listed go to ``train`` unless ``folds``
    is given, in which case ``split`` may only name ``test`` slides and the others are dealt into
    folds (fold ``fold`` is ``val``). Without lists, groups are shuffled and dealt by
    ``fractions`` (train, val[, test]), each split getting at least one group.
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
        for g, name in _deal(order, folds, fold, fractions).items():
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
    order: Sequence[str], folds: int | None, fold: int | None, fractions: Sequence[float]
) -> dict[str, str]:
    """Group (patient or slide, in shuffled ``order``) → split: by folds, else by fractions."""
    out: dict[str, str] = {}
    if folds is not None:
        if len(order) < folds:
            raise DatasetError(
                f"{folds} folds need at least {folds} slides or patients, got {len(order)}"
            )
        parts = np.array_split(np.arange(len(order)), folds)
        val = set(parts[int(fold or 0)].tolist())
        return {g: "val" if i in val else "train" for i, g in enumerate(order)}
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
