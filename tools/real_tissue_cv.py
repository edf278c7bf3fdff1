"""Cross-validate a training recipe on real images, holding out whole source images in turn.

Input: a folder of images (any format ``open_slide`` reads) and a ``labels.csv`` with ``file`` and
``label`` columns (one class per image: benign/malignant as in ``labelled/ucsb_breast``, or
benign/cancer), or one label mask per image (``--masks DIR``, ``IMAGE_STEM-mask.png``, codes of
``--mask-codes``). Every step runs through the CLI a user runs: ``tiles``, ``label --mask``,
``dataset``, ``train``, ``evaluate``.

The images are dealt into ``--folds`` folds, stratified by the image's class (every image of a fold
is held out together). For fold k: test = fold k, val = fold k+1 (the calibration split: epoch
selection and the stored threshold), train = the rest. The held-out fold is scored once by the
model of its turn, so the pooled out-of-fold predictions are honest: AUC, and sensitivity and
specificity at each model's stored threshold, with tiles grouped by image.

    python tools/real_tissue_cv.py $PROSTATE_FAST_DATA/labelled/ucsb_breast -o /tmp/cv \\
        --recipe default --epochs 12
    python tools/real_tissue_cv.py ... --recipe study --epochs 12

Writes ``OUT/summary.json`` and ``OUT/oof.csv`` (image, label, score, flagged); prints a summary.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

POSITIVE = {"malignant", "cancer", "tumour", "tumor", "positive", "1"}


def _cli() -> list[str]:
    return [sys.executable, "-m", "prostate_fast.cli"]


def _run(args: list[str], log: Path) -> None:
    with open(log, "a") as fh:
        fh.write("$ " + " ".join(map(str, args)) + "\n")
        fh.flush()
        done = subprocess.run(list(map(str, args)), stdout=fh, stderr=subprocess.STDOUT)
    if done.returncode:
        raise SystemExit(f"{log}: command failed ({done.returncode}): {' '.join(map(str, args))}")


def _images(folder: Path) -> list[tuple[Path, int]]:
    rows = list(csv.DictReader(open(folder / "labels.csv", newline="")))
    if not rows:
        raise SystemExit(f"{folder / 'labels.csv'}: no rows")
    return [(folder / r["file"], int(r["label"].strip().lower() in POSITIVE)) for r in rows]


def _folds(labels: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Stratified fold number of each image (one image = one group)."""
    rng = np.random.default_rng(seed)
    fold = np.empty(len(labels), int)
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        fold[idx] = (np.arange(len(idx)) + rng.integers(k)) % k
    return fold


def _tables(images: list[tuple[Path, int]], work: Path, args: argparse.Namespace) -> list[Path]:
    """``tiles`` + ``label --mask`` for every image (a whole-image mask of its class)."""
    import cv2

    out = []
    grid = ["--level", str(args.level), "--tile-size", str(args.tile_size)]
    for path, label in images:
        table = work / "labels" / f"{path.stem}.npz"
        out.append(table)
        if table.exists():
            continue
        table.parent.mkdir(parents=True, exist_ok=True)
        mask = work / "labels" / f"{path.stem}-mask.png"
        if args.masks:
            mask = args.masks / f"{path.stem}-mask.png"
        else:
            h, w = cv2.imread(str(path), cv2.IMREAD_UNCHANGED).shape[:2]
            cv2.imwrite(str(mask), np.full((max(h // 8, 1), max(w // 8, 1)), 1 + label, np.uint8))
        tiles = work / "labels" / f"{path.stem}-tiles.npz"
        log = work / "prepare.log"
        _run([*_cli(), "tiles", path, *grid, "-o", tiles, "--overwrite"], log)
        _run([*_cli(), "label", path, "--mask", mask, *grid, "-o", table, "--overwrite"], log)
    return out


def _fold_run(
    k: int, fold: np.ndarray, images: list, tables: list[Path], work: Path, args
) -> list[dict]:
    n = args.folds
    test = [images[i][0].name for i in np.flatnonzero(fold == k)]
    val = [images[i][0].name for i in np.flatnonzero(fold == (k + 1) % n)]
    d, m = work / f"fold{k}" / "dataset", work / f"fold{k}" / "model"
    log = work / f"fold{k}.log"
    if not (d / "dataset.json").exists():
        _run(
            [*_cli(), "dataset", *tables, "-o", d, "--balance", args.balance,
             "--val-slides", ",".join(val), "--test-slides", ",".join(test), "--overwrite",
             *args.dataset_args.split()],
            log,
        )  # fmt: skip
    ev = work / f"fold{k}" / "eval-test"
    if not (ev / "predictions.csv").is_file():  # a finished fold is kept (rerun to resume)
        _train_and_test(d, m, ev, log, args)
    return [
        {
            "fold": k,
            "image": r["slide"],
            "label": int(r["label"] == "cancer"),
            "score": float(r["score"]),
            "flagged": int(r["test_positive"] in ("1", "True", "true")),
        }
        for r in csv.DictReader(open(ev / "predictions.csv", newline=""))
    ]


def _train_and_test(d: Path, m: Path, ev: Path, log: Path, args: argparse.Namespace) -> None:
    train = [*_cli(), "train", d, "-o", m, "--overwrite", "--no-progress", "--quiet"]
    train += ["--recipe", args.recipe, "--seed", str(args.seed)]
    if args.epochs:
        train += ["--epochs", str(args.epochs)]
    train += args.train_args.split() if args.train_args else []
    _run(train, log)
    _run([*_cli(), "evaluate", m, d, "--split", "test", "-o", ev, "--overwrite"], log)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("images", type=Path, help="folder with images and labels.csv (file,label)")
    p.add_argument("-o", "--out", type=Path, required=True, help="work folder")
    p.add_argument("--masks", type=Path, help="folder of IMAGE_STEM-mask.png label masks")
    p.add_argument("--recipe", default="default", help="train --recipe (default, study)")
    p.add_argument("--epochs", type=int, help="train --epochs (the recipe's by default)")
    p.add_argument("--train-args", default="", help="more train options, one string")
    p.add_argument(
        "--dataset-args", default="", help="more dataset options, one string (--stain-normalise)"
    )
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--only-folds", default="", help="run only these folds (a,b)")
    p.add_argument("--balance", default="all", help="dataset --balance (all: keep every tile)")
    p.add_argument("--level", type=int, default=0)
    p.add_argument("--tile-size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    os.environ.setdefault("MXNET_ENGINE_TYPE", "NaiveEngine")
    from prostate_fast.metrics import bootstrap_intervals, confusion, roc_auc

    images = _images(args.images)
    labels = np.array([c for _, c in images])
    fold = _folds(labels, args.folds, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    tables = _tables(images, args.out, args)
    only = [int(v) for v in args.only_folds.split(",") if v] or range(args.folds)
    rows = [r for k in only for r in _fold_run(k, fold, images, tables, args.out, args)]
    with open(args.out / "oof.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    y = np.array([r["label"] for r in rows])
    s = np.array([r["score"] for r in rows])
    flagged = np.array([r["flagged"] for r in rows])
    groups = np.array([r["image"] for r in rows])
    c = confusion(y, flagged.astype(bool))
    ci = bootstrap_intervals(y, s, 0.5, groups, seed=args.seed)  # AUC
    ci_at = bootstrap_intervals(y, flagged.astype(float), 0.5, groups, seed=args.seed)
    ci.update({k: ci_at[k] for k in ("sensitivity", "specificity")})
    summary = {
        "recipe": args.recipe,
        "epochs": args.epochs,
        "train_args": args.train_args,
        "dataset_args": args.dataset_args,
        "images": len(images),
        "tiles": len(rows),
        "folds": list(only),
        "auc": roc_auc(y, s),
        "sensitivity": c.sensitivity,
        "specificity": c.specificity,
        "intervals": ci,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2, default=float) + "\n")
    print(json.dumps(summary, indent=2, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
