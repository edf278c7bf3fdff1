"""Nothing the user gave is overwritten or deleted (issue 13, "Data loss"): prostate_fast._outputs.

Each case runs the CLI and checks one line on stderr, exit status 2 and every input unchanged
(``refused`` of test_hardening), or a correct result.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tifffile
from test_hardening import Fixtures, refused

from prostate_fast._outputs import (
    OutputError,
    check_replaceable,
    clean_stale,
    command_inputs,
    mark_png,
    output_lock,
    temp_path,
    written_by_us,
)
from prostate_fast.cli.main import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def fx(tmp_path_factory: pytest.TempPathFactory) -> Fixtures:
    return Fixtures(tmp_path_factory.mktemp("outputs-inputs"))


def _main(args: list) -> int:
    return main([str(a) for a in args])


def _copy(src: Path, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(src, dst)
    return dst


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _user_png(path: Path) -> Path:
    import cv2

    ok, buf = cv2.imencode(".png", np.zeros((4, 4, 3), np.uint8))
    path.write_bytes(buf.tobytes())
    return path


# -- the cases --------------------------------------------------------------------------
def test_dataset_into_the_folder_of_its_tables(fx: Fixtures, tmp_path: Path, capsys) -> None:
    p = tmp_path / "p"
    a, b = _copy(fx.table, p / "a.csv"), _copy(fx.table_other, p / "b.csv")
    (p / "notes.txt").write_text("mine")
    args = ["dataset", a, b, "-o", p, "--overwrite", "--fractions", "0.5,0.5"]
    line = refused(capsys, args, names=p, watch=[tmp_path, fx.root], expect="input")
    assert "holds an input" in line
    (p / "a.csv").rename(tmp_path / "a.csv")  # user files only: still refused
    (p / "b.csv").rename(tmp_path / "b.csv")
    args[1:3] = [tmp_path / "a.csv", tmp_path / "b.csv"]
    refused(capsys, args, names=p, watch=[tmp_path, fx.root], expect="not written by prostate")


def test_train_onto_its_dataset(fx: Fixtures, tmp_path: Path, capsys) -> None:
    ds = tmp_path / "ds"
    assert _main(["dataset", fx.table, fx.table_other, "-o", ds, "--fractions", "0.5,0.5"]) == 0
    for out in (ds, tmp_path / "." / "ds" / ".." / "ds"):
        args = ["train", ds, "-o", out, "--overwrite", "--epochs", "1"]
        refused(capsys, args, names=out, watch=[tmp_path, fx.root], expect="is an input")


def test_train_never_touches_name_old(tmp_path: Path) -> None:
    from prostate_fast.train.config import _finish_dir, _prepare_dir

    final, mine = tmp_path / "m", tmp_path / "m.old"
    (mine / "x").mkdir(parents=True)
    (mine / "x" / "keep.txt").write_text("mine")
    final.mkdir()
    (final / "model.json").write_text('{"format": "prostate-fast-model"}\n')
    part, _, _ = _prepare_dir(final, False, True, {}, 1)
    (part / "model.json").write_text('{"format": "prostate-fast-model", "new": 1}\n')
    _finish_dir(part, final)
    assert (mine / "x" / "keep.txt").read_text() == "mine"
    assert '"new"' in (final / "model.json").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m", "m.old"]


def test_train_refuses_a_user_folder_and_a_user_partial(tmp_path: Path) -> None:
    from prostate_fast.train.config import _prepare_dir

    final = tmp_path / "m"
    (final / "photos").mkdir(parents=True)
    (final / "photos" / "a.jpg").write_bytes(b"\xff\xd8")
    with pytest.raises(OutputError, match="not written by prostate-fast"):
        _prepare_dir(final, False, True, {}, 1)
    shutil.rmtree(final)
    part = tmp_path / "m.partial"
    part.mkdir()
    (part / "thesis.tex").write_text("mine")
    with pytest.raises(OutputError, match="m.partial"):
        _prepare_dir(final, False, True, {}, 1)
    assert (part / "thesis.tex").read_text() == "mine"


@pytest.mark.parametrize("how", ["same", "symlink", "hardlink", "dotdot"])
def test_overlay_onto_its_slide(fx: Fixtures, tmp_path: Path, capsys, how: str) -> None:
    slide = _copy(fx.slide, tmp_path / "in" / "s.tif")
    out = {
        "same": slide,
        "symlink": tmp_path / "link.tif",
        "hardlink": tmp_path / "hard.tif",
        "dotdot": tmp_path / "in" / ".." / "in" / "s.tif",
    }[how]
    if how == "symlink":
        out.symlink_to(slide)
    elif how == "hardlink":
        os.link(slide, out)
    scores = fx.scores.with_suffix(".npz")
    args = ["overlay", slide, scores, "-o", out, "--overwrite"]
    refused(capsys, args, names=out, watch=[tmp_path, fx.root], expect="is an input")


def test_overlay_scores_and_geojson_are_inputs_too(fx: Fixtures, tmp_path: Path, capsys) -> None:
    scores = _copy(fx.scores.with_suffix(".npz"), tmp_path / "s.npz")
    out = tmp_path / "ov.tif"
    assert _main(["overlay", fx.slide, scores, "-o", out]) == 0
    args = ["overlay", fx.slide, scores, "-o", out, "--geojson", scores, "--overwrite"]
    refused(capsys, args, names=scores, watch=[tmp_path, fx.root], expect="is an input")


def test_two_overlays_of_one_output(fx: Fixtures, tmp_path: Path, capsys) -> None:
    out = tmp_path / "ov.tif"
    scores = fx.scores.with_suffix(".npz")
    with output_lock(out):  # another run writing it (flock: a separate open file)
        args = ["overlay", fx.slide, scores, "-o", out]
        refused(capsys, args, names=out, watch=[tmp_path, fx.root], expect="another prostate")
    assert _main(["overlay", fx.slide, scores, "-o", out]) == 0  # the lock is no obstacle
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ov-thumb.png", "ov.tif"]


def test_two_writers_in_two_processes(tmp_path: Path) -> None:
    out = tmp_path / "x.csv"
    code = textwrap.dedent(f"""
        import sys, time
        from prostate_fast._util import atomic_path
        with atomic_path({str(out)!r}) as tmp:
            print("locked", flush=True)
            sys.stdin.readline()
            tmp.write_text("# prostate-fast first\\n")
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    first = subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert first.stdout.readline().strip() == "locked"
        from prostate_fast._util import atomic_path

        with pytest.raises(OutputError, match="another prostate-fast run"):
            with atomic_path(out) as tmp:
                tmp.write_text("second")
    finally:
        first.communicate("\n", timeout=60)
    assert out.read_text() == "# prostate-fast first\n"
    assert [p.name for p in tmp_path.iterdir()] == ["x.csv"]


def test_sigkill_leftovers_are_cleaned_by_the_next_run(fx: Fixtures, tmp_path: Path) -> None:
    out = tmp_path / "ov.tif"
    code = textwrap.dedent(f"""
        import os, signal
        from prostate_fast._util import atomic_path
        with atomic_path({str(out)!r}) as tmp:
            tmp.write_bytes(b"x" * 1000)
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    assert subprocess.run([sys.executable, "-c", code], env=env).returncode == -9
    left = sorted(p.name for p in tmp_path.iterdir())
    assert len(left) == 2 and all(n.startswith(".ov.tif.pf-") for n in left), left
    alive = tmp_path / f".ov.tif.pf-{os.getpid()}-0123abcd.tmp"  # a live writer's: kept
    alive.write_bytes(b"busy")
    assert _main(["overlay", fx.slide, fx.scores.with_suffix(".npz"), "-o", out]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [alive.name, "ov-thumb.png", "ov.tif"]


def test_sigkill_during_dataset_is_cleaned(fx: Fixtures, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    code = textwrap.dedent(f"""
        import os, signal
        import prostate_fast.dataset.build as b
        b._pack = lambda *a: os.kill(os.getpid(), signal.SIGKILL)
        b.build_dataset([{str(fx.table)!r}, {str(fx.table_other)!r}], {str(out)!r},
                        fractions=(0.5, 0.5))
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    assert subprocess.run([sys.executable, "-c", code], env=env).returncode == -9
    assert any(p.name.startswith(".ds.pf-") and p.is_dir() for p in tmp_path.iterdir())
    assert _main(["dataset", fx.table, fx.table_other, "-o", out, "--fractions", "0.5,0.5"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


# -- variants -----------------------------------------------------------------------------------
def test_overwrite_refuses_user_files_of_our_extensions(fx: Fixtures, tmp_path: Path, capsys):
    scores = fx.scores.with_suffix(".npz")
    tif = tmp_path / "ov.tif"
    tifffile.imwrite(tif, np.zeros((8, 8, 3), np.uint8), description="my scan")
    args = ["overlay", fx.slide, scores, "-o", tif, "--overwrite"]
    refused(capsys, args, names=tif, watch=[tmp_path, fx.root], expect="not written by prostate")
    tif.unlink()
    png = _user_png(tmp_path / "ov-thumb.png")
    refused(capsys, args, names=png, watch=[tmp_path, fx.root], expect="not written by prostate")
    png.unlink()
    assert _main(args) == 0 and _main(args) == 0  # our own: replaced, again and again
    csv = tmp_path / "mine.csv"
    csv.write_text("patient,age\n1,60\n")
    args = ["predict", fx.model, fx.slide, "-o", tmp_path / "mine", "--overwrite"]
    refused(capsys, args, names=csv, watch=[tmp_path, fx.root], expect="not written by prostate")
    args = [
        "label",
        fx.slide,
        "--geojson",
        fx.syn.geojson,
        "--tile-size",
        "64",
        "-o",
        csv,
        "--overwrite",
    ]
    refused(capsys, args, names=csv, watch=[tmp_path, fx.root], expect="not written by prostate")
    args = ["screen", fx.model, fx.slide, "-o", csv, "--overwrite"]
    refused(capsys, args, names=csv, watch=[tmp_path, fx.root], expect="not written by prostate")


@pytest.mark.parametrize("command", ["label", "tiles", "predict", "screen", "run", "batch"])
def test_output_equal_to_an_input(fx: Fixtures, tmp_path: Path, capsys, command: str) -> None:
    slide = _copy(fx.slide, tmp_path / "s.tif")
    geo = _copy(fx.syn.geojson, tmp_path / "s.geojson")
    _copy(fx.table, tmp_path / "t.csv")  # a label table beside them: kept
    model = tmp_path / "m"
    shutil.copytree(fx.model, model)
    args = {
        "label": ["label", slide, "--geojson", geo, "--tile-size", "64", "-o", geo],
        "tiles": ["tiles", slide, "-o", slide],
        "predict": ["predict", model, slide, "-o", slide],  # s.npz, s.csv: a correct result
        "screen": ["screen", model, slide, "-o", slide],
        "run": ["run", model, slide, "-o", slide],
        "batch": ["batch", slide, "--model", model, "-o", slide],
    }[command]
    inputs = [p for p in tmp_path.rglob("*") if p.is_file()]
    for extra in ([], ["--overwrite"]) if command != "batch" else ([],):
        before = {p: p.read_bytes() for p in inputs}
        code = _main([*args, *extra])
        err = capsys.readouterr().err
        assert {p: p.read_bytes() for p in inputs} == before, command
        ok = code == 0 and command == "predict"
        assert ok or (code == 2 and len(err.splitlines()) == 1), (code, err)


# -- the module ---------------------------------------------------------------------------------
def test_marks_are_recognised(tmp_path: Path) -> None:
    png = _user_png(tmp_path / "a.png")
    assert not written_by_us(png)
    png.write_bytes(mark_png(png.read_bytes()))
    import cv2

    assert written_by_us(png) and cv2.imread(str(png)).shape == (4, 4, 3)
    j = tmp_path / "a.geojson"
    j.write_text('{"type": "FeatureCollection", "features": []}')
    assert not written_by_us(j)
    j.write_text('{"prostate_fast": {}, "type": "FeatureCollection", "features": []}')
    assert written_by_us(j)
    npz = tmp_path / "a.npz"
    np.savez(npz, meta=np.array('{"format": "other"}'))
    assert not written_by_us(npz)
    np.savez(npz, meta=np.array('{"format": "prostate-fast score grid"}'))
    assert written_by_us(npz)


def test_check_replaceable_and_clean_stale(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    check_replaceable(d, overwrite=False, folder=True)  # empty folder: filled
    with pytest.raises(FileExistsError, match="already exists"):
        check_replaceable(d, overwrite=False)
    (d / "in.csv").write_text("x")
    with command_inputs([d / "in.csv"]), pytest.raises(OutputError, match="holds an input"):
        check_replaceable(d, overwrite=True, folder=True)
    dead = tmp_path / f".x.pf-{_dead_pid()}-0123abcd.tmp"
    dead.mkdir()
    other = tmp_path / f".y.pf-{_dead_pid()}-0123abcd.tmp"  # another output's: kept
    other.write_text("")
    assert clean_stale(tmp_path / "x") == [dead] and other.exists()
    assert temp_path(tmp_path / "x") != temp_path(tmp_path / "x")
