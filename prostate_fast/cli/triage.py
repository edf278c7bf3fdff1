"""CLI subcommand ``triage``: which slides can wait, at a threshold calibrated on validation slides."""

from __future__ import annotations

import argparse
from pathlib import Path


def _margin(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        v = -1.0
    if not 0 <= v < 1:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1), got {text!r}")
    return v


def _add_triage(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "triage",
        help="slide-level triage: calibrate a slide threshold, report which slides can wait",
        description="Score every slide (mean of its top 1 % tile probabilities, at least 10 "
        "tiles: the worklist score), set the threshold at (1 - MARGIN) times the lowest "
        "score of a cancer slide among the calibration (validation) slides, and report on the test slides: slide AUC, "
        "sensitivity, specificity and the share of benign slides set aside. Writes "
        "OUT/report.json and OUT/report.txt.",
    )
    p.add_argument(
        "--calibration",
        type=Path,
        nargs="+",
        required=True,
        help="score grids (*-scores.npz) of the validation slides, or folders holding them",
    )
    p.add_argument(
        "--test", type=Path, nargs="+", required=True, help="score grids of the test slides"
    )
    p.add_argument(
        "--truth", type=Path, required=True, help="CSV with columns slide,label (cancer/benign)"
    )
    p.add_argument("-o", "--out", type=Path, required=True, help="report folder")
    p.add_argument(
        "--margin",
        type=_margin,
        default=None,
        help="relative margin below the lowest calibration cancer score (default 0.2)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing report")
    p.set_defaults(handler=_cmd_triage)


def _cmd_triage(args: argparse.Namespace) -> int:
    from ..triage import MARGIN, run_triage

    margin = MARGIN if args.margin is None else args.margin
    report = run_triage(
        args.calibration, args.test, args.truth, args.out, margin=margin, overwrite=args.overwrite
    )
    print(report.summary(), end="")
    print(f"report:  {args.out / 'report.json'}")
    return 0
