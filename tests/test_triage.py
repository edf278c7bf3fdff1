"""Slide-level triage: the arithmetic on hand-built score grids, the report files, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from prostate_fast.cli import main
from prostate_fast.errors import ProstateFastError
from prostate_fast.predict.scoregrid import ScoreGrid
from prostate_fast.screen import cancer_score
from prostate_fast.triage import (
    SlideScore,
    calibrate_threshold,
    read_slide_truth,
    run_triage,
    slide_score,
    triage,
)

# slide -> (label, score): every score a binary fraction, so every expected number is exact
CALIBRATION = {"c1": ("cancer", 0.75), "c2": ("cancer", 0.875), "b1": ("benign", 0.125)}
CALIBRATION |= {"b2": ("benign", 0.5)}
TEST = {"t-b1": ("benign", 0.25), "t-b2": ("benign", 0.5625), "t-b3": ("benign", 0.0625)}
TEST |= {"t-b4": ("benign", 0.75), "t-c1": ("cancer", 0.625), "t-c2": ("cancer", 0.375)}
Q = 0.25  # margin: with the lowest calibration cancer at 0.75, the threshold is 0.5625


def _grid(name: str, p: list[float]) -> ScoreGrid:
    n = len(p)
    pc = np.array(p, np.float32)
    return ScoreGrid(
        slide_path=f"/slides/{name}.tif",
        slide_name=f"{name}.tif",
        classes=("benign", "cancer"),
        colours={"cancer": (0, 255, 0)},
        tile_size=64,
        stride=64,
        level=0,
        downsample=1.0,
        scale=1.0,
        mpp=0.5,
        grid_shape=(1, n),
        tile_rc=np.stack([np.zeros(n), np.arange(n)], 1).astype(np.int32),
        l0_xy=np.stack([np.arange(n) * 64, np.zeros(n)], 1).astype(np.int64),
        prob=np.stack([1 - pc, pc], 1),
        thresholds={"cancer": 0.5},
        model="hand-built",
        engine="none",
    )


def _slide_tiles(score: float) -> list[float]:
    """12 tiles: ten at ``score`` (the top 10 averaged) and two below."""
    return [score] * 10 + [0.0, score / 2]


def _write(folder: Path, slides: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, (_, s) in slides.items():
        _grid(name, _slide_tiles(s)).save(folder / f"{name}-scores.npz")
    return folder


@pytest.fixture
def truth_csv(tmp_path) -> Path:
    rows = [f"{n},{lab}" for n, (lab, _) in (CALIBRATION | TEST).items()]
    path = tmp_path / "truth.csv"
    path.write_text("slide,label\n" + "\n".join(rows) + "\n")
    return path


def _scores(slides: dict) -> list[SlideScore]:
    return [SlideScore(n, int(lab == "cancer"), s, 12) for n, (lab, s) in slides.items()]


def test_slide_score_is_the_top_tiles_mean_and_the_worklist_score() -> None:
    assert slide_score(_grid("a", _slide_tiles(0.75)).prob) == 0.75
    p = [0.0] * 1485 + [i / 16 for i in range(1, 16)]  # 1500 tiles: the top 15 (1 %) averaged
    g = _grid("b", p)
    assert slide_score(g.prob) == 0.5 == cancer_score(g)["score"]
    assert slide_score(np.zeros((0, 2), np.float32)) == 0.0
    three = np.array([[0.2, 0.7, 0.1], [0.5, 0.1, 0.4]] + [[1.0, 0.0, 0.0]] * 8)
    assert slide_score(three) == pytest.approx(0.11)  # (0.7 + 0.4) / 10: the top non-negative class


def test_threshold_sits_margin_logits_below_the_lowest_cancer() -> None:
    cal = _scores(CALIBRATION)
    assert calibrate_threshold(cal, Q) == 0.5625
    assert calibrate_threshold(cal, 0.0) == 0.75
    assert calibrate_threshold(cal) == pytest.approx(0.6)  # default margin 0.2
    with pytest.raises(ValueError, match="cancer slide"):
        calibrate_threshold(_scores({"b": ("benign", 0.1)}))
    with pytest.raises(ValueError, match="margin"):
        calibrate_threshold(cal, -0.5)
    with pytest.raises(ValueError, match="margin"):
        calibrate_threshold(cal, 1.0)


def test_triage_arithmetic() -> None:
    """Threshold 0.5625: t-b1, t-b3 and the cancer t-c2 (missed) fall below; t-b2 (equal) does not."""
    r = triage(_scores(CALIBRATION), _scores(TEST), margin=Q)
    assert r.threshold == 0.5625 and r.lowest_calibration_cancer == 0.75
    assert (r.n_calibration, r.n_test, r.n_test_cancer, r.n_test_benign) == (4, 6, 2, 4)
    assert r.sensitivity == 0.5 and r.specificity == 0.5 and r.benign_set_aside == 0.5
    assert r.auc == 0.625  # cancer/benign pairs won: t-c1 3 of 4, t-c2 2 of 4
    assert r.slides_set_aside == 0.5  # 3 of 6
    assert r.oracle_benign_set_aside == 0.5  # below 0.375: t-b1, t-b3
    d = r.to_dict()
    assert [s["set_aside"] for s in d["test"]] == [True, False, True, False, False, True]
    assert "missed: ['t-c2']" in r.report() and "sensitivity below 100 %" in r.report()


def test_triage_at_full_sensitivity() -> None:
    test = _scores({"x": ("benign", 0.25), "y": ("benign", 0.625), "z": ("cancer", 0.875)})
    r = triage(_scores(CALIBRATION), test, margin=Q)
    assert (r.sensitivity, r.benign_set_aside, r.auc) == (1.0, 0.5, 1.0)
    assert r.slides_set_aside == pytest.approx(1 / 3) and r.oracle_benign_set_aside == 1.0
    assert "(at 100 % slide sensitivity)" in r.report()


def test_slide_without_tissue_is_never_set_aside() -> None:
    """A slide the model saw nothing of (no tissue tiles, score 0) needs a read."""
    test = [SlideScore("blank", 0, 0.0, 0), SlideScore("blank-cancer", 1, 0.0, 0)]
    test += _scores({"x": ("benign", 0.25)})
    r = triage(_scores(CALIBRATION), test, margin=Q)
    assert r.sensitivity == 1.0 and r.benign_set_aside == 0.5
    assert [s["set_aside"] for s in r.to_dict()["test"]] == [False, False, True]


def test_triage_refuses_overlapping_or_empty_sets() -> None:
    with pytest.raises(ValueError, match="both"):
        triage(_scores(CALIBRATION), _scores(CALIBRATION))
    with pytest.raises(ValueError, match="test slide"):
        triage(_scores(CALIBRATION), [])


def test_run_triage_writes_the_report(tmp_path, truth_csv) -> None:
    cal, test = _write(tmp_path / "cal", CALIBRATION), _write(tmp_path / "test", TEST)
    r = run_triage([cal], [test], truth_csv, tmp_path / "out", margin=Q)
    d = json.loads((tmp_path / "out" / "report.json").read_text())
    assert (
        d["format"] == "prostate-fast triage report"
        and d["threshold"] == 0.5625
        and d["auc"] == 0.625
    )
    assert [s["slide"] for s in d["test"]] == sorted(f"{n}.tif" for n in TEST)
    assert {s["score"] for s in d["calibration"]} == {0.75, 0.875, 0.125, 0.5}
    assert (tmp_path / "out" / "report.txt").read_text() == r.report()
    with pytest.raises(FileExistsError):
        run_triage([cal], [test], truth_csv, tmp_path / "out")


def test_cli_triage(tmp_path, truth_csv, capsys) -> None:
    cal, test = _write(tmp_path / "cal", CALIBRATION), _write(tmp_path / "test", TEST)
    args = ["triage", "--calibration", str(cal), "--test", *map(str, sorted(test.iterdir()))]
    args += ["--truth", str(truth_csv), "-o", str(tmp_path / "out")]
    assert main([*args, "--margin", str(Q)]) == 0
    assert "slide AUC             0.6250" in capsys.readouterr().out
    assert main(args) == 2  # the report exists
    assert "report.json" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0
    assert json.loads((tmp_path / "out" / "report.json").read_text())["margin"] == 0.2


def test_bad_truth(tmp_path, truth_csv, capsys) -> None:
    cal, test = _write(tmp_path / "cal", CALIBRATION), _write(tmp_path / "test", TEST)
    bad = tmp_path / "bad.csv"
    bad.write_text("slide,label\nc1,cancer\n")  # the other slides have no truth
    args = ["triage", "--calibration", str(cal), "--test", str(test), "--truth", str(bad)]
    assert main([*args, "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "-scores.npz" in err and "not in the truth" in err
    assert not (tmp_path / "out").exists()
    bad.write_text("slide,label\nc1,maybe\n")
    with pytest.raises(ProstateFastError, match="line 2"):
        read_slide_truth(bad)
    bad.write_text("name,label\nc1,cancer\n")
    with pytest.raises(ProstateFastError, match="columns"):
        read_slide_truth(bad)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ProstateFastError, match="empty: no score grid"):
        run_triage([tmp_path / "empty"], [test], truth_csv, tmp_path / "o2")
