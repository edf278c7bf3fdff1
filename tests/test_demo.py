"""The README's main job: prostate-fast demo."""

from __future__ import annotations

from pathlib import Path

import pytest

from prostate_fast.cli import main
from prostate_fast.demo import MARKER, run_demo


def test_demo_runs_and_reruns_in_its_own_folder(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    lines: list[str] = []
    result = run_demo(out, width=2048, height=1024, log=lines.append)
    assert (out / MARKER).is_file() and result.artefacts["slide"].is_file()
    assert any("synthetic slide" in line for line in lines)
    run_demo(out, width=2048, height=1024, log=lines.append)  # its own folder: replaced
    assert result.artefacts["slide"].is_file()


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
