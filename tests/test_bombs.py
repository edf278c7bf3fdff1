"""Small files that decode to huge things: one line and exit 2, or a result, in bounded memory.

The bombs come from ``tools/bombs.py`` (a few MB on disk at most). Commands run in a child process
under ``RLIMIT_AS`` (3 GiB, what a normal command needs with room to spare), so a regression fails
here instead of exhausting the machine; the child reports its own peak RSS (``VmHWM``).
"""

from __future__ import annotations

import importlib.util
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from prostate_fast.errors import AnnotationError, DatasetError, SlideError

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("bombs", ROOT / "tools" / "bombs.py")
bombs = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
_spec.loader.exec_module(bombs)  # type: ignore[union-attr]

AS_LIMIT = 3 << 30
MB = 1 << 20


#: Runs the CLI and, at exit, writes its peak RSS (VmHWM: this program's own memory, not the
#: pytest process it was forked from, which ``ru_maxrss`` would count) to the file $PF_HWM.
_LAUNCH = """
import atexit, os, sys
def _hwm():
    with open("/proc/self/status") as f:
        kb = next(int(line.split()[1]) for line in f if line.startswith("VmHWM"))
    with open(os.environ["PF_HWM"], "w") as f:
        f.write(str(kb * 1024))
atexit.register(_hwm)
from prostate_fast.cli.main import main
sys.exit(main())
"""


def run(*argv: object) -> tuple[int, str, int]:
    """(exit status, stderr, peak RSS in bytes) of ``prostate-fast ARGV`` under RLIMIT_AS."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (AS_LIMIT, AS_LIMIT))

    with tempfile.TemporaryDirectory() as tmp:
        hwm = Path(tmp) / "hwm"
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PF_HWM": str(hwm)}
        proc = subprocess.run(
            [sys.executable, "-c", _LAUNCH, *map(str, argv)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            preexec_fn=limit,
            check=False,
        )
        rss = int(hwm.read_text()) if hwm.exists() else 1 << 62  # killed: no report
    return proc.returncode, proc.stderr, rss


def refused(rc: int, err: str, *words: str) -> None:
    """One line on stderr, exit 2, every word in it."""
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("prostate-fast: error: "), err
    for w in words:
        assert w in lines[0], err


@pytest.fixture(scope="module")
def slide40k(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 40,000 x 30,000 px two-level TIFF, white with a small tissue patch (0.5 MB)."""
    path = tmp_path_factory.mktemp("bombs") / "slide40k.tif"
    box = (0.1, 0.1, 0.12, 0.12)
    return bombs.tiff_bomb(path, 40000, 30000, tile=256, downsamples=(1, 32), tissue_box=box)


# -- slides and flat images ---------------------------------------------------------------------
def test_tiles_on_a_single_level_tiff_reads_its_thumbnail_by_bands(tmp_path: Path) -> None:
    slide = bombs.tiff_bomb(tmp_path / "one.tif", 20000, 20000, tissue_box=(0.1, 0.1, 0.14, 0.14))
    rc, err, rss = run("tiles", slide, "-o", tmp_path / "t.csv")
    assert rc == 0, err
    assert (tmp_path / "t-thumb.png").stat().st_size > 0
    assert rss < 700 * MB  # the whole level is 1.2 GB


def test_striped_tiff_over_opencv_limit_is_read_by_strips(tmp_path: Path) -> None:
    from prostate_fast.slide import TiffSlide, open_slide

    path = bombs.tiff_bomb(tmp_path / "s.tif", 40000, 30000, tile=None, rows_per_strip=16)
    rc, err, rss = run("info", path)
    assert rc == 0, err
    assert rss < 300 * MB
    with open_slide(path) as sl:
        assert isinstance(sl, TiffSlide) and sl.dimensions == (40000, 30000)
        assert (sl.read_region((39990, 29990), 0, (20, 20))[:10, :10] == 255).all()


def test_big_png_is_refused_from_its_header(tmp_path: Path) -> None:
    path = bombs.png_bomb(tmp_path / "big.png", 32768, 32768)
    assert path.stat().st_size < 4 * MB
    rc, err, rss = run("info", path)
    refused(rc, err, "big.png", "32768 x 32768", "decoded whole")
    assert rss < 300 * MB


def test_big_jpeg_gets_a_reduced_level_and_refuses_level_0(tmp_path: Path) -> None:
    from prostate_fast.slide import open_slide

    path = bombs.jpeg_bomb(tmp_path / "big.jpg", 17000, 17000)
    rc, err, rss = run("info", path)
    assert rc == 0, err
    assert rss < 700 * MB  # decoded whole: 1.2 GB
    with open_slide(path) as sl:
        assert sl.level_dimensions == ((17000, 17000), (8500, 8500))
        assert (sl.read_region((0, 0), 1, (8, 8)) == 128).all()
        with pytest.raises(SlideError, match="decoded whole"):
            sl.read_region((0, 0), 0, (8, 8))


def test_headers_give_sizes_without_decoding(tmp_path: Path) -> None:
    from prostate_fast.slide.headers import image_header

    png = bombs.png_bomb(tmp_path / "a.png", 300, 200, alpha=True, bits=16)
    h = image_header(png, "png")
    assert (h.width, h.height, h.channels, h.sample_bytes) == (300, 200, 4, 2)
    h = image_header(bombs.jpeg_bomb(tmp_path / "a.jpg", 301, 203), "jpeg")
    assert (h.width, h.height, h.channels) == (301, 203, 1)
    with pytest.raises(SlideError, match="damaged JPEG header"):
        image_header(png, "jpeg")


def test_segment_size_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from prostate_fast.slide import open_slide, tiff

    path = bombs.tiff_bomb(tmp_path / "s.tif", 1000, 800, tile=None, rows_per_strip=800)
    monkeypatch.setattr(tiff, "MAX_SEGMENT_BYTES", 1 << 20)
    with pytest.raises(SlideError, match="strips of 800 rows"):
        open_slide(path)


# -- labels -------------------------------------------------------------------------------------
@pytest.mark.parametrize("alpha", [False, True])
def test_painted_png_bomb_is_refused_before_decoding(
    tmp_path: Path, slide40k: Path, alpha: bool
) -> None:
    png = bombs.png_bomb(tmp_path / "p.png", 32768, 32768, alpha=alpha, bits=16 if alpha else 8)
    rc, err, rss = run("label", slide40k, "--painted", png, "-o", tmp_path / "l.csv")
    refused(rc, err, "painted copy", "p.png", "decoded whole")
    assert rss < 500 * MB
    assert not (tmp_path / "l.csv").exists()


def test_level0_label_mask_tiff_of_1_2_gigapixels_is_read_by_strips(
    tmp_path: Path, slide40k: Path
) -> None:
    mask = bombs.tiff_bomb(
        tmp_path / "m.tif", 40000, 30000, tile=None, rows_per_strip=64, grey=2, mpp=None
    )
    out = tmp_path / "l.npz"
    codes = "0=ignore,1=benign,2=cancer"
    rc, err, rss = run("label", slide40k, "--mask", mask, "--mask-codes", codes, "-o", out)
    assert rc == 0, err
    assert rss < 700 * MB
    from prostate_fast.label import load_label_table

    table = load_label_table(out)
    assert len(table.label) > 0 and (table.label == 1).all()


def test_label_mask_png_over_the_limit_is_refused(tmp_path: Path, slide40k: Path) -> None:
    mask = bombs.png_bomb(tmp_path / "m.png", 40000, 30000, colour=1)
    rc, err, rss = run("label", slide40k, "--mask", mask, "-o", tmp_path / "l.csv")
    refused(rc, err, "m.png", "label mask", "decoded whole")
    assert rss < 500 * MB


def test_tiff_mask_rows_equal_the_array(tmp_path: Path) -> None:
    import tifffile

    from prostate_fast.label.masks import _open_mask

    rng = np.random.default_rng(0)
    arr = rng.integers(0, 4, (300, 200), dtype=np.uint8)
    for kw in ({"rowsperstrip": 7}, {"tile": (64, 48)}):
        path = tmp_path / f"m{len(kw)}{list(kw)[0]}.tif"
        tifffile.imwrite(path, arr, compression="zlib", **kw)
        src = _open_mask(path)
        try:
            assert src.shape == (300, 200)
            np.testing.assert_array_equal(src.rows(5, 290), arr[5:290])
            assert src.codes().tolist() == [0, 1, 2, 3]
        finally:
            src.close()


def test_zigzag_polygon_is_labelled_or_refused_in_bounded_memory(
    tmp_path: Path, slide40k: Path
) -> None:
    small = bombs.polygon_bomb(tmp_path / "z20k.geojson", 40000, 30000, 20000)
    rc, err, rss = run("label", slide40k, "--geojson", small, "-o", tmp_path / "a.csv")
    assert rc == 0, err
    assert rss < 700 * MB
    big = bombs.polygon_bomb(tmp_path / "z200k.geojson", 40000, 30000, 200000)
    rc, err, rss = run("label", slide40k, "--geojson", big, "-o", tmp_path / "b.csv")
    refused(rc, err, "z200k.geojson", "cross the sample lines", "limit")
    assert rss < 500 * MB


def test_polygon_coverage_in_chunks_equals_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    from prostate_fast.label import polygons
    from prostate_fast.label.shapes import Polygon

    rng = np.random.default_rng(1)
    pos = [[Polygon("a", rng.uniform(0, 1000, (40, 2))) for _ in range(3)], []]
    hole = Polygon("b", rng.uniform(0, 1000, (9, 2)), (rng.uniform(200, 800, (5, 2)),))
    pos[1].append(hole)
    neg = [[Polygon(None, rng.uniform(0, 1000, (7, 2)), negative=True)], []]
    xy = np.stack(np.meshgrid(np.arange(0, 1000, 64), np.arange(0, 1000, 64)), -1).reshape(-1, 2)
    one = polygons.polygon_coverage(pos, neg, xy, 64, centres=True)
    monkeypatch.setattr(polygons, "_CHUNK_CROSSINGS", 5)
    many = polygons.polygon_coverage(pos, neg, xy, 64, centres=True)
    np.testing.assert_allclose(many[0], one[0], atol=1e-12)
    np.testing.assert_array_equal(many[1], one[1])
    assert one[0].max() > 0
    with pytest.raises(polygons.TooComplexError, match="limit 10"):
        polygons.polygon_coverage(pos, neg, xy, 64, max_crossings=10)


def test_annotation_counts_and_size_are_limited(tmp_path: Path) -> None:
    from prostate_fast.label.annotation import load_annotation

    xml = bombs.aperio_bomb(tmp_path / "r.xml", 150_000)
    with pytest.raises(AnnotationError, match="more than 100,000 polygons"):
        load_annotation(xml)
    huge = tmp_path / "huge.geojson"
    with open(huge, "wb") as fh:  # sparse: 65 MiB that occupy nothing
        fh.truncate(65 << 20)
    with pytest.raises(AnnotationError, match="over the limit of 64 MiB"):
        load_annotation(huge)
    ring = [[float(i % 2), float(i)] for i in range(1_000_010)]
    (tmp_path / "v.json").write_text(
        '{"type": "Polygon", "coordinates": [' + str(ring).replace(" ", "") + "]}"
    )
    with pytest.raises(AnnotationError, match="more than 1,000,000 vertices"):
        load_annotation(tmp_path / "v.json")


def test_aperio_xml_of_a_million_regions_is_refused(tmp_path: Path, slide40k: Path) -> None:
    xml = bombs.aperio_bomb(tmp_path / "r.xml", 1_000_000)
    rc, err, rss = run("label", slide40k, "--xml", xml, "-o", tmp_path / "l.csv")
    refused(rc, err, "r.xml", "over the limit")
    assert rss < 500 * MB


# -- label tables -------------------------------------------------------------------------------
def test_npz_zip_bomb_is_refused_before_decompressing(tmp_path: Path) -> None:
    npz = bombs.npz_bomb(tmp_path / "t.npz", 1.0)
    assert npz.stat().st_size < 2 * MB
    rc, err, rss = run("dataset", npz, "-o", tmp_path / "ds")
    refused(rc, err, "t.npz", "inflate", "limit")
    assert rss < 300 * MB


def test_npz_member_promising_more_than_it_holds_is_refused(tmp_path: Path) -> None:
    import io
    import zipfile

    from prostate_fast.label import load_label_table

    head = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        head, {"descr": "<f8", "fortran_order": False, "shape": (10**11,)}
    )
    with zipfile.ZipFile(tmp_path / "t.npz", "w") as z:
        z.writestr("coverage.npy", head.getvalue() + bytes(64))
    with pytest.raises(DatasetError, match="claims shape"):
        load_label_table(tmp_path / "t.npz")
