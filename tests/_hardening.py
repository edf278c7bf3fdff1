"""Fixtures and the check shared by the input-hardening tests (``test_hardening*.py``).

:class:`Fixtures` makes the inputs (under ``root``, which every case checks is unchanged);
:func:`refused` runs the CLI and asserts the README table's promise: exit 2, one line naming
the file, no traceback, nothing changed under the watched folders.
"""

from __future__ import annotations

import gc
import hashlib
import os
import sys
from collections.abc import Sequence
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
