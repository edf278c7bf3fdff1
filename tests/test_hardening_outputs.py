"""Output hardening of the CLI (issue 9): outputs that exist or cannot be written.

Each case asserts what the README's table promises (see ``_hardening.refused``): exit 2, one line
naming the file, no partial output, the inputs and existing outputs unchanged.

Simulations (the machine is not really broken):

* read-only folder: ``chmod 0o555``, the commands run in a subprocess. Root ignores permission
  bits, so as root (CI) the subprocess first drops ``CAP_DAC_OVERRIDE`` and
  ``CAP_DAC_READ_SEARCH`` from its capability bounding set: the kernel then refuses root too.
  Where dropping them is not allowed, the commands run in this process with creating an entry in
  the folder (``os.open`` with ``O_CREAT``/``O_TMPFILE``, ``os.mkdir``, ``open()`` of a new file
  for writing) refused with ``PermissionError(EACCES)``, as the kernel would refuse a normal user.
* full disk: ``open()``/``io.open`` (and so ``Path.write_*``, ``os.fdopen``, tifffile, zipfile) of
  files under the output folder return a file whose writes raise ``OSError(ENOSPC)`` without a
  file name (as a buffered write on a full disk does) once a byte budget is spent, "halfway"
  through the outputs, the dataset's record file included. (The case that uses the kernel
  itself, a console script under ``RLIMIT_FSIZE``, is in ``test_hardening.py``.)
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from _hardening import (
    PREFIX,
    Fixtures,
    _snapshot,
    _write,
    refused,
)

from prostate_fast.cli.main import main


@pytest.fixture(scope="module")
def fx(tmp_path_factory: pytest.TempPathFactory) -> Fixtures:
    return Fixtures(tmp_path_factory.mktemp("hardening-inputs"))


# -- outputs that exist ---------------------------------------------------------------------------
def _existing_cases(fx: Fixtures, out: Path) -> dict[str, tuple[list, list[str]]]:
    """command line, files that exist before it runs (the first is the one named)."""
    scores = f"{fx.scores}.npz"
    return {
        "tiles: table exists": (["tiles", fx.slide, "-o", out / "t.csv"], ["t.csv"]),
        "tiles: thumbnail exists": (["tiles", fx.slide, "-o", out / "t.csv"], ["t-thumb.png"]),
        "predict: OUT.npz exists": (["predict", fx.model, fx.slide, "-o", out / "p"], ["p.npz"]),
        "predict: OUT.csv exists": (["predict", fx.model, fx.slide, "-o", out / "p"], ["p.csv"]),
        "overlay: TIFF exists": (["overlay", fx.slide, scores, "-o", out / "o.tif"], ["o.tif"]),
        "overlay: thumbnail exists": (["overlay", fx.slide, scores, "-o", out / "o.tif"],
                                      ["o-thumb.png"]),
        "overlay: --geojson exists": (["overlay", fx.slide, scores, "-o", out / "o.tif",
                                       "--geojson", out / "o.geojson"], ["o.geojson"]),
        "overlay: output is a folder": (["overlay", fx.slide, scores, "-o", out / "o.tif"],
                                        ["o.tif/"]),
        "label: table exists": (["label", fx.slide, "--geojson", fx.syn.geojson, "-o",
                                 out / "l.csv"], ["l.csv"]),
        "synth: a file of the set exists": (["synth", "-o", out, "--width", "2048", "--height",
                                             "1024"], ["synthetic.geojson"]),
        "dataset: folder exists, not empty": (["dataset", fx.table, fx.table_other, "-o",
                                               out / "ds", "--fractions", "0.5,0.5"],
                                              ["ds/keep.txt"]),
        "screen: worklist exists": (["screen", fx.model, fx.slide, "-o", out / "w.csv"],
                                    ["w.csv"]),
    }  # fmt: skip


EXISTING = [
    "tiles: table exists", "tiles: thumbnail exists", "predict: OUT.npz exists",
    "predict: OUT.csv exists", "overlay: TIFF exists", "overlay: thumbnail exists",
    "overlay: --geojson exists", "overlay: output is a folder", "label: table exists",
    "synth: a file of the set exists", "dataset: folder exists, not empty",
    "screen: worklist exists",
]  # fmt: skip


@pytest.mark.parametrize("case", EXISTING)
def test_existing_output_is_not_overwritten(
    fx: Fixtures, tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    args, existing = _existing_cases(fx, tmp_path)[case]
    for name in existing:
        if name.endswith("/"):
            (tmp_path / name).mkdir(parents=True)
        else:
            _write(tmp_path / name, b"the user's own file\n")
    first = tmp_path / existing[0].rstrip("/")
    if case.startswith("dataset"):
        first = first.parent
    refused(capsys, args, names=first, watch=[tmp_path, fx.root], expect="already exists")


# -- outputs that cannot be written ---------------------------------------------------------------
WRITERS = ["tiles", "predict", "overlay", "label", "synth", "dataset", "screen"]


def _writer(name: str, fx: Fixtures, out: Path) -> tuple[list, Path]:
    """A command line writing into folder ``out``, and the output its error names."""
    if name == "tiles":
        return ["tiles", fx.slide, "-o", out / "t.csv"], out / "t.csv"
    if name == "predict":
        return ["predict", fx.model, fx.slide, "-o", out / "p"], out / "p"
    if name == "overlay":
        return ["overlay", fx.slide, f"{fx.scores}.npz", "-o", out / "o.tif"], out / "o.tif"
    if name == "label":
        return ["label", fx.slide, "--geojson", fx.syn.geojson, "-o", out / "l.csv"], out / "l.csv"
    if name == "synth":
        return ["synth", "-o", out / "s", "--width", "2048", "--height", "1024"], out / "s"
    if name == "dataset":
        return [
            "dataset",
            fx.table,
            fx.table_other,
            "-o",
            out / "ds",
            "--fractions",
            "0.5,0.5",
            "--balance",
            "all",
        ], out / "ds"
    if name == "screen":
        return ["screen", fx.model, fx.slide, "-o", out / "w.csv"], out / "w.csv"
    raise AssertionError(name)


@pytest.mark.parametrize("command", WRITERS)
def test_output_inside_a_regular_file(
    fx: Fixtures, tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    """``-o notes.txt/out``: the "folder" is the user's file; it is left alone."""
    notes = _write(tmp_path / "notes.txt", b"not a folder\n")
    args, named = _writer(command, fx, notes)
    refused(
        capsys,
        args,
        names=named,
        watch=[tmp_path, fx.root],
        expect=f"{notes} is a file, not a folder",
    )


_DRIVER = """
import contextlib, io, json, sys, traceback
from prostate_fast.cli import main
results = {}
for name, argv in json.loads(sys.argv[1]).items():
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except BaseException:
            code = -1
            traceback.print_exc()
    results[name] = [code, out.getvalue(), err.getvalue()]
print(json.dumps(results))
"""


_THREAD_VARS = ("OMP_NUM_THREADS", "MXNET_OMP_MAX_THREADS", "MXNET_CPU_WORKER_NTHREADS")


def _drop_dac_override() -> None:
    """In the child before exec: take CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH out of the
    bounding set, so that root obeys permission bits after exec (prctl PR_CAPBSET_DROP)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def _deny_creating_in(folder: Path, mp: pytest.MonkeyPatch) -> None:
    """Fallback for root without CAP_SETPCAP: refuse, in this process, to create in ``folder``."""
    real_open, real_mkdir, real_io_open = os.open, os.mkdir, io.open

    def denied(path: object) -> bool:
        if not isinstance(path, str | bytes | os.PathLike):
            return False
        p = Path(os.fsdecode(path))
        return p.parent == folder or p == folder

    def refuse(path: object) -> PermissionError:
        return PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))

    def fake_open(path, flags, *args, **kwargs):  # noqa: ANN001, ANN202
        creates = flags & os.O_CREAT or (flags & (os.O_WRONLY | os.O_RDWR) and Path(path) == folder)
        if creates and denied(path):
            raise refuse(path)
        return real_open(path, flags, *args, **kwargs)

    def fake_mkdir(path, *args, **kwargs):  # noqa: ANN001, ANN202
        if denied(path):
            raise refuse(path)
        return real_mkdir(path, *args, **kwargs)

    def fake_io_open(file, mode="r", *args, **kwargs):  # noqa: ANN001, ANN202
        new = any(c in mode for c in "wxa") and denied(file) and not Path(file).exists()
        if new:
            raise refuse(file)
        return real_io_open(file, mode, *args, **kwargs)

    mp.setattr(os, "open", fake_open)
    mp.setattr(os, "mkdir", fake_mkdir)
    mp.setattr(io, "open", fake_io_open)
    mp.setattr(builtins, "open", fake_io_open)


@pytest.fixture(scope="module")
def read_only_runs(fx: Fixtures, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Every writer of WRITERS run once into a read-only folder (chmod 0o555).

    Not root: a subprocess, as is. Root ignores permission bits, so the subprocess first drops
    CAP_DAC_OVERRIDE (the kernel then refuses root too); where that is not allowed, the commands
    run in this process with creation in the folder refused by ``_deny_creating_in``.
    """
    root = tmp_path_factory.mktemp("read-only")
    folder = root / "ro"
    folder.mkdir()
    _write(folder / "old-result.csv", b"kept\n")
    lines = {name: _writer(name, fx, folder) for name in WRITERS}
    argv = {name: [str(a) for a in args] for name, (args, _) in lines.items()}
    folder.chmod(0o555)
    before = _snapshot([root, fx.root])
    try:
        try:
            # A fresh environment: thread variables set by earlier tests (MXNet's import sets
            # OMP_NUM_THREADS) must not reach the child, where several commands share one process.
            env = {k: v for k, v in os.environ.items() if k not in _THREAD_VARS}
            res = subprocess.run(
                [sys.executable, "-c", _DRIVER, json.dumps(argv)],
                capture_output=True,
                env=env,
                text=True,
                timeout=300,
                preexec_fn=_drop_dac_override if os.geteuid() == 0 else None,
            )
            results = json.loads(res.stdout.splitlines()[-1])
            how = "subprocess"
        except (subprocess.SubprocessError, IndexError, json.JSONDecodeError):
            results, how = {}, "in process"
            with pytest.MonkeyPatch.context() as mp:
                _deny_creating_in(folder, mp)
                for name, args in argv.items():
                    out, err = io.StringIO(), io.StringIO()
                    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                        results[name] = [main(args), out.getvalue(), err.getvalue()]
    finally:
        folder.chmod(0o755)
    unchanged = _snapshot([root, fx.root]) == before
    return {
        "results": results,
        "named": {k: v[1] for k, v in lines.items()},
        "unchanged": unchanged,
        "how": how,
    }


@pytest.mark.parametrize("command", WRITERS)
def test_read_only_output_folder(read_only_runs: dict, command: str) -> None:
    code, out, err = read_only_runs["results"][command]
    lines = err.splitlines()
    assert code == 2 and len(lines) == 1, (read_only_runs["how"], code, err)
    assert lines[0].startswith(PREFIX) and "Traceback" not in out + err
    assert str(read_only_runs["named"][command]) in lines[0], lines[0]
    assert lines[0].endswith(": Permission denied"), lines[0]
    assert read_only_runs["unchanged"]


class _FullDisk:
    """Files opened for writing under ``root``: the first ``full_files`` are written whole, the
    next fails with ENOSPC after ``budget`` bytes (so does any later one)."""

    def __init__(self, root: Path, budget: int, full_files: int = 0) -> None:
        self.root, self.left, self.failed = root, budget, False
        self.full_files = full_files

    def applies(self, file: object, mode: str) -> bool:
        if not any(c in mode for c in "wxa+"):
            return False
        if isinstance(file, int):
            file = os.readlink(f"/proc/self/fd/{file}")
        if not isinstance(file, str | bytes | os.PathLike):
            return False
        path = Path(os.fsdecode(file)).absolute()
        return path == self.root or self.root in path.parents

    def spend(self, n: int) -> None:
        if n > self.left:
            self.failed = True
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # no file name, as io says it
        self.left -= n


class _FullFile:
    def __init__(self, f: io.IOBase, disk: _FullDisk) -> None:
        self._f, self._disk = f, disk
        self._whole = disk.full_files > 0
        disk.full_files -= 1

    def write(self, data: bytes | str) -> int:
        if not self._whole:
            self._disk.spend(len(data))
        return self._f.write(data)

    def writelines(self, lines: Iterator) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> object:
        return getattr(self._f, name)

    def __iter__(self) -> Iterator:
        return iter(self._f)

    def __enter__(self) -> _FullFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self._f.__exit__(*exc)


def _fill_disk(
    monkeypatch: pytest.MonkeyPatch, root: Path, budget: int, full_files: int = 0
) -> _FullDisk:
    disk = _FullDisk(root.absolute(), budget, full_files)
    real = io.open

    def fake_open(file, mode="r", *args, **kwargs):  # noqa: ANN001, ANN202
        f = real(file, mode, *args, **kwargs)
        return _FullFile(f, disk) if disk.applies(file, mode) else f

    monkeypatch.setattr(io, "open", fake_open)
    monkeypatch.setattr(builtins, "open", fake_open)
    return disk


@pytest.mark.parametrize(
    ("command", "budget"),
    [
        ("tiles", "second"),  # the table is complete, the thumbnail fails: no table left either
        ("tiles", 500),
        ("predict", "second"),  # OUT.npz complete, OUT.csv fails: OUT.npz removed
        ("predict", 500),
        ("overlay", 5000),
        ("label", 500),
        ("synth", 20000),
    ],
)
def test_full_disk(
    fx: Fixtures,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    command: str,
    budget: int | str,
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    args, named = _writer(command, fx, out)
    full_files = 0
    if budget == "second":  # the first output is written whole, the second fails halfway
        full_files, budget = 1, 100
        named = out / ("t-thumb.png" if command == "tiles" else "p.csv")
    disk = _fill_disk(monkeypatch, out, int(budget), full_files)
    line = refused(
        capsys, args, names=named, watch=[tmp_path, fx.root], expect="No space left on device"
    )
    assert disk.failed and ".part" not in line


def test_full_disk_while_packing_records(
    fx: Fixtures,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The .rec fills the disk halfway: one line naming it, nothing of the dataset left."""
    out = tmp_path / "out"
    out.mkdir()
    args, named = _writer("dataset", fx, out)
    disk = _fill_disk(monkeypatch, out, 20000)
    line = refused(
        capsys, args, names=named, watch=[tmp_path, fx.root], expect="No space left on device"
    )
    assert disk.failed and "cannot write the record file" in line and "disk full?" in line
