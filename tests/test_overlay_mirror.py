"""Overlay on the slide's own pyramid: untouched tiles of every level copied, the rest blended."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import tifffile
from _scoregrid import make_scores
from test_overlay_copy import _tiles as _level0_bytes

from prostate_fast.overlay import blend_tables, write_overlay
from prostate_fast.overlay import sparse as sparse_mod
from prostate_fast.overlay.copy import touched_tiles
from prostate_fast.overlay.core import TIFF_TILE
from prostate_fast.slide.pyramid import write_pyramid


def _pages(path) -> list[tuple[tuple[int, int], list[bytes], np.ndarray]]:
    """Per level: (width, height), tile bytes, pixels."""
    out = []
    with tifffile.TiffFile(path) as tif:
        for lv in tif.series[0].levels:
            page, fh = lv.keyframe, tif.filehandle
            data = []
            for off, n in zip(page.dataoffsets, page.databytecounts, strict=True):
                fh.seek(off)
                data.append(fh.read(n))
            out.append(((int(page.imagewidth), int(page.imagelength)), data, lv.asarray()))
    return out


def _without_mirror(monkeypatch, *args, **kwargs):
    with monkeypatch.context() as m:
        m.setattr(sparse_mod, "mirror_levels", lambda *a, **k: None)
        return write_overlay(*args, **kwargs)


def _touched(scores, size, factor: int, level: int) -> np.ndarray:
    """Tiles of ``level`` over a touched level-0 tile (the oracle: footprints, not propagation)."""
    t0 = touched_tiles(blend_tables(scores), *size, TIFF_TILE)
    w, h = size[0] // factor**level, size[1] // factor**level
    out = np.zeros((-(-h // TIFF_TILE), -(-w // TIFF_TILE)), bool)
    rr, cc = np.nonzero(t0)
    out[rr // factor**level, cc // factor**level] = True
    return out


@pytest.fixture(scope="module")
def odd_slide(tmp_path_factory):
    from prostate_fast.synthetic import make_synthetic

    out = tmp_path_factory.mktemp("odd_mirror")
    return make_synthetic(out, width=2611, height=1293, seed=5, n_cores=2)


@pytest.fixture(scope="module")
def twice_slide(synthetic_small, tmp_path_factory):
    """synthetic_small's level 0 in a pyramid halved per level (factor 2), 256 px JPEG tiles."""
    image = tifffile.imread(synthetic_small.slide, level=0)
    path = tmp_path_factory.mktemp("twice") / synthetic_small.slide.name
    strips = (image[y : y + 512] for y in range(0, image.shape[0], 512))
    write_pyramid(path, strips, image.shape[1], image.shape[0], mpp=0.5, top=300)
    return path


@pytest.mark.parametrize("which", ["synthetic_small", "odd_slide", "twice_slide"])
def test_levels_are_the_slides_untouched_copied_touched_blended(
    which, request, tmp_path, monkeypatch
) -> None:
    made = request.getfixturevalue(which)
    path = made if which == "twice_slide" else made.slide
    syn = request.getfixturevalue("synthetic_small" if which == "twice_slide" else which)
    s = make_scores(syn)
    new = write_overlay(path, s, tmp_path / "new.tif", thumbnail=False)
    old = _without_mirror(monkeypatch, path, s, tmp_path / "old.tif", thumbnail=False)
    slide, out = _pages(path), _pages(new.path)
    assert new.level_dimensions == tuple(d for d, _, _ in slide) != old.level_dimensions
    assert len(slide) >= 2
    factor = slide[0][0][0] // slide[1][0][0]
    assert factor == (2 if which == "twice_slide" else 4)
    assert _level0_bytes(new.path) == _level0_bytes(old.path)  # level 0: the same bytes
    level0 = out[0][2]
    for k in range(1, len(slide)):
        touched = _touched(s, slide[0][0], factor, k).ravel()
        assert touched.any() and (k > 1 or not touched.all())
        same = np.array([a == b for a, b in zip(out[k][1], slide[k][1], strict=True)])
        np.testing.assert_array_equal(same, ~touched)  # copied exactly where untouched
        (w, h), got = out[k][0], out[k][2].astype(int)
        f = factor**k
        want = cv2.resize(level0[: h * f, : w * f], (w, h), interpolation=cv2.INTER_AREA)
        diff = np.abs(got - want)
        assert diff.mean() < 3.0 and np.percentile(diff, 99.9) < 40  # JPEG noise only
        # the green of the blended tiles is there: touched areas greener than the slide's own
        own = slide[k][2].astype(int)
        green = (got[..., 1] - got[..., 0]) - (own[..., 1] - own[..., 0])
        assert green.max() > 40


def test_thumbnail_and_threads_do_not_change_the_file(synthetic_small, tmp_path, monkeypatch):
    s = make_scores(synthetic_small)
    a = write_overlay(synthetic_small.slide, s, tmp_path / "a.tif", n_threads=1)
    b = write_overlay(synthetic_small.slide, s, tmp_path / "b.tif", n_threads=2, thumbnail=False)
    assert a.path.read_bytes() == b.path.read_bytes()
    old = _without_mirror(monkeypatch, synthetic_small.slide, s, tmp_path / "old.tif")
    ta, to = cv2.imread(str(a.thumbnail)), cv2.imread(str(old.thumbnail))
    assert ta.shape == to.shape
    assert np.abs(ta.astype(int) - to.astype(int)).mean() < 1.0


def test_other_pyramids_keep_the_halved_levels(synthetic_small, tmp_path) -> None:
    """A pyramid divided by 3 per level, or in deflate, is not mirrored: levels halve as before."""
    image = tifffile.imread(synthetic_small.slide, level=0)
    h, w = image.shape[:2]
    s = make_scores(synthetic_small)
    for name, kw in (("thirds", {"factor": 3}), ("deflate", {"compression": "deflate"})):
        path = tmp_path / name / synthetic_small.slide.name
        path.parent.mkdir()
        write_pyramid(path, iter([image]), w, h, mpp=0.5, top=600, **kw)
        res = write_overlay(path, s, tmp_path / f"{name}.tif", thumbnail=False)
        assert res.level_dimensions == ((4096, 2048), (2048, 1024), (1024, 512), (512, 256))
