"""CLI behaviour shared by every subcommand: one-line errors, exit status 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from prostate_fast.cli.main import main


def _err_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_info_real_slide(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", str(data_dir / "wsi" / "CMU-1-Small-Region.svs")]) == 0
    out = capsys.readouterr().out
    assert "aperio" in out and "2220 x 2967" in out and "0.4990" in out and "20x" in out
    assert "label, macro, thumbnail" in out


def test_info_json_without_mpp(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "--json", str(data_dir / "wsi" / "tcga-cr-7395-01a-01-ts1.svs")]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["mpp"] is None and facts["level_count"] == 2


@pytest.mark.parametrize(
    ("name", "content", "expect"),
    [
        ("empty.svs", b"", "empty file"),
        ("text.svs", b"not a slide at all\n", "not a valid SVS slide"),
        ("missing.svs", None, "no such file"),
    ],
)
def test_info_bad_input_exits_2_with_one_line(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    name: str,
    content: bytes | None,
    expect: str,
) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    assert main(["info", str(path)]) == 2
    line = _err_line(capsys)
    assert line.startswith("prostate-fast: error: ") and str(path) in line and expect in line


def test_info_truncated_svs_exits_2(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = (data_dir / "wsi" / "CMU-1-Small-Region.svs").read_bytes()
    path = tmp_path / "cut.svs"
    path.write_bytes(data[: len(data) // 2])
    assert main(["info", str(path)]) == 2
    assert "cut.svs" in _err_line(capsys)


def test_console_script_exit_status(tmp_path: Path) -> None:
    bad = tmp_path / "zero.svs"
    bad.touch()
    res = subprocess.run(
        [sys.executable, "-m", "prostate_fast.cli", "info", str(bad)],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and "zero.svs" in res.stderr
    assert res.stdout == ""


def test_bad_arguments_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["synth", "-o", "x", "--width", "-5"])
    assert exc.value.code == 2


def test_one_line_names_the_file_and_keeps_one_line() -> None:
    from prostate_fast.errors import one_line

    assert one_line(FileNotFoundError(2, "No such file or directory", "a b.svs")) == (
        "a b.svs: No such file or directory"
    )
    assert one_line(ValueError("two\n   lines")) == "two lines"
    assert one_line(RuntimeError()) == "RuntimeError"
