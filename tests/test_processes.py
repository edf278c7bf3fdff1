"""Processes and outputs (issue 13): workers die with the batch driver, the lock covers them,
CSV cells are safe to open in a spreadsheet, slide names that are the batch's own file names,
a closed pipe.

The batch runs here are CLI subprocesses on a few tiny synthetic slides with the untrained
study network of ``_tiny_model``; the driver is killed (SIGTERM, SIGKILL) while its pool works,
and no worker may survive it.
"""

from __future__ import annotations

import csv
import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from prostate_fast._util import csv_cell
from prostate_fast.batch.core import SUMMARY, WORKERS_LOCK, run_batch
from prostate_fast.batch.executors import wait_for_workers
from prostate_fast.screen import WORKLIST, ScreeningOptions, WorklistRow, write_worklist

COMMON = ["--engine", "native", "--threads", "1", "--threshold", "cancer=0", "--no-progress"]
OPTS = ScreeningOptions(engine="native", n_threads=1, thresholds={"cancer": 0.0})


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("mxnet")
    from _tiny_model import make_model

    return make_model(tmp_path_factory.mktemp("proc_model") / "model", tile_size=64)


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Four synthetic slides (2048 x 1024)."""
    from prostate_fast.synthetic import make_synthetic

    gen = tmp_path_factory.mktemp("proc_gen")
    return [
        make_synthetic(
            gen,
            name=f"s{i}",
            width=2048,
            height=1024,
            seed=70 + i,
            n_cores=2,
            n_cancer=i % 2,
            n_threads=2,
        ).slide
        for i in range(4)
    ]


def _folder(tmp: Path, slides: list[Path], names: list[str] | None = None) -> Path:
    folder = tmp / "slides"
    folder.mkdir()
    for i, s in enumerate(slides):
        os.link(s, folder / (names[i] if names else s.name))
    return folder


def _workers(pid: int) -> list[int]:
    """The pids of ``pid``'s multiprocessing children (pool workers, resource tracker)."""
    import psutil

    try:
        kids = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    out = []
    for k in kids:
        try:
            if "multiprocessing" in " ".join(k.cmdline()):
                out.append(k.pid)
        except psutil.Error:
            pass
    return out


def _alive(pids: list[int]) -> list[int]:
    import psutil

    live = []
    for p in pids:
        try:
            if psutil.Process(p).status() != psutil.STATUS_ZOMBIE:
                live.append(p)
        except psutil.NoSuchProcess:
            pass
    return live


def _batch(args: list[str]) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "prostate_fast.cli", "batch", *args, *COMMON]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_workers_die_with_the_driver(
    sig: int, synth: list[Path], model: Path, tmp_path: Path
) -> None:
    """Killing the driver while 2 workers screen: no worker survives; a rerun takes the lock."""
    pytest.importorskip("psutil")
    folder, out = _folder(tmp_path, synth), tmp_path / "out"
    args = [str(folder), "--model", str(model), "-o", str(out)]
    proc = _batch([*args, "--workers", "2"])  # same process group as pytest: never killpg
    pids: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            pids = sorted(set(pids) | set(_workers(proc.pid)))
            if len(pids) >= 3 and any(out.glob(".*.part-*")):  # 2 workers + tracker, mid-slide
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the batch ended before it could be killed"
        os.kill(proc.pid, sig)
        _, stderr = proc.communicate(timeout=60)
        end = time.monotonic() + 30
        while _alive(pids) and time.monotonic() < end:
            time.sleep(0.05)
        assert not _alive(pids), f"workers outlived the driver: {_alive(pids)}"
        if sig == signal.SIGTERM:
            assert proc.returncode == 143 and "Traceback" not in stderr, stderr
            assert "terminated" in stderr.splitlines()[-1]
    finally:
        for p in _alive(pids):
            os.kill(p, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
    rerun = _batch([*args, "--workers", "2"])
    stdout, stderr = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, stderr
    rows = list(csv.DictReader((out / SUMMARY).open()))
    assert sorted(r["status"] for r in rows) != [] and all(
        r["status"] in ("done", "skipped") for r in rows
    ), rows
    assert not list(out.glob(".*.part-*"))


def test_lock_waits_for_workers_of_a_killed_driver(tmp_path: Path) -> None:
    """A process holding the workers' lock (a dying worker) makes a new driver wait."""
    lock = tmp_path / WORKERS_LOCK
    code = (
        "import fcntl, sys, time\n"
        f"fh = open({str(lock)!r}, 'a+'); fcntl.flock(fh, fcntl.LOCK_SH)\n"
        "print('held', flush=True); time.sleep(float(sys.argv[1]))\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code, "60"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert not wait_for_workers(lock, timeout=0.2)
        holder.kill()
        holder.wait()
        assert wait_for_workers(lock, timeout=30)
    finally:
        holder.kill()
        holder.wait()
    with open(lock) as fh:  # released: an exclusive lock is free
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)


# -- CSV cells ------------------------------------------------------------------------------
def test_csv_cell_escapes_text_not_numbers() -> None:
    for bad in ("=1+1", "+1", "-2+3", "@SUM(A1)", "\t=1", "\r=1", '=HYPERLINK("x")'):
        assert csv_cell(bad) == "'" + bad
    for ok in ("slide.tif", "error: bad", "", " =x", "'=x"):
        assert csv_cell(ok) == ok
    for num in (-1, -0.5, 3, 2.5, None):
        assert csv_cell(num) == num


def test_worklist_cells_are_escaped(tmp_path: Path) -> None:
    rows = [
        WorklistRow(rank=1, slide="=cmd|' /C calc'!A0.tif", status="error: -bad", path="@x.tif"),
        WorklistRow(
            rank=2, slide="+a.tif", status="ok", score=-0.0, top10_mean=0.25, positive_area_mm2=-1.5
        ),
    ]
    got = list(csv.DictReader(write_worklist(rows, tmp_path / "w.csv").open()))
    assert got[0]["slide"] == "'=cmd|' /C calc'!A0.tif" and got[0]["path"] == "'@x.tif"
    assert got[0]["status"] == "error: -bad"  # starts with a letter
    assert got[1]["slide"] == "'+a.tif"
    assert got[1]["positive_area_mm2"] == "-1.5" and got[1]["score"] == "-0"  # numbers stay


def test_evaluate_csv_cells_are_escaped(tmp_path: Path) -> None:
    import numpy as np

    from prostate_fast.evaluate import _write_predictions

    labels, prob = np.array([0, 1]), np.array([[0.9, 0.1], [0.2, 0.8]], np.float32)
    slides = np.array(["=evil", "ok"])
    _write_predictions(tmp_path / "p.csv", labels, prob, slides, ("benign", "-cancer"), 0.5)
    rows = list(csv.reader((tmp_path / "p.csv").open()))
    assert rows[0][-1] == "'-cancer" and rows[1][1] == "'=evil" and rows[2][2] == "'-cancer"


def test_batch_summary_cells_are_escaped(model: Path, tmp_path: Path) -> None:
    bad = tmp_path / "=HYPERLINK(x).svs"
    bad.write_text("not a slide\n")
    r = run_batch([bad], model, tmp_path / "out", OPTS, workers=0)
    assert r.counts["error"] == 1
    rows = list(csv.DictReader(r.summary.open()))
    assert rows[0]["slide"] == "'=HYPERLINK(x).svs" and rows[0]["status"] == "error"
    assert list(csv.DictReader(r.worklist.open()))[0]["slide"] == "'=HYPERLINK(x).svs"


# -- slide names that are the batch's own files -------------------------------------------
def test_slides_named_like_the_batch_files(synth: list[Path], model: Path, tmp_path: Path) -> None:
    names = ["worklist.csv.tif", "batch-summary.csv.tif", "s2.tif"]
    folder = _folder(tmp_path, synth[:3], names)
    out = tmp_path / "out"
    r = run_batch(folder, model, out, OPTS, workers=0)
    assert r.counts == {"done": 3, "skipped": 0, "error": 0}, r.failed
    assert (out / WORKLIST).is_file() and (out / SUMMARY).is_file()
    assert (out / "worklist.csv-slide" / "worklist.csv-overlay.tif").is_file()
    assert (out / "batch-summary.csv-slide" / "manifest.json").is_file()
    assert (out / "s2" / "manifest.json").is_file()
    again = run_batch(folder, model, out, OPTS, workers=0)
    assert again.counts == {"done": 0, "skipped": 3, "error": 0}


def test_screen_slide_named_worklist(synth: list[Path], model: Path, tmp_path: Path) -> None:
    from prostate_fast.screen import screen_slides

    folder = _folder(tmp_path, synth[:1], ["worklist.csv.tif"])
    rows = screen_slides(model, [folder / "worklist.csv.tif"], tmp_path / "out", OPTS)
    assert rows[0].ok and (tmp_path / "out" / WORKLIST).is_file()
    assert Path(rows[0].overlay).parent.name == "worklist.csv-slide"


def test_batch_never_replaces_a_user_folder(synth: list[Path], model: Path, tmp_path: Path) -> None:
    folder = _folder(tmp_path, synth[:1])
    out = tmp_path / "out"
    mine = out / synth[0].stem
    mine.mkdir(parents=True)
    (mine / "notes.txt").write_text("mine")
    r = run_batch(folder, model, out, OPTS, workers=0)
    assert r.counts["error"] == 1 and "not a slide folder of a batch" in r.failed[0].reason
    assert (mine / "notes.txt").read_text() == "mine"


# -- a closed pipe --------------------------------------------------------------------------
def test_closed_stdout_pipe_is_quiet(synth: list[Path]) -> None:
    """``prostate-fast info SLIDE | head -0``: no traceback, no message, status 141."""
    cmd = [sys.executable, "-m", "prostate_fast.cli", "info", str(synth[0])]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.close()  # the reader is gone before anything is written
    stderr = proc.stderr.read()
    proc.wait(timeout=60)
    assert stderr == "" and proc.returncode == 141


# -- --tile-mpp and --slide-mpp -------------------------------------------------------------
def test_mpp_has_two_names(capsys: pytest.CaptureFixture[str]) -> None:
    """--tile-mpp (tiles, label) and --slide-mpp (predict, screen, run, batch; tiles, label);
    the old --mpp still works, as the old meaning of each command, with one warning line."""
    from prostate_fast.cli.common import _screening_options
    from prostate_fast.cli.main import build_parser

    parser = build_parser()
    for cmd in (
        ["tiles", "s.tif", "-o", "t.csv"],
        ["label", "s.tif", "--mask", "m.png", "-o", "l.csv"],
    ):
        args = parser.parse_args([*cmd, "--tile-mpp", "0.5", "--slide-mpp", "0.25"])
        assert (args.tile_mpp, args.slide_mpp) == (0.5, 0.25)
        assert capsys.readouterr().err == ""
        args = parser.parse_args([*cmd, "--mpp", "1"])
        assert (args.tile_mpp, args.slide_mpp) == (1.0, None)
        err = capsys.readouterr().err.splitlines()
        assert err == ["prostate-fast: warning: --mpp is deprecated here; use --tile-mpp"]
    for cmd in (
        ["predict", "m", "s.tif", "-o", "o"],
        ["screen", "m", "s.tif", "-o", "o"],
        ["run", "m", "s.tif", "-o", "o"],
        ["batch", "d", "--model", "m", "-o", "o"],
    ):
        args = parser.parse_args([*cmd, "--slide-mpp", "0.25"])
        assert _screening_options(args).mpp == 0.25 and capsys.readouterr().err == ""
        args = parser.parse_args([*cmd, "--mpp", "0.3"])
        assert _screening_options(args).mpp == 0.3
        err = capsys.readouterr().err.splitlines()
        assert err == ["prostate-fast: warning: --mpp is deprecated here; use --slide-mpp"]
    with pytest.raises(SystemExit):
        parser.parse_args(["predict", "m", "s.tif", "-o", "o", "--slide-mpp", "1", "--level", "0"])
    help_text = parser._subparsers._group_actions[0].choices["tiles"].format_help()
    assert "--tile-mpp" in help_text and "--slide-mpp" in help_text and "--mpp " not in help_text


def test_slide_mpp_advice_is_right(
    synth: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A PNG records no scale: `tiles` asks for --slide-mpp (not --mpp), and that works."""
    import cv2

    from prostate_fast.cli.main import main
    from prostate_fast.slide import open_slide

    with open_slide(synth[0]) as sl:
        rgb = sl.read_region((0, 0), 0, sl.dimensions)
    png = tmp_path / "flat.png"
    cv2.imwrite(str(png), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert main(["tiles", str(png), "-o", str(tmp_path / "t.csv")]) == 2
    line = capsys.readouterr().err.strip()
    assert "pass --slide-mpp or --level" in line and line.count("\n") == 0
    code = main(["tiles", str(png), "--slide-mpp", "0.5", "-o", str(tmp_path / "t.csv")])
    assert code == 0 and (tmp_path / "t.csv").is_file()
    assert "level 0" in capsys.readouterr().out  # 0.5 µm/px is 20x: level 0 as it is
