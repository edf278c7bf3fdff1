"""Tile labels: the painted-copy kernel against NumPy and the study's OpenCV loop, agreement of
painted copy, GeoJSON and truth mask on synthetic slides, masks, tables, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from _references import painted_reference

from prostate_fast import cli
from prostate_fast.baseline.label import painted_labels_baseline
from prostate_fast.errors import AnnotationError
from prostate_fast.label import (
    ClassMap,
    label_tiles,
    load_label_table,
    nearest_colour,
    painted_tile_stats,
)
from prostate_fast.slide import ArraySlide, open_slide
from prostate_fast.tile import full_grid, read_tiles

GREEN = np.array([[0, 255, 0]], np.uint8)


# -- fixtures: one synthetic slide, labelled three ways -----------------------------------------
@pytest.fixture(scope="module")
def syn(tmp_path_factory: pytest.TempPathFactory):
    from prostate_fast.synthetic import make_synthetic

    # mask_downsample=2: the default 1/8 truth mask is too coarse to resolve coverage to 1 %
    return make_synthetic(tmp_path_factory.mktemp("syn"), seed=4, n_cancer=6, mask_downsample=2)


@pytest.fixture(scope="module")
def tables(syn):
    with open_slide(syn.slide) as slide:
        grid = full_grid(slide, slide.choose_level(magnification=20), 128)
        return {
            "painted": label_tiles(slide, syn.painted, grid),
            "geojson": label_tiles(slide, syn.geojson, grid, white=False),
            "mask": label_tiles(slide, syn.mask, grid, white=False),
        }


# -- the kernel ---------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(128, 128), (7, 5), (1, 17), (33, 1), (64, 63)])
def test_kernel_matches_numpy_reference_for_any_thread_count(shape) -> None:
    rng = np.random.default_rng(sum(shape))
    n = 40
    o = rng.integers(0, 256, (n, *shape, 3), dtype=np.uint8)
    p = o.copy()
    edit = rng.random((n, *shape)) < 0.3
    inks = np.array([[0, 255, 0], [12, 240, 20], [255, 0, 0], [0, 0, 255], [90, 200, 60]])
    p[edit] = inks[rng.integers(0, len(inks), edit.sum())]
    noise = rng.integers(-70, 71, p.shape) * (rng.random(p.shape) < 0.2)
    p = np.clip(p.astype(int) + noise, 0, 255).astype(np.uint8)
    for cols, thr, tol in [
        ([(0, 255, 0)], 60, 64),
        ([(0, 255, 0), (0, 0, 255)], 30, 40),
        ([(0, 255, 0)], 0, 0),
        ([(0, 255, 0)], 254, 255),
        ([(0, 255, 0)], 255, 10),
    ]:
        want = painted_reference(o, p, cols, thr, tol)
        results = [
            painted_tile_stats(o, p, np.array(cols), threshold=thr, colour_tol=tol, n_threads=t)
            for t in (1, 2, 3)
        ]
        for counts, sums in results:
            np.testing.assert_array_equal(counts, want[0])
            np.testing.assert_array_equal(sums, want[1])


def test_kernel_argument_checks() -> None:
    t = np.zeros((2, 8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="uint8"):
        painted_tile_stats(t.astype(np.float32), t, GREEN)
    with pytest.raises(ValueError, match="must match"):
        painted_tile_stats(t, t[:, :4], GREEN)
    with pytest.raises(ValueError, match="threshold"):
        painted_tile_stats(t, t, GREEN, threshold=256)
    with pytest.raises(ValueError, match="colours"):
        painted_tile_stats(t, t, np.zeros((17, 3)))
    counts, sums = painted_tile_stats(t[:0], t[:0], GREEN)
    assert counts.shape == (0,) and sums.shape == (0, 3)


def test_nearest_colour_uses_integer_arithmetic_and_ties_to_the_first() -> None:
    cols = np.array([[0, 255, 0], [0, 0, 255]])
    counts = np.array([0, 2, 2, 4])
    sums = np.array([[0, 0, 0], [0, 510, 0], [0, 255, 255], [0, 100, 900]])
    np.testing.assert_array_equal(nearest_colour(counts, sums, cols), [-1, 0, 0, 1])


def _cancer_tiles(syn, tables, n=240):
    cov = tables["geojson"].coverage[:, 1]
    order = np.argsort(-np.minimum(cov, 1 - cov + 1e-3))  # boundary tiles first
    idx = np.sort(np.r_[order[: n // 2], np.flatnonzero(cov == 1)[: n // 4], np.arange(n // 4)])
    with open_slide(syn.slide) as slide, open_slide(syn.painted) as painted:
        grid = full_grid(slide, slide.choose_level(magnification=20), 128)
        return read_tiles(slide, grid, idx), read_tiles(painted, grid, idx)


def _assert_kernel_equals_baseline(o, p) -> None:
    base_counts, base_sums, base_idx = painted_labels_baseline(o, p, GREEN)
    assert (base_idx == 0).sum() > 20 and (base_counts == 0).sum() > 20
    for threads in (1, 2):
        counts, sums = painted_tile_stats(o, p, GREEN, n_threads=threads)
        np.testing.assert_array_equal(counts, base_counts)
        np.testing.assert_array_equal(sums, base_sums)
        idx = nearest_colour(counts, sums, GREEN)
        idx[counts / (o.shape[1] * o.shape[2]) < 0.05] = -1
        np.testing.assert_array_equal(idx, base_idx)


def test_kernel_equals_baseline_on_synthetic_tiles(syn, tables) -> None:
    _assert_kernel_equals_baseline(*_cancer_tiles(syn, tables))


def test_kernel_equals_baseline_when_both_images_are_jpeg_q75(syn, tables) -> None:
    o, p = _cancer_tiles(syn, tables)

    def q75(tiles):
        out = np.empty_like(tiles)
        for i, t in enumerate(tiles):
            ok, buf = cv2.imencode(".jpg", t[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 75])
            out[i] = cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1]
        return out

    oj, pj = q75(o), q75(p)
    _assert_kernel_equals_baseline(oj, pj)
    # JPEG noise alone marks nothing: the original against its own q75 copy
    counts, _ = painted_tile_stats(o, oj, GREEN)
    assert counts.max() == 0
    # and the marks survive compression
    before, _ = painted_tile_stats(o, p, GREEN)
    after, _ = painted_tile_stats(oj, pj, GREEN)
    assert np.abs(after - before).max() <= 0.02 * 128 * 128


# -- three sources agree on synthetic slides ----------------------------------------------------
def test_painted_geojson_and_mask_labels_agree(tables) -> None:
    geo = tables["geojson"]
    cov = geo.coverage[:, 1]
    assert geo.counts()["cancer"] > 150
    far = np.abs(cov - 0.05) > 0.01
    for a, b in (("painted", "geojson"), ("painted", "mask"), ("geojson", "mask")):
        la, lb = tables[a].label, tables[b].label
        assert (la == lb).mean() >= 0.995, (a, b)
        assert not ((la != lb) & far).any(), (a, b, np.flatnonzero((la != lb) & far))
    np.testing.assert_allclose(tables["painted"].coverage[:, 1], cov, atol=0.02)
    np.testing.assert_allclose(tables["mask"].coverage[:, 1], cov, atol=0.02)


def test_tables_keep_white_fraction_and_geometry(tables) -> None:
    t = tables["painted"]
    assert t.source == "painted" and t.classes == ("benign", "cancer")
    assert t.white_fraction.dtype == np.float32 and (t.white_fraction > 0.9).sum() > 100
    assert t.tile_size == 128 and t.downsample == 1.0 and t.level == 0
    assert tables["mask"].coverage[:, 0].max() == pytest.approx(1.0)  # code 1 = benign


# -- painted copy geometry, colours, rules ------------------------------------------------------
def _painted_pair():
    rng = np.random.default_rng(0)
    base = rng.integers(150, 230, (512, 768, 3), dtype=np.uint8)
    base[..., 1] //= 2  # pinkish: far from the marker colours
    painted = base.copy()
    painted[0:128, 0:128] = (0, 255, 0)  # full tile at 20x (64 px tiles from 40x)
    painted[128:136, 128:256] = (0, 255, 0)  # 1/16 of a tile: >= 5 %
    painted[256:384, 256:384] = (0, 0, 255)  # a second colour
    kw = {"mpp": 0.25, "objective_power": 40.0}
    return ArraySlide(base, **kw), painted, ArraySlide(painted, **kw)


def test_painted_copy_at_the_tiling_scale_gives_the_same_labels(tmp_path: Path) -> None:
    slide, painted, painted_slide = _painted_pair()
    grid = full_grid(slide, slide.choose_level(magnification=20), 64)
    small = cv2.resize(painted, (384, 256), interpolation=cv2.INTER_AREA)
    path = tmp_path / "painted-20x.png"
    cv2.imwrite(str(path), small[:, :, ::-1])
    cmap = ClassMap.create({"cancer": (0, 255, 0), "other": (0, 0, 255)})
    full = label_tiles(slide, painted_slide, grid, classes=cmap)
    tiled = label_tiles(slide, path, grid, classes=cmap)
    np.testing.assert_array_equal(full.label, tiled.label)
    assert full.counts() == {"benign": 21, "cancer": 2, "other": 1}
    np.testing.assert_allclose(full.coverage, tiled.coverage, atol=0.02)


def test_painted_copy_of_the_wrong_size_is_refused(tmp_path: Path) -> None:
    slide, painted, _ = _painted_pair()
    grid = full_grid(slide, slide.choose_level(magnification=20), 64)
    path = tmp_path / "cropped.png"
    cv2.imwrite(str(path), painted[:500, :700])
    with pytest.raises(AnnotationError, match=r"cropped\.png.*700 x 500.*768 x 512"):
        label_tiles(slide, path, grid)


def test_centre_rule_on_a_painted_copy() -> None:
    slide, _, painted_slide = _painted_pair()
    grid = full_grid(slide, slide.choose_level(level=0), 128)
    table = label_tiles(slide, painted_slide, grid, rule="centre")
    # only the fully painted green tile has a green centre; the blue one is no class here
    assert table.counts()["cancer"] == 1 and table.label[0] == 1


# -- label masks --------------------------------------------------------------------------------
def test_mask_any_downsample_16_bit_tiff(tmp_path: Path) -> None:
    import tifffile

    slide = ArraySlide(np.full((1000, 1500, 3), 200, np.uint8))
    grid = full_grid(slide, slide.choose_level(level=0), 100)
    mask = np.zeros((250, 375), np.uint16)  # downsample 4
    mask[:, :] = 1
    mask[0:25, 0:25] = 300  # the first tile: all of it
    mask[25:27, 25:50] = 300  # the 12th tile (row 1, col 1): 8 %
    path = tmp_path / "codes.tif"
    tifffile.imwrite(path, mask)
    cmap = ClassMap.create(codes={1: "benign", 300: "cancer"})
    table = label_tiles(slide, path, grid, classes=cmap, white=False)
    assert table.label[0] == 1 and table.label[16] == 1 and table.counts()["cancer"] == 2
    assert table.coverage[16, 1] == pytest.approx(0.08)


@pytest.mark.parametrize(
    "arr, match",
    [
        (np.zeros((100, 50), np.uint8), "no consistent downsample"),
        (np.full((250, 375), 7, np.uint8), r"codes \[7\]"),
        (np.dstack([np.zeros((250, 375), np.uint8), np.ones((250, 375), np.uint8)] * 2), "colour"),
    ],
)
def test_bad_masks_are_refused(tmp_path: Path, arr, match) -> None:
    slide = ArraySlide(np.full((1000, 1500, 3), 200, np.uint8))
    grid = full_grid(slide, slide.choose_level(level=0), 100)
    path = tmp_path / "bad-mask.png"
    cv2.imwrite(str(path), arr[:, :, :3] if arr.ndim == 3 else arr)
    with pytest.raises(AnnotationError, match=rf"bad-mask\.png.*{match}"):
        label_tiles(slide, path, grid, source="mask", white=False)


# -- tables ------------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".csv", ".npz"])
def test_table_round_trip(tables, tmp_path: Path, suffix: str) -> None:
    t = tables["painted"]
    path = t.save(tmp_path / f"labels{suffix}")
    back = load_label_table(path)
    scalars = "slide_name slide_path classes tile_size stride downsample level source source_path"
    for k in (*scalars.split(), "min_coverage", "rule"):
        assert getattr(back, k) == getattr(t, k), k
    for k in ("tile_rc", "l0_xy", "label"):
        np.testing.assert_array_equal(getattr(back, k), getattr(t, k))
    np.testing.assert_allclose(back.coverage, t.coverage, rtol=1e-5)
    np.testing.assert_allclose(back.white_fraction, t.white_fraction, rtol=1e-5)
    with pytest.raises(FileExistsError):
        t.save(path)
    if suffix == ".csv":
        head = path.read_text().splitlines()
        assert json.loads(head[0].split(" v1 ", 1)[1])["classes"] == ["benign", "cancer"]
        assert head[1].endswith("coverage_benign,coverage_cancer,white_fraction")


# -- CLI ---------------------------------------------------------------------------------------
def test_cli_label_writes_a_table(syn, tmp_path: Path, capsys) -> None:
    out = tmp_path / "labels.csv"
    rc = cli.main(["label", str(syn.slide), "--geojson", str(syn.geojson), "-o", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "cancer" in text and str(out) in text
    table = load_label_table(out)
    assert table.counts()["cancer"] > 150 and len(table) < 2048  # tissue tiles only


def _cli_error(syn, tmp_path: Path, capsys, flag: str, name: str, content) -> str:
    path = tmp_path / name
    if isinstance(content, np.ndarray):
        cv2.imwrite(str(path), content)
    else:
        path.write_text(content)
    out = tmp_path / "labels.csv"
    argv = ["label", str(syn.slide), flag, str(path), "-o", str(out), "--all-tiles"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and name in err[0] and err[0].startswith("prostate-fast: error:")
    assert not out.exists()
    return err[0]


def test_cli_painted_copy_of_wrong_size_exits_2(syn, tmp_path, capsys) -> None:
    img = np.zeros((300, 400, 3), np.uint8)
    assert "400 x 300" in _cli_error(syn, tmp_path, capsys, "--painted", "small.png", img)


def test_cli_empty_geojson_exits_2(syn, tmp_path, capsys) -> None:
    _cli_error(syn, tmp_path, capsys, "--geojson", "empty.geojson", "")


def test_cli_malformed_geojson_exits_2(syn, tmp_path, capsys) -> None:
    _cli_error(syn, tmp_path, capsys, "--geojson", "bad.geojson", '{"type": "Feature", "geo')


def test_cli_xml_entity_bomb_exits_2(syn, tmp_path, capsys) -> None:
    bomb = (
        '<?xml version="1.0"?><!DOCTYPE b [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]>'
        '<Annotations><Annotation Name="&b;"/></Annotations>'
    )
    assert "unsafe" in _cli_error(syn, tmp_path, capsys, "--xml", "bomb.xml", bomb)


def test_cli_unknown_class_name_exits_2(syn, tmp_path, capsys) -> None:
    doc = json.loads(syn.geojson.read_text())
    doc["features"][0]["properties"]["classification"]["name"] = "Mystery"
    msg = _cli_error(syn, tmp_path, capsys, "--geojson", "mystery.geojson", json.dumps(doc))
    assert "'Mystery'" in msg
