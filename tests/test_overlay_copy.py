"""Overlay: untouched JPEG tiles of the slide are copied into the TIFF as they are."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from _scoregrid import make_scores

from prostate_fast.overlay import blend_tables, write_overlay
from prostate_fast.overlay import copy as copy_mod
from prostate_fast.overlay import sparse as sparse_mod
from prostate_fast.overlay.core import TIFF_TILE


def _tiles(path, level: int = 0) -> list[bytes]:
    with tifffile.TiffFile(path) as tif:
        page = tif.series[0].levels[level].keyframe
        with open(path, "rb") as fh:
            out = []
            for off, n in zip(page.dataoffsets, page.databytecounts, strict=True):
                fh.seek(off)
                out.append(fh.read(n))
        return out


def _today(monkeypatch, *args, **kwargs):
    """write_overlay as before the copy (every tile blended and encoded)."""
    with monkeypatch.context() as m:
        m.setattr(sparse_mod, "sparse_levels", lambda *a, **k: None)
        m.setattr(sparse_mod, "untouched_copier", lambda *a, **k: None)
        return write_overlay(*args, **kwargs)


def _copy_only(monkeypatch, *args, **kwargs):
    """write_overlay with the copy but without the half-size decoding (every tile decoded)."""
    with monkeypatch.context() as m:
        m.setattr(sparse_mod, "sparse_levels", lambda *a, **k: None)
        return write_overlay(*args, **kwargs)


def test_untouched_tiles_copied_blended_unchanged(synthetic_small, tmp_path, monkeypatch) -> None:
    s = make_scores(synthetic_small)
    new = _copy_only(monkeypatch, synthetic_small.slide, s, tmp_path / "new.tif", thumbnail=False)
    old = _today(monkeypatch, synthetic_small.slide, s, tmp_path / "old.tif", thumbnail=False)
    src, got, before = _tiles(synthetic_small.slide), _tiles(new.path), _tiles(old.path)
    w, h = new.level_dimensions[0]
    touched = copy_mod.touched_tiles(blend_tables(s), w, h, TIFF_TILE).ravel()
    assert len(src) == len(got) == len(before) == touched.size
    assert 0 < touched.sum() < touched.size
    for i, t in enumerate(touched):
        if t:  # blended and encoded as today
            assert got[i] == before[i]
        else:  # the slide's own bytes
            assert got[i] == src[i]
    assert any(got[i] != before[i] for i in np.flatnonzero(~touched))  # copied, not re-encoded
    for level in range(1, len(new.level_dimensions)):  # reduced levels: the same pixels as today
        assert _tiles(new.path, level) == _tiles(old.path, level)
    with tifffile.TiffFile(new.path) as a, tifffile.TiffFile(old.path) as b:
        assert a.pages[0].description == b.pages[0].description
        assert [p.shape for p in a.pages] == [p.shape for p in b.pages]


@pytest.mark.parametrize(
    "kwargs", [{"compression": "deflate"}, {"outline": 2, "mode": "graded", "alpha": 0.0}]
)
def test_copy_only_when_allowed(synthetic_small, tmp_path, monkeypatch, kwargs) -> None:
    s = make_scores(synthetic_small)
    a = write_overlay(synthetic_small.slide, s, tmp_path / "a.tif", thumbnail=False, **kwargs)
    b = _today(monkeypatch, synthetic_small.slide, s, tmp_path / "b.tif", thumbnail=False, **kwargs)
    src = _tiles(synthetic_small.slide)
    got = _tiles(a.path)
    if kwargs.get("compression") == "deflate":  # not JPEG: nothing copied, same file as today
        assert a.path.read_bytes() == b.path.read_bytes()
    else:  # graded at alpha 0 tints nothing: only the outlined tiles are blended
        touched = copy_mod.touched_tiles(
            blend_tables(s, **{k: kwargs[k] for k in kwargs}), *a.level_dimensions[0], TIFF_TILE
        )
        today = _tiles(b.path)
        for g, x, o, t in zip(got, src, today, touched.ravel(), strict=True):
            assert g == (o if t else x)
        assert touched.any() and not touched.all()


def test_touched_tiles_overlap() -> None:
    from prostate_fast.overlay.core import BlendTables

    cls = np.full((4, 4), -1, np.int16)
    cls[1, 1] = 1
    alpha = np.where(cls >= 0, 100, 0).astype(np.uint16)
    t = BlendTables(
        cls, alpha, np.zeros_like(cls, np.uint8), np.zeros((2, 3), np.uint8), ("b", "c"), 200, 150
    )
    got = copy_mod.touched_tiles(t, 800, 800, 256)
    # cell (1, 1) covers pixels 150..349 in x and y: tiles 0 and 1 on both axes
    assert got.tolist() == [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
