"""The README's main job: prostate-fast demo, end to end on small synthetic slides."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from prostate_fast.cli.main import main
from prostate_fast.demo import MARKER


def _demo_in_a_fresh_process(out: Path) -> list[str]:
    """Run the demo (small slides) in its own process, as the CLI does, and return its lines.

    A fresh process, because a training in a process that already ran other trainings and the
    pipeline's native kernels is not bit-reproducible (see README, Known limits)."""
    code = (
        "import sys; from prostate_fast.demo import run_demo; "
        f"run_demo({str(out)!r}, width=3072, height=1536, n_train=2, epochs=6, "
        "log=lambda s: print(s, flush=True))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.splitlines()


def test_demo_runs_every_stage_and_reruns_in_its_own_folder(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    lines = _demo_in_a_fresh_process(out)
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
    assert any(line.startswith("[6] against the truth masks, pooled over") for line in lines)
    assert (out / "model" / "model.json").is_file()
    with open(out / "worklist.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(r["slide"] for r in rows) == ["unseen-benign.tif", "unseen-cancer.tif"]
    assert all(r["status"] == "ok" and Path(r["overlay"]).is_file() for r in rows)
    assert all(Path(r["geojson"]).is_file() for r in rows)
    # a demo folder is replaced by the next demo (a fresh process)
    _demo_in_a_fresh_process(out)
    assert (out / MARKER).is_file() and (out / "worklist.csv").is_file()


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


def test_demo_folder_is_replaced_by_a_fresh_process(tmp_path: Path) -> None:
    """The check that an old demo folder is ours runs before the demo imports anything else: a
    new process must still know the worklist's header (it was refused before)."""
    out = tmp_path / "demo"
    out.mkdir()
    (out / MARKER).write_text("made by prostate-fast demo; safe to delete\n")
    from dataclasses import fields

    from prostate_fast.screen import WorklistRow

    (out / "worklist.csv").write_text(",".join(f.name for f in fields(WorklistRow)) + "\n")
    code = f"from prostate_fast.demo import _prepare; _prepare(__import__('pathlib').Path({str(out)!r}))"
    subprocess.run([sys.executable, "-c", code], check=True)
    assert not (out / "worklist.csv").exists() and (out / MARKER).is_file()
