"""Confident wrong answers refused (issue 13): a wrong input gets a line and exit 2, not a score.

* a model records the stain domain of its training tissue; a fluorescence slide is refused by
  ``predict`` and becomes ``needs manual read`` in a worklist, while real H&E from other labs
  (``PROSTATE_FAST_DATA``) passes as in domain for a model of synthetic H&E;
* every number of ``model.json`` is checked (``Infinity``, ``NaN``, out of range);
* ``--level`` at another scale than the model's is refused;
* a painted copy in a colour no class has is refused, a shifted one warned about;
* a label table whose tiles lie off its slide, or whose slide is another one, is refused;
* a batch manifest whose score was edited is not trusted.
"""

from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

from prostate_fast.cli.main import main
from prostate_fast.errors import AnnotationError, DatasetError, ModelError
from prostate_fast.model.domain import StainDomain, domain_problem, measure_domain

pytest.importorskip("mxnet")

STAIN_HE = (
    "tiatoolbox_target_image.png",
    "stardist_histo.jpg",
    "torchstain_source.png",
    "torchstain_target.png",
)


def _tiles(rgb: np.ndarray, size: int = 64) -> np.ndarray:
    h, w = rgb.shape[:2]
    cells = [
        rgb[y : y + size, x : x + size]
        for y in range(0, h - size + 1, size)
        for x in range(0, w - size + 1, size)
    ]
    return np.stack(cells)


def _slide_tiles(path: Path, **scale: object) -> tuple[np.ndarray, bool]:
    from prostate_fast.slide import open_slide
    from prostate_fast.tile import build_grid, read_tiles
    from prostate_fast.tissue import detect_tissue

    with open_slide(path) as s, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tissue = detect_tissue(s)
        grid = build_grid(s, tissue, tile_size=64, **(scale or {"magnification": 20}))
        idx = np.linspace(0, len(grid) - 1, min(len(grid), 64)).astype(np.int64)
        return read_tiles(s, grid, idx), tissue.background == "dark"


@pytest.fixture(scope="module")
def domain(synthetic_small) -> StainDomain:
    """The domain of a model trained on the synthetic H&E slide."""
    tiles, _ = _slide_tiles(synthetic_small.slide)
    found = measure_domain(tiles)
    assert found is not None and found.brightfield
    return found


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, domain: StainDomain) -> dict[str, Path]:
    from _tiny_model import make_model

    root = tmp_path_factory.mktemp("domain_models")
    return {
        "new": make_model(root / "new", tile_size=64, domain=domain),
        "old": make_model(root / "old", tile_size=64),  # written as before: no domain
    }


def _err(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return capsys.readouterr().err.strip().splitlines()


# -- the domain -----------------------------------------------------------------------------------
def test_real_h_and_e_is_in_the_domain_of_synthetic_h_and_e(domain, data_dir: Path) -> None:
    for name in ("CMU-1-Small-Region.svs", "tcga-cr-7395-01a-01-ts1.svs"):
        tiles, dark = _slide_tiles(data_dir / "wsi" / name, level=0)
        assert not dark and domain_problem(domain, tiles) is None, name
    for name in STAIN_HE:
        rgb = cv2.imread(str(data_dir / "tiles" / "stain" / name), cv2.IMREAD_COLOR)[..., ::-1]
        assert domain_problem(domain, _tiles(np.ascontiguousarray(rgb))) is None, name
    for path in sorted((data_dir / "tiles" / "tissue_vs_background").glob("tissue-*.png")):
        rgb = cv2.imread(str(path), cv2.IMREAD_COLOR)[..., ::-1]
        assert domain_problem(domain, _tiles(np.ascontiguousarray(rgb))) is None, path.name


def test_fluorescence_is_outside_the_domain(domain, data_dir: Path) -> None:
    tiles, dark = _slide_tiles(data_dir / "wsi" / "test3-DAPI-2-387.ndpi")
    assert dark
    assert "fluorescence" in domain_problem(domain, tiles, dark_background=dark)
    # even without the tissue detection's verdict: the tiles are dark, the stain far too dense
    assert "dark tiles" in domain_problem(domain, tiles)
    inverted = 255 - tiles  # a bright image of another colour: stain direction
    assert "stain colour" in domain_problem(domain, inverted)


def test_domain_round_trips_through_model_json(models, domain) -> None:
    from prostate_fast.model import read_model_info

    info = read_model_info(models["new"])
    assert info.domain is not None
    assert info.domain.od_direction == pytest.approx(domain.od_direction, abs=1e-5)
    assert read_model_info(models["old"]).domain is None  # an older model still loads


def test_predict_refuses_a_fluorescence_slide(models, data_dir, tmp_path, capsys) -> None:
    from prostate_fast.model.domain import OutOfDomainError
    from prostate_fast.predict import predict_slide

    dapi = data_dir / "wsi" / "test3-DAPI-2-387.ndpi"
    out = tmp_path / "dapi"
    assert main(["predict", str(models["new"]), str(dapi), "-o", str(out)]) == 2
    err = _err(capsys)
    assert len(err) == 1 and "DAPI" in err[0] and "outside the model's training domain" in err[0]
    assert not list(tmp_path.iterdir())  # nothing written
    with pytest.raises(OutOfDomainError, match="fluorescence"):
        predict_slide(models["new"], dapi, engine="native")
    args = ["predict", str(models["new"]), str(dapi), "-o", str(out), "--ignore-domain"]
    assert main(args) == 0 and (tmp_path / "dapi.npz").is_file()
    # an H&E slide from another lab is scored
    cmu = data_dir / "wsi" / "CMU-1-Small-Region.svs"
    assert main(["predict", str(models["new"]), str(cmu), "-o", str(tmp_path / "cmu")]) == 0


def test_old_model_skips_the_check_and_says_so_once(models, synthetic_small) -> None:
    from prostate_fast.predict import load_model, predict_slide

    with (
        load_model(models["old"], engine="native") as pred,
        warnings.catch_warnings(record=True) as caught,
    ):
        warnings.simplefilter("always")
        for _ in range(2):
            predict_slide(pred, synthetic_small.slide)
    said = [w for w in caught if "records no training domain" in str(w.message)]
    assert len(said) == 1


def test_screen_lists_a_fluorescence_slide_for_a_manual_read(
    models, data_dir, synthetic_small, tmp_path
) -> None:
    from prostate_fast.screen import ScreeningOptions, screen_slides

    dapi = data_dir / "wsi" / "test3-DAPI-2-387.ndpi"
    rows = screen_slides(
        models["new"], [synthetic_small.slide, dapi], tmp_path, ScreeningOptions(engine="native")
    )
    first, second = rows
    assert first.slide == dapi.name and first.rank == 1
    assert first.status.startswith("needs manual read: dark background")
    assert first.score == 0 and first.n_tiles == 0 and not first.overlay
    assert second.status == "ok"
    with open(tmp_path / "worklist.csv") as fh:
        assert next(csv.DictReader(fh))["status"].startswith("needs manual read")


# -- model.json numbers ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda t: t.replace('"scale": 0.00392156862745098', '"scale": Infinity'), "Infinity"),
        (lambda t: t.replace('"scale": 0.00392156862745098', '"scale": NaN'), "NaN"),
        (lambda t: t.replace('"scale": 0.00392156862745098', '"scale": 1e400'), "1e400"),
        (lambda t: t.replace('"scale": 0.00392156862745098', '"scale": 1000'), "'scale'"),
        (lambda t: t.replace('"tile_size": 64', '"tile_size": 1000000000'), "'tile_size'"),
        (lambda t: t.replace('"mpp": 0.5', '"mpp": -0.5'), "'mpp'"),
        (lambda t: t.replace('"downsample": 1.0', '"downsample": 0'), "'downsample'"),
        (lambda t: t.replace('"od_density": ', '"od_density": -1, "x": '), "od_density"),
        (lambda t: t.replace('"brightfield": true', '"brightfield": 1'), "brightfield"),
    ],
)
def test_every_number_of_model_json_is_checked(models, tmp_path, edit, match, capsys) -> None:
    import shutil

    from prostate_fast.model import read_model_info

    m = tmp_path / "m"
    shutil.copytree(models["new"], m)
    text = (m / "model.json").read_text()
    edited = edit(text)
    assert edited != text
    (m / "model.json").write_text(edited)
    with pytest.raises(ModelError, match=match):
        read_model_info(m)
    slide = tmp_path / "any.tif"
    assert main(["predict", str(m), str(slide), "-o", str(tmp_path / "p")]) == 2
    err = _err(capsys)
    assert len(err) == 1 and "model.json" in err[0]


# -- scale ----------------------------------------------------------------------------------------
def test_level_at_another_scale_is_refused(models, tmp_path, capsys) -> None:
    from prostate_fast.synthetic import make_synthetic

    ten = make_synthetic(
        tmp_path / "s",
        name="ten",
        width=2048,
        height=1024,
        seed=5,
        n_cores=1,
        mpp=1.0,
        objective_power=10.0,
    )
    base = ["predict", str(models["old"]), str(ten.slide), "--engine", "native"]
    assert main([*base, "-o", str(tmp_path / "a"), "--level", "0"]) == 2
    err = _err(capsys)
    assert len(err) == 1 and "ten.tif: level 0 is 1 µm/px but the model" in err[0]
    assert not (tmp_path / "a.npz").exists()
    assert main([*base, "-o", str(tmp_path / "b"), "--level", "0", "--ignore-scale"]) == 0


def test_level_of_a_slide_without_scale_is_unverified(models, synthetic_small, tmp_path, capsys):
    from prostate_fast.slide import open_slide

    with open_slide(synthetic_small.slide) as s:
        rgb = s.read_region((0, 0), s.level_count - 1, s.level_dimensions[-1])
    png = tmp_path / "plain.png"
    cv2.imwrite(str(png), rgb[..., ::-1])
    args = ["predict", str(models["old"]), str(png), "-o", str(tmp_path / "p"), "--level", "0"]
    assert main([*args, "--engine", "native"]) in (0, 2)  # 2: no tissue at that size is fine
    assert "scale is unverified" in capsys.readouterr().err


# -- painted copies -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def painted(synthetic_small, tmp_path_factory) -> dict[str, Path]:
    """The synthetic slide's painted copy repainted blue and yellow, and shifted by 64 px."""
    from prostate_fast.slide import open_slide

    with open_slide(synthetic_small.painted) as p:
        arr = p.read_region((0, 0), 0, p.dimensions)
    green = (arr[..., 1] > 200) & (arr[..., 0] < 60) & (arr[..., 2] < 60)
    assert green.any()
    out = tmp_path_factory.mktemp("painted")
    copies = {}
    for name, colour in (("blue", (0, 0, 255)), ("yellow", (255, 255, 0))):
        c = arr.copy()
        c[green] = colour
        copies[name] = c
    shifted = np.full_like(arr, 240)
    shifted[:, 64:] = arr[:, :-64]
    copies["shifted"] = shifted
    for name, c in copies.items():
        cv2.imwrite(str(out / f"{name}.png"), c[..., ::-1])
    return {name: out / f"{name}.png" for name in copies}


@pytest.mark.parametrize("colour, rgb", [("blue", "0,0,255"), ("yellow", "255,255,0")])
def test_painting_in_a_colour_no_class_has_is_refused(
    synthetic_small, painted, tmp_path, capsys, colour, rgb
) -> None:
    from prostate_fast.label import label_tiles
    from prostate_fast.slide import open_slide
    from prostate_fast.tile import build_grid

    with open_slide(synthetic_small.slide) as s:
        grid = build_grid(s, tile_size=128, magnification=20)
        with pytest.raises(AnnotationError, match=rf"painted in {colour} .*no class"):
            label_tiles(s, painted[colour], grid)
    out = tmp_path / "t.csv"
    base = ["label", str(synthetic_small.slide), "--painted", str(painted[colour]), "-o", str(out)]
    assert main(base) == 2
    err = _err(capsys)
    assert len(err) == 1 and f"{colour}.png: painted in {colour}" in err[0]
    assert not out.exists()
    assert main([*base, "--classes", f"cancer={rgb}"]) == 0
    assert "cancer" in capsys.readouterr().out


def test_shifted_painting_is_warned_about(synthetic_small, painted, tmp_path, capsys) -> None:
    out = tmp_path / "t.csv"
    args = ["label", str(synthetic_small.slide), "--painted", str(painted["shifted"]), "-o"]
    assert main([*args, str(out)]) == 0
    err = capsys.readouterr().err
    assert "prostate-fast: warning:" in err and "painted copy is shifted by about (+6" in err
    assert main([*args, str(tmp_path / "u.csv"), "--painted", str(synthetic_small.painted)]) == 0
    assert "shifted" not in capsys.readouterr().err  # the true copy registers


# -- label tables at dataset time -------------------------------------------------------------------
@pytest.fixture(scope="module")
def table(synthetic_small, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tables") / "syn.csv"
    args = ["label", str(synthetic_small.slide), "--geojson", str(synthetic_small.geojson)]
    assert main([*args, "-o", str(out), "--tile-size", "64"]) == 0
    return out


def _edit_csv(src: Path, dst: Path, meta_edit=None, row_edit=None) -> Path:
    head, _, body = src.read_text().partition("\n")
    magic = "# prostate-fast label table v1 "
    meta = json.loads(head[len(magic) :])
    if meta_edit:
        meta_edit(meta)
    lines = body.splitlines()
    if row_edit:
        cells = lines[1].split(",")
        row_edit(cells)
        lines[1] = ",".join(cells)
    dst.write_text(magic + json.dumps(meta) + "\n" + "\n".join(lines) + "\n")
    return dst


def _old(meta: dict) -> None:
    meta.pop("slide_dimensions")
    meta.pop("slide_fingerprint")


@pytest.mark.parametrize(
    "name, meta_edit, row_edit, match",
    [
        ("far", None, lambda c: c.__setitem__(2, "-1e12"), r"lie outside its 4096 x 2048"),
        ("far-old", _old, lambda c: c.__setitem__(3, "1e12"), r"lie outside its 4096 x 2048"),
        ("nan", None, lambda c: c.__setitem__(2, "nan"), "finite integers"),
        ("other", "other", None, "another slide"),
        ("other-size", "other-size", None, "another slide"),
    ],
)
def test_dataset_refuses_tables_off_their_slide(
    table, synthetic_small, tmp_path, capsys, name, meta_edit, row_edit, match
) -> None:
    from prostate_fast.synthetic import make_synthetic

    if meta_edit in ("other", "other-size"):
        w = 4096 if meta_edit == "other" else 2048
        other = make_synthetic(
            tmp_path / "o", name="other", width=w, height=2048, seed=99, n_cores=3
        )
        meta_edit = lambda m: m.__setitem__("slide_path", str(other.slide))  # noqa: E731
    edited = _edit_csv(table, tmp_path / f"{name}.csv", meta_edit, row_edit)
    out = tmp_path / "ds"
    assert main(["dataset", str(edited), "-o", str(out)]) == 2
    err = _err(capsys)
    assert len(err) == 1 and name in err[0]
    import re

    assert re.search(match, err[0]), err[0]
    assert not out.exists()


def test_table_records_its_slide(table, synthetic_small) -> None:
    from prostate_fast.label import load_label_table
    from prostate_fast.label.table import check_table_slide
    from prostate_fast.slide import open_slide

    t = load_label_table(table)
    assert t.slide_dimensions == (4096, 2048) and len(t.slide_fingerprint) == 2048
    with open_slide(synthetic_small.slide) as s:
        check_table_slide(t, s, str(table))  # the right slide passes
    moved = type(t)(**{**t.__dict__, "l0_xy": t.l0_xy - 10**12})
    with open_slide(synthetic_small.slide) as s, pytest.raises(DatasetError, match="outside"):
        check_table_slide(moved, s, str(table))
