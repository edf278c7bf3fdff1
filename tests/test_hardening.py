"""Input hardening of the CLI (issue 9): the README table's cases of bad inputs, through
``main()`` (outputs that exist or cannot be written: ``test_hardening_outputs.py``).

Each case asserts what the table promises: exit status 2; exactly one line on stderr, starting
with ``prostate-fast: error:`` and naming the file; no traceback; no partial output (the folders
involved hold exactly the same files, folders and bytes before and after: no ``*.part``, no
temporary level file, no half of a pair); the user's inputs and existing outputs unchanged.
The console-script cases run ``prostate-fast`` itself, one under ``RLIMIT_FSIZE`` (the kernel's
``EFBIG`` from every writer, C libraries included).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import pytest
from _hardening import (
    PREFIX,
    Fixtures,
    _command,
    _snapshot,
    _write,
    refused,
)

from prostate_fast.cli.main import main


@pytest.fixture(scope="module")
def fx(tmp_path_factory: pytest.TempPathFactory) -> Fixtures:
    return Fixtures(tmp_path_factory.mktemp("hardening-inputs"))


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
