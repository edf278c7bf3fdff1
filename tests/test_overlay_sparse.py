"""Overlay: untouched tiles are decoded at half size only, for level 1; level 0 stays as before."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from _scoregrid import make_scores
from test_overlay_copy import _copy_only
from test_overlay_copy import _tiles as _tile_bytes

from prostate_fast.overlay import blend_tables, write_overlay
from prostate_fast.overlay import sparse as sparse_mod
from prostate_fast.overlay.copy import touched_tiles
from prostate_fast.overlay.core import TIFF_TILE
from prostate_fast.slide import open_slide
from prostate_fast.slide.pyramid import write_pyramid
from prostate_fast.slide.tiff import TiffLevels

#: Largest |difference| per level between the TIFF read back and today's (every tile decoded in
#: full and halved), measured on the synthetic slides: JPEG q90 re-encoding of the reduced levels
#: alone differs from the exact halving of level 0 by up to about 50 grey levels (mean about 1).
MAX_DIFF = 40
MEAN_DIFF = 0.75


def _levels(path) -> list[np.ndarray]:
    with tifffile.TiffFile(path) as tif:
        return [lv.asarray() for lv in tif.series[0].levels]


def _before(monkeypatch, *args, **kwargs):
    """write_overlay without the half-size decoding (untouched tiles copied, all decoded)."""
    return _copy_only(monkeypatch, *args, **kwargs)


@pytest.fixture(autouse=True)
def _no_mirror(monkeypatch):
    """These tests are about the factor-2 pyramid made from level 0 (tests/test_overlay_mirror.py
    has the slide's own levels, which synthetic slides allow)."""
    monkeypatch.setattr(sparse_mod, "mirror_levels", lambda *a, **k: None)


@pytest.fixture(scope="module")
def odd_slide(tmp_path_factory):
    """A synthetic slide whose sides are odd and no multiple of the 256 px TIFF tile."""
    from prostate_fast.synthetic import make_synthetic

    out = tmp_path_factory.mktemp("odd_slide")
    return make_synthetic(out, width=1811, height=1293, seed=5, n_cores=2)


@pytest.mark.parametrize("which", ["synthetic_small", "odd_slide"])
def test_level0_unchanged_lower_levels_close(which, request, tmp_path, monkeypatch) -> None:
    syn = request.getfixturevalue(which)
    s = make_scores(syn)
    new = write_overlay(syn.slide, s, tmp_path / "new.tif", thumbnail=False)
    old = _before(monkeypatch, syn.slide, s, tmp_path / "old.tif", thumbnail=False)
    assert new.level_dimensions == old.level_dimensions
    assert _tile_bytes(new.path) == _tile_bytes(old.path)  # level 0: the same bytes
    a, b = _levels(new.path), _levels(old.path)
    diffs = [np.abs(x.astype(int) - y.astype(int)) for x, y in zip(a[1:], b[1:], strict=True)]
    assert any(d.max() > 0 for d in diffs)  # the lower levels were made another way
    for d in diffs:
        assert d.max() <= MAX_DIFF and d.mean() <= MEAN_DIFF


def test_only_touched_tiles_decoded_in_full(synthetic_small, tmp_path, monkeypatch) -> None:
    s = make_scores(synthetic_small)
    decoded: list[int] = []
    segment = TiffLevels.segment

    def counted(self, level, index, **kw):
        decoded.append(index)
        return segment(self, level, index, **kw)

    with open_slide(synthetic_small.slide) as sl:  # opening checks a few tiles: not counted
        monkeypatch.setattr(TiffLevels, "segment", counted)
        r = write_overlay(sl, s, tmp_path / "o.tif", thumbnail=False)
    touched = touched_tiles(blend_tables(s), *r.level_dimensions[0], TIFF_TILE)
    assert sorted(decoded) == np.flatnonzero(touched.ravel()).tolist()


def test_halves_exact_where_blended(odd_slide, tmp_path, monkeypatch) -> None:
    """Level 1's rows: the 2 x 2 average of the blended strip on touched tiles, exactly; the
    half-size decode of the slide's tile elsewhere, close to the average of its full decode."""
    import cv2

    s = make_scores(odd_slide, tile=64)
    pairs: list[tuple[np.ndarray, np.ndarray]] = []
    with_halves = sparse_mod.SparseLevels.with_halves

    def kept(self, strips):
        for strip, half in with_halves(self, strips):
            pairs.append((strip.copy(), half.copy()))
            yield strip, half

    monkeypatch.setattr(sparse_mod.SparseLevels, "with_halves", kept)
    r = write_overlay(odd_slide.slide, s, tmp_path / "o.tif", thumbnail=False, strip_pixels=1)
    w, h = r.level_dimensions[0]
    touched = touched_tiles(blend_tables(s), w, h, TIFF_TILE)
    with tifffile.TiffFile(odd_slide.slide) as tif:
        slide0 = tif.series[0].levels[0].asarray()
    y0, t = 0, TIFF_TILE
    assert touched.any() and not touched.all() and len(pairs) == touched.shape[0]
    for (strip, half), row in zip(pairs, touched, strict=True):
        n, m = half.shape[:2]
        assert (n, m) == (strip.shape[0] // 2, w // 2)
        exact = cv2.resize(strip[: 2 * n, : 2 * m], (m, n), interpolation=cv2.INTER_AREA)
        ref = slide0[y0 : y0 + 2 * n, : 2 * m]
        ref = cv2.resize(ref, (m, n), interpolation=cv2.INTER_AREA).astype(int)
        for c, hit in enumerate(row.tolist()):
            box = np.s_[:, c * t // 2 : (c + 1) * t // 2]
            if hit:
                np.testing.assert_array_equal(half[box], exact[box])
            else:
                assert np.abs(half[box].astype(int) - ref[box]).max() <= MAX_DIFF
        y0 += strip.shape[0]


def test_same_bytes_for_any_thread_count(synthetic_small, tmp_path) -> None:
    s = make_scores(synthetic_small)
    one = write_overlay(synthetic_small.slide, s, tmp_path / "1.tif", thumbnail=False, n_threads=1)
    two = write_overlay(synthetic_small.slide, s, tmp_path / "2.tif", thumbnail=False, n_threads=3)
    assert one.path.read_bytes() == two.path.read_bytes()


def test_not_used_when_level0_is_captured(odd_slide, tmp_path, monkeypatch) -> None:
    """A thumbnail made from level 0 needs its every pixel: every tile is decoded in full."""
    s = make_scores(odd_slide)
    new = write_overlay(odd_slide.slide, s, tmp_path / "new.tif", thumbnail_size=4096)
    old = _before(monkeypatch, odd_slide.slide, s, tmp_path / "old.tif", thumbnail_size=4096)
    assert new.path.read_bytes() == old.path.read_bytes()
    assert new.thumbnail.read_bytes() == old.thumbnail.read_bytes()


def test_pyramid_takes_given_reduced_rows(tmp_path) -> None:
    """write_pyramid writes (strip, reduced) pairs' reduced rows as level 1, as they are."""
    rng = np.random.default_rng(0)
    strip = rng.integers(0, 256, (512, 640, 3), np.uint8)
    given = np.full((256, 320, 3), 77, np.uint8)
    info = write_pyramid(
        tmp_path / "p.tif", iter([(strip, given)]), 640, 512, compression="none", top=320
    )
    assert info.level_dimensions == ((640, 512), (320, 256))
    levels = _levels(tmp_path / "p.tif")
    np.testing.assert_array_equal(levels[0], strip)
    np.testing.assert_array_equal(levels[1], given)
    with pytest.raises(ValueError, match="reduced rows"):
        write_pyramid(tmp_path / "q.tif", iter([(strip, given[:10])]), 640, 512, top=320)


@pytest.mark.parametrize("strip_rows", [64, 96])
def test_reduced_levels_in_memory_or_on_disk_give_the_same_file(
    tmp_path, monkeypatch, strip_rows
) -> None:
    """A reduced level kept in memory (the default up to LEVEL_MEMORY) or moved to a temporary
    file part-way (a budget of a few strips) gives the same TIFF, and no file is left behind."""
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (600, 1000, 3), np.uint8)
    strips = [image[y : y + strip_rows] for y in range(0, 600, strip_rows)]
    kw = {"tile": 32, "top": 40, "compression": "deflate"}
    import tempfile

    real, made = tempfile.mkstemp, []
    monkeypatch.setattr(tempfile, "mkstemp", lambda **k: made.append(k) or real(**k))
    mem = write_pyramid(tmp_path / "mem.tif", iter(strips), 1000, 600, **kw)
    assert made == []
    budget = 3 * (strip_rows // 2) * 500 * 3  # level 1 spills after its third strip
    disk = write_pyramid(
        tmp_path / "disk.tif", iter(strips), 1000, 600, level_memory=budget, strip_pixels=1, **kw
    )
    assert [k["suffix"] for k in made] == [".level1.raw"]
    assert mem.level_dimensions == disk.level_dimensions and len(mem.level_dimensions) > 3
    assert (tmp_path / "mem.tif").read_bytes() == (tmp_path / "disk.tif").read_bytes()
    levels = _levels(tmp_path / "mem.tif")
    np.testing.assert_array_equal(levels[0], image)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["disk.tif", "mem.tif"]


def test_opencv_decodes_the_same_without_simplejpeg(odd_slide, tmp_path, monkeypatch) -> None:
    import sys

    s = make_scores(odd_slide)
    a = write_overlay(odd_slide.slide, s, tmp_path / "a.tif", thumbnail=False)
    monkeypatch.setitem(sys.modules, "simplejpeg", None)  # import fails: OpenCV decodes
    b = write_overlay(odd_slide.slide, s, tmp_path / "b.tif", thumbnail=False)
    assert a.path.read_bytes() == b.path.read_bytes()
