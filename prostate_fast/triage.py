"""Slide-level triage: which slides can wait? A per-slide score calibrated on validation slides.

A lab's question is per slide. :func:`run_triage` reads the score grids (``*-scores.npz``, as
``predict``, ``screen`` and ``batch`` write them) of two disjoint sets of slides with known
slide-level truth: the **calibration** (validation) slides choose a threshold, the **test** slides
measure it. It writes ``report.json`` and ``report.txt``.

Slide score
-----------
The mean probability of the slide's most suspicious tiles: the top 1 % of its tissue tiles, at
least 10 (all of them on a smaller slide); a tile's probability is that of its most probable
non-negative class (two classes: p(cancer)). This is the worklist's ``score`` of ``screen`` (the
same definition), so a triage threshold applies to a worklist as it is. Why this and not a model
fitted on per-slide features (tile count over a threshold, positive area, score histogram): it
has no parameter to fit, so the few validation slides a lab has (tens) only set a threshold; a
fitted model would spend them on its coefficients and overfit. Averaging ten or more tiles keeps
one noisy tile from deciding, yet a small focus of cancer (tens of tiles) still dominates; it does
not grow with the amount of tissue, as counts and areas do on benign slides.

Threshold
---------
The calibration sets the threshold at 100 % slide sensitivity on the calibration slides, with a
relative margin: ``threshold = (1 - margin) * lowest calibration cancer score`` (default margin
0.2: a cancer slide scoring up to 20 % below the weakest calibration cancer slide is still
flagged). A slide is **set aside** (can wait) when its score is below the threshold. Why relative
and not on the logit scale: a well-trained model's top tiles reach p = 1.0 exactly in float32, so
the weakest cancer slide often scores 1.0 and any logit margin ends within 1e-6 of 1 (it did with
the demo's model), leaving no margin at all; a few validation slides cannot show how far below
them a new cancer slide may fall, so the margin is a fixed, stated safety share.

Report (test slides)
--------------------
Slide ROC AUC; at the calibrated threshold: sensitivity, specificity, the share of benign slides
set aside (equal to the specificity; it is "at 100 % sensitivity" only when the sensitivity is 1,
which the report states) and the share of all slides set aside (the pathologist's saved work,
Campanella et al. 2019's figure); and, for comparison, the share of benign slides scoring below the
lowest test cancer slide (the best any threshold could do on these test slides at 100 %
sensitivity: an oracle, not a result). Every slide's score and decision is listed. A slide without
tissue tiles (``screen``'s "no tissue") is never set aside: the model saw nothing, so it needs a
read (its triage score is 1.0).

Truth is a CSV with the columns ``slide`` and ``label``: ``slide`` the slide's file name or its
stem (as in the score grid's ``slide_name``); ``label`` ``cancer``/``positive``/``1``/``true``
or ``benign``/``negative``/``0``/``false``.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ProstateFastError

__all__ = [
    "SlideScore",
    "TriageReport",
    "calibrate_threshold",
    "load_slide_scores",
    "read_slide_truth",
    "run_triage",
    "slide_score",
    "top_count",
    "triage",
    "write_triage_report",
]

#: Tiles averaged by the slide score: the top share of the tissue tiles, at least TOP_K.
TOP_K, TOP_SHARE = 10, 0.01
#: Default relative margin of the threshold below the lowest calibration cancer score.
MARGIN = 0.2
_POSITIVE = frozenset({"cancer", "positive", "1", "true", "yes"})
_NEGATIVE = frozenset({"benign", "negative", "0", "false", "no"})


@dataclass(frozen=True)
class SlideScore:
    """One slide's triage score and truth (``label`` 1: cancer, 0: benign)."""

    slide: str
    label: int
    score: float
    n_tiles: int
    path: str = ""

    @property
    def triage_score(self) -> float:
        """The score triage decides on: 1.0 for a slide without tissue tiles (the model saw
        nothing, so it needs a read, as on the worklist), else :attr:`score`."""
        return self.score if self.n_tiles else 1.0


def slide_score(prob: np.ndarray) -> float:
    """Triage score of one slide from its tiles' class probabilities (see the module notes).

    Parameters
    ----------
    prob : numpy.ndarray
        (n, n_classes) class probabilities of the slide's tissue tiles, class 0 the negative one
        (``ScoreGrid.prob``).

    Returns
    -------
    float
        Mean of the top ``max(10, ceil(n / 100))`` tile probabilities; 0.0 without tiles.
    """
    prob = np.asarray(prob, dtype=np.float64)
    if prob.ndim != 2 or prob.shape[1] < 2:
        raise ValueError(f"prob must be (n, n_classes >= 2), got shape {prob.shape}")
    if not len(prob):
        return 0.0
    p = np.sort(prob[:, 1:].max(axis=1))[::-1]
    return float(p[: top_count(len(p))].mean())


def top_count(n: int) -> int:
    """Tiles the slide score averages: ``max(TOP_K, ceil(n * TOP_SHARE))`` (also the worklist's
    score, :func:`prostate_fast.screen.cancer_score`), computed in integers."""
    share = round(1 / TOP_SHARE)
    return max(TOP_K, -(-n // share))


def _label(value: str, path: Path, line: int) -> int:
    v = value.strip().lower()
    if v in _POSITIVE or v in _NEGATIVE:
        return int(v in _POSITIVE)
    raise ProstateFastError(f"{path}: line {line}: label must be cancer or benign, got {value!r}")


def read_slide_truth(path: str | os.PathLike[str]) -> dict[str, int]:
    """Slide-level truth from a CSV with the columns ``slide`` and ``label`` (module notes).

    Returns
    -------
    dict
        Slide name (as written) to 1 (cancer) or 0 (benign).

    Raises
    ------
    ProstateFastError
        Missing or unreadable file, missing column, unknown label, a slide twice (names the file).
    """
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.DictReader(fh))
            fields = set(rows[0]) if rows else set()
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ProstateFastError(f"{path}: cannot read the truth CSV ({exc})") from exc
    if not {"slide", "label"} <= fields:
        raise ProstateFastError(f"{path}: the truth CSV needs the columns slide and label")
    truth: dict[str, int] = {}
    for i, row in enumerate(rows, start=2):
        name = (row["slide"] or "").strip()
        if not name or name in truth:
            raise ProstateFastError(f"{path}: line {i}: empty or repeated slide {name!r}")
        truth[name] = _label(row["label"] or "", path, i)
    return truth


def _grid_files(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Score-grid files: each path itself, or a folder's ``*-scores.npz`` (recursively, sorted)."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(p.rglob("*-scores.npz"))
            if not found:
                raise ProstateFastError(f"{p}: no score grid (*-scores.npz) in this folder")
            files += found
        else:
            files.append(p)
    return files


def _truth_of(name: str, truth: Mapping[str, int], path: Path) -> int:
    for key in (name, Path(name).stem, name.split(".", 1)[0]):
        if key in truth:
            return truth[key]
    raise ProstateFastError(f"{path}: slide {name!r} is not in the truth CSV")


def load_slide_scores(
    paths: Iterable[str | os.PathLike[str]], truth: Mapping[str, int]
) -> list[SlideScore]:
    """Score every slide of ``paths`` (score-grid files or folders of them) and attach its truth.

    Raises
    ------
    ProstateFastError
        Unreadable score grid, a slide without truth, or a slide twice (names the file).
    """
    from .predict.scoregrid import load_score_grid

    out: list[SlideScore] = []
    seen: dict[str, Path] = {}
    for f in _grid_files(paths):
        grid = load_score_grid(f)
        if grid.slide_name in seen:
            raise ProstateFastError(
                f"{f}: slide {grid.slide_name!r} also in {seen[grid.slide_name]}"
            )
        seen[grid.slide_name] = f
        label = _truth_of(grid.slide_name, truth, f)
        out.append(
            SlideScore(grid.slide_name, label, slide_score(grid.prob), len(grid.prob), str(f))
        )
    return out


def calibrate_threshold(calibration: Sequence[SlideScore], margin: float = MARGIN) -> float:
    """Threshold at 100 % slide sensitivity on ``calibration``: ``(1 - margin)`` times its lowest
    cancer slide's score (module notes); slides scoring below it are set aside.

    Raises
    ------
    ValueError
        ``margin`` outside [0, 1), or no cancer slide among the calibration slides.
    """
    if isinstance(margin, bool) or not isinstance(margin, int | float) or not 0 <= margin < 1:
        raise ValueError(f"margin must be a number in [0, 1), got {margin!r}")
    cancer = [s.triage_score for s in calibration if s.label == 1]
    if not cancer:
        raise ValueError("the calibration slides need at least one cancer slide")
    return (1.0 - margin) * min(cancer)


@dataclass(frozen=True)
class TriageReport:
    """Triage of the test slides at a threshold calibrated on the calibration slides."""

    threshold: float
    margin: float
    lowest_calibration_cancer: float
    n_calibration: int
    n_test: int
    n_test_cancer: int
    n_test_benign: int
    auc: float
    sensitivity: float
    specificity: float
    benign_set_aside: float
    slides_set_aside: float
    oracle_benign_set_aside: float
    calibration: tuple[SlideScore, ...]
    test: tuple[SlideScore, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready report (``report.json``); each slide with its ``set_aside`` decision."""
        d = asdict(self)
        for k in ("calibration", "test"):
            aside = [s.triage_score < self.threshold for s in getattr(self, k)]
            d[k] = [r | {"set_aside": a} for r, a in zip(d[k], aside, strict=True)]
        head = {"format": "prostate-fast triage report", "version": 1}  # our mark (_outputs)
        return head | {"top_k": TOP_K, "top_share": TOP_SHARE} | d

    def summary(self) -> str:
        """The figures, one per line (what ``prostate-fast triage`` prints)."""
        full = self.sensitivity == 1.0
        missed = [s.slide for s in self.test if s.label == 1 and s.triage_score < self.threshold]
        lines = [
            f"slide triage: {self.n_calibration} calibration slides, {self.n_test} test slides "
            f"({self.n_test_cancer} cancer, {self.n_test_benign} benign)",
            f"threshold {self.threshold:.6g}: {self.margin:.0%} below the lowest calibration "
            f"cancer score {self.lowest_calibration_cancer:.6g}",
            f"slide AUC             {self.auc:.4f}",
            f"slide sensitivity     {self.sensitivity:.4f}"
            + ("" if full else f"  missed: {missed}"),
            f"slide specificity     {self.specificity:.4f}",
            f"benign set aside      {self.benign_set_aside:.4f}"
            + ("  (at 100 % slide sensitivity)" if full else "  (sensitivity below 100 %)"),
            f"all slides set aside  {self.slides_set_aside:.4f}",
            f"oracle benign share below the lowest test cancer score {self.oracle_benign_set_aside:.4f}",
        ]
        return "\n".join(lines) + "\n"

    def report(self) -> str:
        """Plain-text report (``report.txt``): the summary, then every slide's score and decision."""
        lines = [
            "# prostate-fast slide triage report",
            self.summary(),
            f"{'split':12}{'slide':32}{'label':>7}{'score':>10}  set aside",
        ]
        for split, rows in (("calibration", self.calibration), ("test", self.test)):
            for s in rows:
                label = "cancer" if s.label else "benign"
                aside = "yes" if s.triage_score < self.threshold else "no"
                lines.append(f"{split:12}{s.slide:32}{label:>7}{s.score:10.6f}  {aside}")
        return "\n".join(lines) + "\n"


def triage(
    calibration: Sequence[SlideScore], test: Sequence[SlideScore], margin: float = MARGIN
) -> TriageReport:
    """Calibrate a threshold on ``calibration`` and report it on ``test`` (module notes).

    Raises
    ------
    ValueError
        No test slide, a slide in both sets, a bad ``margin``, or no calibration cancer slide.
    """
    from .metrics import confusion, roc_auc

    if not test:
        raise ValueError("triage needs at least one test slide")
    both = {s.slide for s in calibration} & {s.slide for s in test}
    if both:
        raise ValueError(f"slides in both the calibration and the test set: {sorted(both)}")
    t = calibrate_threshold(calibration, margin)
    y = np.array([s.label for s in test], bool)
    score = np.array([s.triage_score for s in test], np.float64)
    aside = score < t
    c = confusion(y, ~aside)  # a slide not set aside is a positive test
    lowest = float(score[y].min()) if y.any() else math.inf
    return TriageReport(
        threshold=t,
        margin=float(margin),
        lowest_calibration_cancer=min(s.triage_score for s in calibration if s.label == 1),
        n_calibration=len(calibration),
        n_test=len(test),
        n_test_cancer=c.tp + c.fn,
        n_test_benign=c.tn + c.fp,
        auc=roc_auc(y, score),
        sensitivity=c.sensitivity,
        specificity=c.specificity,
        benign_set_aside=c.specificity,
        slides_set_aside=float(aside.mean()),
        oracle_benign_set_aside=confusion(y, score >= lowest).specificity,
        calibration=tuple(calibration),
        test=tuple(test),
    )


def write_triage_report(
    report: TriageReport, out_dir: str | os.PathLike[str], *, overwrite: bool = False
) -> tuple[Path, Path]:
    """Write ``report.json`` and ``report.txt`` into ``out_dir``, each atomically; both are checked
    before either is written (``FileExistsError`` for an existing one unless ``overwrite``)."""
    import contextlib

    from ._util import atomic_path, check_outputs, write_json

    out = Path(out_dir)
    files = check_outputs([out / "report.json", out / "report.txt"], overwrite=overwrite)
    with contextlib.ExitStack() as stack:
        tmp = [stack.enter_context(atomic_path(f, overwrite=overwrite)) for f in files]
        write_json(tmp[0], report.to_dict())
        tmp[1].write_text(report.report(), encoding="utf-8")
    return files[0], files[1]


def run_triage(
    calibration: Sequence[str | os.PathLike[str]],
    test: Sequence[str | os.PathLike[str]],
    truth: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    margin: float = MARGIN,
    overwrite: bool = False,
) -> TriageReport:
    """Triage ``test`` score grids at a threshold calibrated on ``calibration`` ones; write the
    report into ``out_dir`` (``prostate-fast triage``).

    Parameters
    ----------
    calibration, test : sequence of path
        Score-grid files (``.npz``/``.csv``) or folders searched for ``*-scores.npz``.
    truth : path
        Slide-level truth CSV (:func:`read_slide_truth`).
    out_dir : path
        Report folder: ``report.json`` and ``report.txt``.
    margin : float
        Relative margin of the threshold below the lowest calibration cancer score, in [0, 1)
        (default 0.2).
    overwrite : bool
        Replace an existing report.

    Returns
    -------
    TriageReport

    Raises
    ------
    ProstateFastError
        Unreadable truth or score grid, a slide without truth (names the file).
    ValueError
        Empty test set, a slide in both sets, a bad margin, no calibration cancer slide.
    FileExistsError
        The report exists and ``overwrite`` is false.
    """
    from ._util import check_outputs

    out = Path(out_dir)
    check_outputs([out / "report.json", out / "report.txt"], overwrite=overwrite)
    labels = read_slide_truth(truth)
    report = triage(load_slide_scores(calibration, labels), load_slide_scores(test, labels), margin)
    write_triage_report(report, out, overwrite=overwrite)
    return report
