"""Input hardening of the CLI (issue 9): every case of the README's table, through ``main()``.

Each case asserts what the table promises: exit status 2; exactly one line on stderr, starting
with ``prostate-fast: error:`` and naming the file; no traceback; no partial output (the folders
involved hold exactly the same files, folders and bytes before and after: no ``*.part``, no
temporary level file, no half of a pair); the user's inputs and existing outputs unchanged.

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
  through the outputs; MXNet's record writer (C++, not Python I/O) raises the ``MXNetError``
  ("FileStream.Write incomplete") it raises on a full disk. One case uses the kernel itself: a
  subprocess under ``RLIMIT_FSIZE`` gets ``EFBIG`` from every writer, C libraries included.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import gc
import hashlib
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np
import pytest

from prostate_fast.cli.main import main

PREFIX = "prostate-fast: error: "
W, H = 2048, 1024  # level-0 size of the synthetic slides (0.5 µm/px, 20x)


# -- fixtures: made once for the module ---------------------------------------------------------
def _pyramid_tiff(path: Path, rgb: np.ndarray, mpp: float = 0.5) -> Path:
    """A tiled JPEG pyramidal TIFF with resolution tags and objective power (as synthetic's)."""
    import tifffile

    level, first = rgb, True
    with tifffile.TiffWriter(path) as tif:
        while True:
            res = 1e4 / mpp
            tif.write(
                level,
                tile=(256, 256),
                photometric="rgb",
                compression="jpeg",
                resolution=(res, res),
                resolutionunit="CENTIMETER",
                subfiletype=0 if first else 1,
                metadata=None,
                description='{"prostate_fast": {"objective_power": 20.0}}' if first else None,
            )
            if max(level.shape[:2]) <= 512:
                return path
            level = cv2.resize(level, (level.shape[1] // 4, level.shape[0] // 4), cv2.INTER_AREA)
            first, mpp = False, mpp * 4


class Fixtures:
    """Paths of the module's inputs (all under ``root``, which every test checks is unchanged)."""

    def __init__(self, root: Path) -> None:
        from _tiny_model import make_model

        from prostate_fast.synthetic import make_synthetic

        self.root = root
        self.syn = make_synthetic(root / "syn", width=W, height=H, seed=1, n_cores=2)
        self.other = make_synthetic(
            root / "other", name="other", width=1536, height=H, seed=6, n_cores=2
        )
        self.slide = self.syn.slide
        rng = np.random.default_rng(0)
        self.white = _pyramid_tiff(root / "white.tif", np.full((H, W, 3), 255, np.uint8))
        glass = np.full((H, W, 3), 242, np.uint8)  # blank glass, dust specks, two pen strokes
        for _ in range(40):
            centre = tuple(int(v) for v in rng.integers(0, [W, H]))
            cv2.circle(glass, centre, int(rng.integers(1, 4)), (90, 80, 90), -1)
        cv2.line(glass, (100, 100), (1800, 300), (20, 140, 40), 12)
        cv2.line(glass, (300, 900), (1900, 700), (30, 40, 160), 10)
        self.glass = _pyramid_tiff(root / "glass.tif", glass)
        self.model = make_model(root / "model", tile_size=64)
        self.model_mismatch = make_model(
            root / "model3", tile_size=64, classes=("benign", "gleason4", "gleason5"), n_outputs=2
        )
        self.scores = root / "scores" / "syn"  # predict's stem: .npz and .csv
        self.table = root / "tables" / "syn.csv"
        self.table_other = root / "tables" / "other.csv"
        for args in (
            ["predict", str(self.model), str(self.slide), "-o", str(self.scores)],
            [
                "label",
                str(self.slide),
                "--geojson",
                str(self.syn.geojson),
                "--tile-size",
                "64",
                "-o",
                str(self.table),
            ],
            [
                "label",
                str(self.other.slide),
                "--geojson",
                str(self.other.geojson),
                "--tile-size",
                "64",
                "-o",
                str(self.table_other),
            ],
        ):
            assert main(args) == 0, args


@pytest.fixture(scope="module")
def fx(tmp_path_factory: pytest.TempPathFactory) -> Fixtures:
    return Fixtures(tmp_path_factory.mktemp("hardening-inputs"))


# -- the check every case makes -----------------------------------------------------------------
def _snapshot(roots: Sequence[Path]) -> dict[str, str]:
    """Every file (sha256) and folder under ``roots``."""
    seen: dict[str, str] = {}
    for root in roots:
        if root.is_file():
            seen[str(root)] = hashlib.sha256(root.read_bytes()).hexdigest()
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            for d in dirnames:
                seen[os.path.join(dirpath, d)] = "dir"
            for f in filenames:
                p = Path(dirpath, f)
                seen[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return seen


def refused(
    capsys: pytest.CaptureFixture[str],
    args: Sequence[str],
    *,
    names: str | Path,
    watch: Sequence[Path],
    expect: str,
) -> str:
    """Run the CLI; assert the one-line error of the table and that nothing changed; the line."""
    before = _snapshot(watch)
    capsys.readouterr()
    unraisable: list[str] = []  # what Python would print at exit ("Exception ignored in ...")
    hook, sys.unraisablehook = sys.unraisablehook, lambda u: unraisable.append(repr(u.exc_value))
    try:
        code = main([str(a) for a in args])
        gc.collect()
    finally:
        sys.unraisablehook = hook
    assert not unraisable, unraisable
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert code == 2, (code, err)
    assert len(lines) == 1, err
    line = lines[0]
    assert line.startswith(PREFIX), line
    assert str(names) in line, (str(names), line)
    assert expect in line, (expect, line)
    assert "Traceback" not in out + err
    after = _snapshot(watch)
    assert after == before, {k for k in before.keys() ^ after.keys()} or "contents changed"
    return line


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _command(
    name: str, fx: Fixtures, slide: Path, out: Path, model: Path | None = None
) -> list[str]:
    """A command line of ``name`` that reads ``slide`` and writes under ``out``."""
    if name == "info":
        return ["info", slide]
    if name == "tiles":
        return ["tiles", slide, "-o", out / "tiles.csv"]
    if name == "predict":
        return ["predict", model or fx.model, slide, "-o", out / "scores"]
    if name == "label":
        return ["label", slide, "--geojson", fx.syn.geojson, "-o", out / "labels.csv"]
    if name == "screen":
        return ["screen", model or fx.model, slide, "-o", out / "worklist.csv"]
    raise AssertionError(name)


# -- bad slide files ------------------------------------------------------------------------------
BAD_SLIDES = {
    "corrupt": ("corrupt.svs", "damaged or truncated TIFF"),
    "zero-byte": ("zero.svs", "empty file (0 bytes)"),
    "text renamed .svs": ("notes.svs", "not a valid SVS slide"),
    "missing": ("missing.svs", "no such file"),
    "folder": ("folder.svs", "is a directory"),
}


def _bad_slide(kind: str, where: Path) -> Path:
    name = BAD_SLIDES[kind][0]
    path = where / name
    if kind == "corrupt":
        _write(path, b"II*\x00" + np.random.default_rng(1).bytes(8000))
    elif kind == "zero-byte":
        _write(path, b"")
    elif kind == "text renamed .svs":
        _write(path, b"slide 12, biopsy 3: see the scanner's export\n")
    elif kind == "folder":
        path.mkdir(parents=True)
    return path


@pytest.mark.parametrize("command", ["info", "tiles", "predict"])
@pytest.mark.parametrize("kind", list(BAD_SLIDES))
def test_bad_slide_file(
    fx: Fixtures, tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str, command: str
) -> None:
    slide = _bad_slide(kind, tmp_path / "in")
    out = tmp_path / "out"
    out.mkdir()
    refused(
        capsys,
        _command(command, fx, slide, out),
        names=slide,
        watch=[tmp_path, fx.root],
        expect=BAD_SLIDES[kind][1],
    )


@pytest.mark.parametrize("command", ["info", "tiles", "predict"])
def test_truncated_svs(
    fx: Fixtures, data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    data = (data_dir / "wsi" / "CMU-1-Small-Region.svs").read_bytes()
    slide = _write(tmp_path / "in" / "cut.svs", data[: len(data) // 2])
    (tmp_path / "out").mkdir()
    refused(
        capsys,
        _command(command, fx, slide, tmp_path / "out"),
        names=slide,
        watch=[tmp_path, fx.root, data_dir / "wsi"],
        expect="damaged or truncated TIFF",
    )


@pytest.mark.parametrize("command", ["tiles", "predict", "label"])
def test_damaged_tiles_inside_a_valid_tiff(
    fx: Fixtures, tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    """The structure is sound (``info`` works) but the JPEG tiles are garbage past a third."""
    import tifffile

    data = bytearray(fx.slide.read_bytes())
    with tifffile.TiffFile(fx.slide) as tf:
        page = tf.pages[0]
        spans = list(zip(page.dataoffsets, page.databytecounts, strict=True))
    rng = np.random.default_rng(2)
    for off, n in spans:
        data[off + n // 3 : off + n] = rng.bytes(n - n // 3)
    slide = _write(tmp_path / "in" / "damaged.tif", bytes(data))
    assert main(["info", str(slide)]) == 0
    (tmp_path / "out").mkdir()
    refused(
        capsys,
        _command(command, fx, slide, tmp_path / "out"),
        names=slide,
        watch=[tmp_path, fx.root],
        expect="read failed",
    )


def test_png_renamed_svs_is_read_as_the_image_it_is(
    fx: Fixtures, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Content decides, not the suffix: a PNG named .svs opens as a plain image (no scale)."""
    slide = tmp_path / "in" / "photo.svs"
    slide.parent.mkdir()
    cv2.imwrite(str(slide.with_suffix(".png")), np.full((300, 400, 3), 200, np.uint8))
    slide.with_suffix(".png").rename(slide)
    assert main(["info", str(slide)]) == 0
    assert "format:     png" in capsys.readouterr().out
    (tmp_path / "out").mkdir()
    refused(
        capsys,
        _command("tiles", fx, slide, tmp_path / "out"),
        names=slide,
        watch=[tmp_path, fx.root],
        expect="records neither objective power nor mpp",
    )


# -- annotations --------------------------------------------------------------------------------
BILLION_LAUGHS = (
    '<?xml version="1.0"?>\n<!DOCTYPE lolz [\n <!ENTITY lol "lol">\n'
    + "".join(
        f' <!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">\n'
        for i in range(1, 10)
    )
    + ']>\n<ASAP_Annotations><Annotations><Annotation Name="a" Type="Polygon" '
    'PartOfGroup="&lol9;"><Coordinates><Coordinate Order="0" X="1" Y="1"/></Coordinates>'
    "</Annotation></Annotations></ASAP_Annotations>\n"
)

ANNOTATIONS = {
    "malformed GeoJSON": ("--geojson", "bad.geojson", b'{"type": "FeatureCollection", "feat',
                          "not valid JSON"),
    "empty GeoJSON (0 bytes)": ("--geojson", "empty.geojson", b"", "empty annotation file"),
    "GeoJSON without polygons": ("--geojson", "none.geojson",
                                 b'{"type": "FeatureCollection", "features": []}',
                                 "contains no polygon"),
    "XML entity bomb": ("--xml", "bomb.xml", BILLION_LAUGHS.encode(), "refused unsafe XML"),
    "malformed XML": ("--xml", "bad.xml", b"<ASAP_Annotations><Annotations>", "malformed XML"),
    "label mask of the wrong size": ("--mask", "mask.png", None, "no consistent downsample"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(ANNOTATIONS))
def test_bad_annotation(
    fx: Fixtures, tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    flag, name, content, expect = ANNOTATIONS[case]
    path = tmp_path / "in" / name
    if content is None:
        path.parent.mkdir()
        cv2.imwrite(str(path), np.zeros((10, 17), np.uint8))
    else:
        _write(path, content)
    out = tmp_path / "out" / "labels.csv"
    out.parent.mkdir()
    refused(
        capsys,
        ["label", fx.slide, flag, path, "-o", out],
        names=path,
        watch=[tmp_path, fx.root],
        expect=expect,
    )


def test_painted_copy_of_the_wrong_size(
    fx: Fixtures, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "labels.csv"
    refused(
        capsys,
        ["label", fx.slide, "--painted", fx.other.painted, "-o", out],
        names=fx.other.painted,
        watch=[tmp_path, fx.root],
        expect="matches neither",
    )


# -- slides without tissue ----------------------------------------------------------------------
@pytest.mark.parametrize("command", ["tiles", "predict", "label"])
@pytest.mark.parametrize("which", ["white", "glass"])
def test_slide_without_tissue(
    fx: Fixtures, tmp_path: Path, capsys: pytest.CaptureFixture[str], which: str, command: str
) -> None:
    """All-white scan, or blank glass with dust and pen marks: an error, not an empty table."""
    slide = getattr(fx, which)
    refused(
        capsys,
        _command(command, fx, slide, tmp_path),
        names=slide,
        watch=[tmp_path, fx.root],
        expect="no tissue found",
    )


def test_screen_ranks_slides_without_tissue_for_a_manual_read(
    fx: Fixtures, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`screen` does not stop: such slides get status "no tissue", ranked after the failures."""
    import csv

    worklist = tmp_path / "worklist.csv"
    capsys.readouterr()
    code = main(
        ["screen", str(fx.model), str(fx.white), str(fx.slide), str(fx.glass), "-o", str(worklist)]
    )
    out, err = capsys.readouterr()
    assert code == 2 and "Traceback" not in out + err
    assert sorted(err.splitlines()) == [
        "prostate-fast: glass.tif: no tissue",
        "prostate-fast: white.tif: no tissue",
    ]
    rows = list(csv.DictReader(worklist.open()))
    assert [r["status"] for r in rows] == ["no tissue", "no tissue", "ok"]
    assert rows[2]["slide"] == "synthetic.tif" and int(rows[2]["n_tiles"]) > 0
    assert all(Path(r["overlay"]).is_file() for r in rows)  # what was scanned can be looked at
    assert not list(tmp_path.rglob("*.part"))


def test_batch_gives_slides_without_tissue_the_same_row(fx: Fixtures, tmp_path: Path) -> None:
    """`batch`: processed (exit 0, skipped on a rerun), worklist status "no tissue"."""
    import csv

    from prostate_fast.batch import run_batch

    listing = _write(tmp_path / "slides.txt", f"{fx.white}\n{fx.slide}\n".encode())
    for rerun in (False, True):
        res = run_batch(listing, fx.model, tmp_path / "out", workers=0)
        assert res.counts == (
            {"done": 0, "skipped": 2, "error": 0}
            if rerun
            else {"done": 2, "skipped": 0, "error": 0}
        )
        rows = list(csv.DictReader(res.worklist.open()))
        assert [(r["slide"], r["status"]) for r in rows] == [
            ("white.tif", "no tissue"),
            ("synthetic.tif", "ok"),
        ]


# -- datasets and models --------------------------------------------------------------------------
def test_empty_dataset(fx: Fixtures, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A label table that selects nothing (its header only)."""
    lines = fx.table.read_text().splitlines()
    empty = _write(tmp_path / "in" / "empty.csv", ("\n".join(lines[:2]) + "\n").encode())
    refused(
        capsys,
        ["dataset", empty, "-o", tmp_path / "ds"],
        names=empty,
        watch=[tmp_path, fx.root],
        expect="empty selection",
    )


def test_dataset_split_left_empty_by_white_cleaning(
    fx: Fixtures, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Tables whose tiles are all white (white_fraction 1), none kept: the splits are empty."""
    tables = []
    for src in (fx.table, fx.table_other):
        head, cols, *rows = src.read_text().splitlines()
        white = [",".join([*r.split(",")[:-1], "1"]) for r in rows]
        tables.append(
            _write(tmp_path / "in" / src.name, "\n".join([head, cols, *white, ""]).encode())
        )
    args = [
        "dataset",
        *tables,
        "-o",
        tmp_path / "ds",
        "--fractions",
        "0.5,0.5",
        "--white-keep",
        "0",
        "--balance",
        "all",
    ]
    refused(
        capsys,
        args,
        names=tables[0].parent,
        watch=[tmp_path, fx.root],
        expect="is empty after white cleaning",
    )


@pytest.mark.parametrize("command", ["predict", "screen"])
def test_model_whose_classes_do_not_match(
    fx: Fixtures, tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    """model.json lists 3 classes, the network has 2 outputs."""
    refused(
        capsys,
        _command(command, fx, fx.slide, tmp_path, model=fx.model_mismatch),
        names=fx.model_mismatch,
        watch=[tmp_path, fx.root],
        expect="class count mismatch",
    )


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
    """MXNet writes the .rec in C++: on a full disk it raises MXNetError, not OSError."""
    from prostate_fast._mx import import_mxnet

    mx = import_mxnet()
    real = mx.recordio.MXIndexedRecordIO.write_idx
    calls = []

    def write_idx(self, idx, buf):  # noqa: ANN001, ANN202
        calls.append(idx)
        if len(calls) > 5:
            raise mx.base.MXNetError(
                'Traceback (most recent call last):\n  File "local_filesys.cc", line 38\n'
                "MXNetError: Check failed: std::fwrite(ptr, 1, size, fp_) == size: "
                "FileStream.Write incomplete"
            )
        return real(self, idx, buf)

    monkeypatch.setattr(mx.recordio.MXIndexedRecordIO, "write_idx", write_idx)
    args, named = _writer("dataset", fx, tmp_path)
    line = refused(
        capsys, args, names=named, watch=[tmp_path, fx.root], expect="FileStream.Write incomplete"
    )
    assert "is the disk full?" in line and ".part" not in line


# -- the console script ---------------------------------------------------------------------------
def _script(args: Sequence[object], **kwargs: object) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "prostate_fast.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        **kwargs,  # type: ignore[arg-type]
    )


def _one_error_line(res: subprocess.CompletedProcess, named: Path, expect: str) -> None:
    assert res.returncode == 2, res.stderr
    assert res.stderr.count("\n") == 1 and res.stderr.startswith(PREFIX), res.stderr
    assert str(named) in res.stderr and expect in res.stderr, res.stderr
    assert "Traceback" not in res.stdout + res.stderr


def test_console_script_corrupt_slide_and_entity_bomb(fx: Fixtures, tmp_path: Path) -> None:
    slide = _bad_slide("corrupt", tmp_path / "in")
    before = _snapshot([tmp_path, fx.root])
    res = _script(["tiles", slide, "-o", tmp_path / "t.csv"])
    _one_error_line(res, slide, "damaged or truncated TIFF")
    assert _snapshot([tmp_path, fx.root]) == before
    bomb = _write(tmp_path / "in" / "bomb.xml", BILLION_LAUGHS.encode())
    before = _snapshot([tmp_path, fx.root])
    res = _script(["label", fx.slide, "--xml", bomb, "-o", tmp_path / "l.csv"])
    _one_error_line(res, bomb, "refused unsafe XML")
    assert _snapshot([tmp_path, fx.root]) == before


def test_console_script_file_size_limit(fx: Fixtures, tmp_path: Path) -> None:
    """The kernel refuses writes past RLIMIT_FSIZE (EFBIG) to every writer, C libraries too."""
    import resource

    def limit() -> None:  # Python ignores SIGXFSZ, so write() fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 10, 64 << 10))

    out = tmp_path / "out"
    out.mkdir()
    before = _snapshot([tmp_path, fx.root])
    res = _script(["overlay", fx.slide, f"{fx.scores}.npz", "-o", out / "o.tif"], preexec_fn=limit)
    _one_error_line(res, out / "o.tif", "File too large")
    assert _snapshot([tmp_path, fx.root]) == before
