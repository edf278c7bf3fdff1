"""The README's main job: prostate-fast demo, end to end on small synthetic slides."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from prostate_fast.cli.main import main
from prostate_fast.demo import MARKER, run_demo


def test_demo_runs_every_stage_and_reruns_in_its_own_folder(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    lines: list[str] = []
    result = run_demo(out, width=3072, height=1536, n_train=2, epochs=2, log=lines.append)
    assert (out / MARKER).is_file()
    assert [line[:3] for line in lines if line.startswith("[")] == [
        "[1]",
        "[2]",
        "[3]",
        "[4]",
        "[5]",
        "[6]",
    ]
    # [6]: the screen checked against the unseen slides' truth masks
    assert 0 <= result.truth["sensitivity"] <= 1 and 0 <= result.truth["specificity"] <= 1
    assert (result.artefacts["model"] / "model.json").is_file()
    with open(result.artefacts["worklist"], newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(r["slide"] for r in rows) == ["unseen-benign.tif", "unseen-cancer.tif"]
    assert all(r["status"] == "ok" and Path(r["overlay"]).is_file() for r in rows)
    assert all(Path(r["geojson"]).is_file() for r in rows)
    run_demo(out, width=3072, height=1536, n_train=1, epochs=2, log=lines.append)  # replaced
    assert (out / MARKER).is_file()


def test_demo_refuses_a_folder_it_did_not_make(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    assert main(["demo", "-o", str(mine)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(mine) in err[0]
    assert (mine / "notes.txt").read_text() == "keep me"
