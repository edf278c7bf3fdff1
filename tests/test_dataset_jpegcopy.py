"""JPEG records copied losslessly from the slide's JPEG tiles (pack's fast path)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

from prostate_fast.dataset import build_dataset, load_dataset_info
from prostate_fast.dataset import records as _records
from prostate_fast.label import label_tiles
from prostate_fast.slide import open_slide
from prostate_fast.slide.jpegcrop import jpeg_crop
from prostate_fast.stain import StainTransform
from prostate_fast.synthetic import make_synthetic
from prostate_fast.tile import full_grid


def _tables(root: Path, magnification: float) -> list:
    out = []
    for i in range(2):
        made = make_synthetic(
            root, name=f"j{i}", width=2048, height=1024, seed=30 + i, n_cancer=2, n_cores=2
        )
        with open_slide(made.slide) as slide:
            grid = full_grid(slide, slide.choose_level(magnification=magnification), 128)
            out.append(label_tiles(slide, made.mask, grid, n_threads=1))
    return out


@pytest.fixture(scope="module")
def tables20(tmp_path_factory):
    """Two synthetic slides (JPEG tiles of 256, 4:2:0) gridded at level 0 as it is."""
    return _tables(tmp_path_factory.mktemp("slides20"), 20.0)


def _build(tables, out: Path, monkeypatch=None, **kw) -> dict:
    if monkeypatch is not None:  # the fallback path: every tile read and re-encoded
        monkeypatch.setattr(_records, "jpeg_tile_crops", lambda *a: None)
    kw = {"encoding": "jpeg", "quality": 90, "fractions": (0.5, 0.5), "seed": 1, **kw}
    build_dataset(tables, out, **kw)
    if monkeypatch is not None:
        monkeypatch.undo()
    return json.loads((out / "dataset.json").read_text())


def _raw_records(out: Path, split: str) -> list[bytes]:
    import mxnet as mx

    info = load_dataset_info(out).split(split)
    reader = mx.recordio.MXIndexedRecordIO(str(info.idx), str(info.rec), "r")
    try:
        return [mx.recordio.unpack(reader.read_idx(k))[1] for k in reader.keys]
    finally:
        reader.close()


def _expected_crop(slide_path: Path, x: int, y: int) -> bytes:
    """The crop of the TIFF tile holding level-0 tile (x, y), cut by the kernel directly."""
    with tifffile.TiffFile(slide_path) as tif:
        page = tif.series[0].levels[0].keyframe
        per_row = -(-page.imagewidth // page.tilewidth)
        i = (y // page.tilelength) * per_row + x // page.tilewidth
        tif.filehandle.seek(page.dataoffsets[i])
        data = tif.filehandle.read(page.databytecounts[i])
        tables = bytes(page.jpegtables) if page.jpegtables else None
    rect = (x % page.tilewidth, y % page.tilelength, 128, 128)
    crops = jpeg_crop(data, tables, [rect])
    assert crops is not None
    return crops[0]


def test_records_are_the_slide_jpeg_crops(tables20, tmp_path, monkeypatch) -> None:
    meta = _build(tables20, tmp_path / "copy", n_threads=2)
    n = sum(s["records"] for s in meta["splits"].values())
    assert meta["settings"]["jpeg_tiles"] == {"copied": n, "re_encoded": 0}
    slides = {t.slide_name: t.slide_path for t in tables20}
    for split in meta["splits"]:
        rows = list(csv.DictReader(open(tmp_path / "copy" / f"{split}.csv", encoding="utf-8")))
        for row, data in zip(rows, _raw_records(tmp_path / "copy", split), strict=True):
            assert data == _expected_crop(slides[row["slide"]], int(row["l0_x"]), int(row["l0_y"]))
    # the fallback path: the same labels, side car and order; every tile re-encoded
    old = _build(tables20, tmp_path / "old", monkeypatch, n_threads=2)
    assert old["settings"].pop("jpeg_tiles") == {"copied": 0, "re_encoded": n}
    meta["settings"].pop("jpeg_tiles")
    assert old == meta
    for split in meta["splits"]:
        for ext in (".csv", ".lst"):
            new_text = (tmp_path / "copy" / f"{split}{ext}").read_bytes()
            assert new_text == (tmp_path / "old" / f"{split}{ext}").read_bytes()
    # one thread writes the same bytes
    _build(tables20, tmp_path / "one", n_threads=1)
    for name in ("train.rec", "train.idx", "val.rec"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "copy" / name).read_bytes()


def test_scaled_reads_fall_back(tmp_path, monkeypatch) -> None:
    tables = _tables(tmp_path / "slides", 10.0)  # level 0 shrunk by 2: scale != 1
    assert (tables[0].level, tables[0].downsample) == (0, 2.0)
    meta = _build(tables, tmp_path / "new", n_threads=2)
    assert meta["settings"]["jpeg_tiles"]["copied"] == 0
    _build(tables, tmp_path / "old", monkeypatch, n_threads=2)
    for name in ("train.rec", "val.rec", "train.csv"):
        assert (tmp_path / "new" / name).read_bytes() == (tmp_path / "old" / name).read_bytes()


def test_stain_transform_falls_back(tables20, tmp_path) -> None:
    meta = _build(tables20, tmp_path / "m", stain_normalise="macenko", n_threads=2)
    n = sum(s["records"] for s in meta["splits"].values())
    assert meta["settings"]["jpeg_tiles"] == {"copied": 0, "re_encoded": n}
    png = _build(tables20, tmp_path / "p", encoding="png", n_threads=2)
    assert "jpeg_tiles" not in png["settings"]


def test_only_an_exact_identity_counts_as_no_stain_change() -> None:
    eye = np.eye(3, dtype=np.float32)
    assert _records._is_identity(None)
    assert _records._is_identity(StainTransform(eye, exact=True))
    assert not _records._is_identity(StainTransform(eye))  # truncates: not the identity
    assert not _records._is_identity(StainTransform(eye, [250.0] * 3, [240.0] * 3, exact=True))
    assert not _records._is_identity(StainTransform(eye * 1.1, exact=True))


def test_rgb_jpeg_slide_crops_are_marked_rgb(data_dir) -> None:
    # Aperio's JPEG tiles are RGB (photometric 2) without a colour marker: on their own they
    # would decode as YCbCr, so every crop carries Adobe's RGB marker, and decodes (OpenCV,
    # simplejpeg) to the slide's exact pixels (no chroma subsampling: no border effect either)
    import cv2
    import simplejpeg

    from prostate_fast.slide.jpegcrop import jpeg_tile_crops
    from prostate_fast.tile import build_grid

    with open_slide(data_dir / "wsi" / "CMU-1-Small-Region.svs") as slide:
        choice = slide.choose_level(magnification=20.0)
        assert choice.scale == 1.0
        crops = jpeg_tile_crops(slide, choice, 128)
        grid = build_grid(slide, tile_size=128)
        got, _ = crops.crops(grid.l0_xy)
        done = [(xy, c) for xy, c in zip(grid.l0_xy, got, strict=True) if c is not None]
        assert 10 <= len(done) < len(grid)  # grid tiles across two 240 px tiles are re-encoded
        for (x, y), crop in done:
            want = slide.read_region((int(x), int(y)), 0, (128, 128))
            bgr = cv2.imdecode(np.frombuffer(crop, np.uint8), cv2.IMREAD_COLOR)
            np.testing.assert_array_equal(bgr[..., ::-1], want)
            np.testing.assert_array_equal(simplejpeg.decode_jpeg(crop, colorspace="RGB"), want)


def test_mark_rgb() -> None:
    from prostate_fast.slide.jpegcrop import mark_rgb

    plain = b"\xff\xd8\xff\xdb\x00\x04ab\xff\xda\x00\x02\xff\xd9"
    marked = mark_rgb(plain)
    adobe = b"\xff\xee\x00\x0eAdobe\x00\x64\x00\x00\x00\x00\x00"  # APP14, 14 bytes, transform 0
    assert marked == plain[:2] + adobe + plain[2:]
    assert mark_rgb(marked) == marked  # one marker only
    jfif = b"\xff\xd8\xff\xe0\x00\x07JFIF\x00" + plain[2:]
    assert mark_rgb(jfif) is None  # JFIF would win over Adobe: not cropped


def test_each_tiff_tile_is_transcoded_once(tables20, tmp_path, monkeypatch) -> None:
    import prostate_fast.slide.jpegcrop as jc

    calls: list[int] = []
    real = jc.jpeg_crop
    monkeypatch.setattr(jc, "jpeg_crop", lambda d, t, r: calls.append(len(r)) or real(d, t, r))
    meta = _build(tables20, tmp_path / "ds", n_threads=2)
    tiles = set()
    for split in meta["splits"]:
        for row in csv.DictReader(open(tmp_path / "ds" / f"{split}.csv", encoding="utf-8")):
            tiles.add((row["slide"], int(row["l0_x"]) // 256, int(row["l0_y"]) // 256))
    assert sum(calls) == meta["settings"]["jpeg_tiles"]["copied"]
    assert len(calls) == len(tiles)  # records in grid order: one call per TIFF tile
