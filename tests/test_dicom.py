"""DICOM whole-slide images: conformant series through OpenSlide, the rest through pydicom."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pydicom")

from _dicom import JPEG_2000, slide_rgb, write_series, write_wsi  # noqa: E402

from prostate_fast.cli import main  # noqa: E402
from prostate_fast.errors import SlideError  # noqa: E402
from prostate_fast.slide import open_slide  # noqa: E402
from prostate_fast.slide.dicom import DicomSlide  # noqa: E402

RGB = slide_rgb()


def _whole(slide, level: int = 0) -> np.ndarray:
    return slide.read_region((0, 0), level, slide.level_dimensions[level]).astype(int)


@pytest.mark.parametrize(
    ("kw", "tol"),
    [
        ({}, 3.0),  # TILED_FULL, JPEG baseline YBR_FULL_422
        ({"sparse": True}, 3.0),  # TILED_SPARSE, frames in reverse order
        ({"syntax": JPEG_2000}, 0.0),  # lossless JPEG 2000
        ({"syntax": JPEG_2000, "sparse": True}, 0.0),
    ],
)
def test_conformant_file_opens_through_openslide(tmp_path: Path, kw: dict, tol: float) -> None:
    path = write_wsi(tmp_path / "s.dcm", RGB, **kw)
    with open_slide(path) as sl:
        assert type(sl).__name__ == "OpenSlideSlide" and sl.format == "dicom"
        assert sl.dimensions == (700, 520)
        assert sl.mpp == pytest.approx((0.5, 0.5))
        assert np.abs(_whole(sl) - RGB).mean() <= tol
        # the pydicom reader decodes the same file to the same bytes
        with DicomSlide(path) as fb:
            assert np.array_equal(_whole(fb), _whole(sl))


def test_multi_level_folder_opens_as_one_slide(tmp_path: Path) -> None:
    folder = write_series(tmp_path / "series", RGB, levels=3)
    with open_slide(folder) as sl:
        assert sl.path == folder and sl.name == "series"
        assert sl.level_dimensions == ((700, 520), (350, 260), (175, 130))
        with DicomSlide(folder / "level2.dcm") as fb:  # any instance finds its series
            assert fb.level_dimensions == sl.level_dimensions
            for level in range(3):
                assert np.array_equal(_whole(fb, level), _whole(sl, level))


def test_non_conformant_file_opens_through_pydicom(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Like a real TCGA file: column-major frames, no ImageType/PixelSpacing/organisation type,
    RGB claimed while the JPEG codestreams are JFIF (YCbCr)."""
    path = write_wsi(tmp_path / "tcga.dcm", RGB, tile=200, conformant=False, mpp=0.25)
    with open_slide(path) as sl:
        assert isinstance(sl, DicomSlide)
        assert sl.dimensions == (700, 520)
        assert np.abs(_whole(sl) - RGB).mean() < 3.0  # positions and colours right
        assert sl.mpp == pytest.approx((0.25, 0.25))
        assert sl.mpp_source == "DICOM ImagedVolumeWidth/Height"
        assert sl.read_region((300, 250), 0, (64, 64)).shape == (64, 64, 3)
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "OpenSlide refused it (Couldn't get image flavor); read with pydicom" in out
    assert "frames stored column by column" in out
    assert "no PixelSpacing" in out


def test_frames_in_several_fragments_found_by_offset_table(tmp_path: Path) -> None:
    path = write_wsi(tmp_path / "f.dcm", RGB, tile=200, conformant=False, fragments=3)
    with open_slide(path) as sl:
        assert isinstance(sl, DicomSlide)
        assert np.abs(_whole(sl) - RGB).mean() < 3.0


def test_non_conformant_row_major_stays_row_major(tmp_path: Path) -> None:
    path = write_wsi(tmp_path / "r.dcm", RGB, tile=200, conformant=False)
    # rewrite as row-major without organisation type: the seam test must keep row-major
    import pydicom

    ds = pydicom.dcmread(write_wsi(tmp_path / "full.dcm", RGB, tile=200))
    for key in ("ImageType", "DimensionOrganizationType", "SharedFunctionalGroupsSequence"):
        del ds[key]
    ds.save_as(path)
    with open_slide(path) as sl:
        assert isinstance(sl, DicomSlide)
        assert not any("column" in n for n in sl.notes)
        assert np.abs(_whole(sl) - RGB).mean() < 3.0


def test_dicom_errors_name_the_path(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SlideError, match="empty: is a directory, not a slide file"):
        open_slide(empty)
    two = tmp_path / "two"
    two.mkdir()
    write_wsi(two / "a.dcm", RGB)
    write_wsi(two / "b.dcm", RGB)
    with pytest.raises(SlideError, match="two: holds 2 DICOM series"):
        open_slide(two)
    bad = tmp_path / "cut.dcm"
    bad.write_bytes(write_wsi(tmp_path / "x.dcm", RGB, conformant=False).read_bytes()[:-2000])
    with pytest.raises(SlideError, match="cut.dcm"):
        open_slide(bad)


def test_real_dicom_opens_and_tiles(data_dir: Path, tmp_path: Path) -> None:
    path = data_dir / "wsi" / "camelyon-multiframe.dcm"
    if not path.exists():
        pytest.skip("camelyon-multiframe.dcm not in PROSTATE_FAST_DATA")
    with open_slide(path) as sl, DicomSlide(path) as fb:
        assert sl.dimensions == fb.dimensions == (1152, 700)
        assert np.array_equal(_whole(sl), _whole(fb))
        assert fb.mpp == pytest.approx(sl.mpp, rel=1e-4)
    out = tmp_path / "t.npz"
    assert main(["tiles", str(path), "--level", "0", "-o", str(out)]) == 0
    assert len(np.load(out)["l0_x"]) > 0


def test_column_major_order_found_on_real_tissue(data_dir: Path, tmp_path: Path) -> None:
    """The seam test on real H&E (a TCGA-sized frame grid: 7 x 6 frames, partial edge frames)."""
    import cv2

    src = data_dir / "tiles" / "stain" / "tiatoolbox_target_image.png"
    if not src.exists():
        pytest.skip("tiatoolbox_target_image.png not in PROSTATE_FAST_DATA")
    rgb = cv2.cvtColor(cv2.imread(str(src)), cv2.COLOR_BGR2RGB)[:850, :980]
    path = write_wsi(tmp_path / "he.dcm", rgb, tile=150, conformant=False)
    with open_slide(path) as sl:
        assert any("column by column" in n for n in sl.notes)
        assert np.abs(_whole(sl) - rgb).mean() < 4.0
