"""Stain normalisation (Macenko, against torchstain's NumPy reference) and colour augmentation:
fitted once per slide, carried from the dataset to model.json, applied by prediction."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from _tiny_model import make_model

from prostate_fast import stain
from prostate_fast.errors import DatasetError, ModelError
from prostate_fast.model import read_model_info, write_model_json
from prostate_fast.stain import (
    StainFit,
    augment_colour,
    fit_macenko,
    reference_target,
    stain_transform,
)

TILE = 64


def he_image(seed: int, h_od: float = 1.0, e_od: float = 0.6, size: int = 96) -> np.ndarray:
    """An H&E-like uint8 image: per pixel a mix of two stains on glass (Beer-Lambert)."""
    rng = np.random.default_rng(seed)
    h_vec = np.array([0.65, 0.70, 0.29])
    e_vec = np.array([0.07, 0.99, 0.11])
    ch = rng.gamma(2.0, 0.35, (size, size)) * h_od
    ce = rng.gamma(2.0, 0.4, (size, size)) * e_od
    od = ch[..., None] * h_vec + ce[..., None] * e_vec
    rgb = 250.0 * np.exp(-od) + rng.normal(0, 2, (size, size, 3))
    return np.clip(rgb, 0, 255).astype(np.uint8)


# -- the method against the reference ---------------------------------------------------------------
def test_fit_and_normalise_equal_torchstain() -> None:
    ref_mod = pytest.importorskip("torchstain.numpy.normalizers")
    target_img, img = he_image(1), he_image(2, h_od=1.6, e_od=0.4)
    ref = ref_mod.NumpyMacenkoNormalizer()
    ref.fit(target_img)
    target = fit_macenko(target_img)
    assert target is not None
    np.testing.assert_allclose(target.stain_matrix, ref.HERef, atol=1e-9)
    np.testing.assert_allclose(target.max_conc, ref.maxCRef, atol=1e-9)
    expected, _, _ = ref.normalize(img, stains=False)
    got = stain_transform(fit_macenko(img), target)(img)
    diff = np.abs(got.astype(int) - expected.astype(int))
    assert diff.max() <= 1  # float32 kernel, truncation as the reference
    assert (diff == 0).mean() > 0.95


def test_haematoxylin_told_from_eosin_when_their_red_ods_are_close() -> None:
    """A bluish haematoxylin and a reddish eosin (a real lab's look, and synthetic lab "B"): the
    reference's rule (haematoxylin: the larger red OD) swaps them; ours (the larger red minus
    blue OD) does not."""
    rng = np.random.default_rng(3)
    h, e = np.array([0.449, 0.856, 0.256]), np.array([0.469, 0.72, 0.512])
    h, e = h / np.linalg.norm(h), e / np.linalg.norm(e)
    od = rng.gamma(2.0, 0.35, (96, 96, 1)) * h + rng.gamma(2.0, 0.24, (96, 96, 1)) * e
    img = np.clip(250.0 * np.exp(-od) + rng.normal(0, 2, od.shape), 0, 255).astype(np.uint8)
    fit = fit_macenko(img)
    assert fit is not None and fit.stain_matrix[0, 0] < fit.stain_matrix[0, 1]  # red OD: E > H
    np.testing.assert_allclose(fit.stain_matrix.T, [h, e], atol=0.05)


def test_glass_light_is_the_slides_own() -> None:
    """The same stained tissue under a dimmer, tinted light (another scanner's glass): read
    against each slide's glass, both normalise to the same pixels; read against the fixed
    ``Io`` of the reference, the dimmer one stays dimmer."""
    rng = np.random.default_rng(11)
    od = rng.gamma(2.0, 0.35, (96, 96, 1)) * np.array([0.65, 0.70, 0.29])
    od = od + rng.gamma(2.0, 0.24, (96, 96, 1)) * np.array([0.07, 0.99, 0.11])
    bright, dim = np.array([244.0, 244.0, 244.0]), np.array([226.0, 233.0, 236.0])
    a, b = (np.clip(g * np.exp(-od) - 1.0, 0, 255).round().astype(np.uint8) for g in (bright, dim))
    target = fit_macenko(a, io=bright)
    same = stain_transform(fit_macenko(b, io=dim), target)(b).astype(int)
    fixed = stain_transform(fit_macenko(b), fit_macenko(a))(b).astype(int)
    own = stain_transform(target, target)(a).astype(int)
    assert np.abs(same - own).mean() < 1.0
    assert np.abs(fixed - own).mean() > 2 * np.abs(same - own).mean() + 2.0
    # "glass" normalises the light only: the dimmer slide comes back to the bright one's
    # pixels, and a slide already under the target's light is left exactly as it is
    glass = reference_target([target], "glass")
    assert glass.method == "glass"
    back = stain_transform(fit_macenko(b, io=dim), glass)(b).astype(int)
    assert np.abs(back - a).mean() < 0.6 and np.abs(back - a).max() <= 2
    np.testing.assert_array_equal(stain_transform(target, glass)(a), a)
    # glass too scarce or too dark for bright field: the reference's fixed light
    px = np.full((1000, 3), 238, np.uint8)
    assert stain.glass_light(px, 1000).tolist() == [238.0] * 3
    assert stain.glass_light(px[:10], 1000).tolist() == [stain.IO] * 3
    assert stain.glass_light(px // 4, 1000).tolist() == [stain.IO] * 3
    # a scanner's white fill of unscanned area and black ink are not glass
    fill = np.concatenate(
        [px[:300], np.full((600, 3), 255, np.uint8), np.zeros((100, 3), np.uint8)]
    )
    assert stain.glass_light(fill, 1000).tolist() == [238.0] * 3


@pytest.mark.parametrize("n", [2000, 2001, 5000, 5001])
@pytest.mark.parametrize("counts", ["opencv", "numpy"])
def test_glass_light_is_numpys_median_of_the_glass_pixels(n, counts, monkeypatch) -> None:
    if counts == "numpy":  # the path of images past OpenCV's exact float32 counts
        monkeypatch.setattr(stain, "HIST_EXACT", 100)
    rng = np.random.default_rng(n)
    px = rng.integers(190, 256, (n, 3)).astype(np.uint8)
    keep = ((px >= stain.GLASS_MIN) & (px < 255)).all(axis=1)
    want = np.median(px[keep], axis=0)
    np.testing.assert_array_equal(stain.glass_light(px.reshape(-1, 1, 3), n // 3), want)
    img, where = px.reshape(-1, 1, 3), rng.random((n, 1)) < 0.7
    np.testing.assert_array_equal(
        stain.glass_light(img, n // 3, where=where), stain.glass_light(img[where], n // 3)
    )
    halves = np.repeat(np.array([[200, 210, 220], [203, 211, 250]], np.uint8), 100, axis=0)
    assert stain.glass_light(halves, 200).tolist() == [201.5, 210.5, 235.0]


def test_transform_maps_a_slide_to_the_target_stains() -> None:
    a, b = he_image(3), he_image(4, h_od=1.7, e_od=0.3)
    fa, fb = fit_macenko(a), fit_macenko(b)
    mapped = fit_macenko(stain_transform(fb, fa)(b))
    np.testing.assert_allclose(mapped.stain_matrix, fa.stain_matrix, atol=0.05)
    np.testing.assert_allclose(mapped.max_conc, fa.max_conc, rtol=0.05)
    # tiles of any leading shape, uint8 in and out; bad input named
    tiles = np.stack([b[:32, :32], b[32:64, :32]])
    out = stain_transform(fb, fa)(tiles)
    assert out.dtype == np.uint8 and out.shape == tiles.shape
    with pytest.raises(ValueError, match="uint8"):
        stain_transform(fb, fa)(tiles.astype(np.float32))


def test_fit_needs_stained_pixels_and_target_is_a_median() -> None:
    assert fit_macenko(np.full((50, 50, 3), 245, np.uint8)) is None  # glass only
    with pytest.raises(ValueError, match="uint8"):
        fit_macenko(np.zeros((4, 4), np.uint8))
    fits = [fit_macenko(he_image(s)) for s in (5, 6, 7)]
    target = reference_target([*fits, None])
    np.testing.assert_allclose(np.linalg.norm(target.stain_matrix, axis=0), 1.0)
    assert target.max_conc[0] == pytest.approx(np.median([f.max_conc[0] for f in fits]))
    assert reference_target([None]) is None


def test_json_round_trip_and_bad_records() -> None:
    fit = fit_macenko(he_image(8))
    back = StainFit.from_json(json.loads(json.dumps(fit.to_json())), "x.json")
    np.testing.assert_allclose(back.stain_matrix, fit.stain_matrix, atol=1e-8)
    glass = fit_macenko(he_image(8), io=[231.0, 235.0, 236.0])
    back = StainFit.from_json(json.loads(json.dumps(glass.to_json())), "x.json")
    assert back.io.tolist() == [231.0, 235.0, 236.0]
    old = StainFit.from_json({**fit.to_json(), "io": 240}, "x.json")  # written before glass
    assert old.io.tolist() == [240.0] * 3
    for bad in (
        [1, 2],
        {**fit.to_json(), "method": "reinhard"},
        {**fit.to_json(), "max_conc": [1.0, -1.0]},
        {**fit.to_json(), "stain_matrix": [[1, 0], [0, 1]]},
        {**fit.to_json(), "io": 0},
        {**fit.to_json(), "io": [240, 240]},
        {**fit.to_json(), "io": "bright"},
    ):
        with pytest.raises(ValueError, match="x.json: bad 'stain' record"):
            StainFit.from_json(bad, "x.json")


# -- model.json -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The same untrained model, without and with a stain target."""
    root = tmp_path_factory.mktemp("models")
    plain = make_model(root / "plain", tile_size=TILE)
    normed = root / "stain"
    shutil.copytree(plain, normed)
    meta = read_model_info(normed).meta
    write_model_json(normed, {**meta, "stain": fit_macenko(he_image(9)).to_json()})
    return plain, normed


def test_model_json_stores_and_reads_the_target(models) -> None:
    plain, normed = models
    assert read_model_info(plain).stain is None
    info = read_model_info(normed)
    assert isinstance(info.stain, StainFit)
    meta = dict(info.meta)
    meta["stain"] = {**meta["stain"], "max_conc": [0, 1]}
    bad = normed.parent / "bad"
    bad.mkdir()
    for f in ("model-symbol.json", info.params_file.name):
        shutil.copy(normed / f, bad / f)
    write_model_json(bad, meta)
    with pytest.raises(ModelError, match=r"model\.json: bad 'stain' record"):
        read_model_info(bad)


def test_write_model_records_the_stain(tmp_path: Path) -> None:
    from prostate_fast._mx import import_mxnet
    from prostate_fast.model import build_network, network_spec, write_model

    mx = import_mxnet()
    net = build_network("study", 2, tile_size=32)
    net.initialize(mx.init.Xavier())
    target = fit_macenko(he_image(10))
    write_model(
        tmp_path,
        net,
        epoch=1,
        classes=("benign", "cancer"),
        colours={},
        tile_size=32,
        scale=1 / 255,
        magnification=20.0,
        mpp=0.5,
        downsample=1.0,
        threshold={},
        architecture=network_spec("study", 2, 32),
        training={},
        stain=target,
    )
    got = read_model_info(tmp_path).stain
    np.testing.assert_allclose(got.stain_matrix, target.stain_matrix, atol=1e-8)


# -- prediction -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def slide_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from prostate_fast.synthetic import make_synthetic

    return make_synthetic(tmp_path_factory.mktemp("slide"), width=2048, height=1024, seed=3).slide


def _counting(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    real = stain.fit_slide

    def fit_slide(slide, tissue):
        calls.append(slide.name)
        return real(slide, tissue)

    monkeypatch.setattr(stain, "fit_slide", fit_slide)
    return calls


def test_predict_fits_once_per_slide_and_normalises(models, slide_path, monkeypatch) -> None:
    from prostate_fast.predict import predict_slide

    plain, normed = models
    calls = _counting(monkeypatch)
    before = predict_slide(plain, slide_path, batch_size=16, n_threads=1)
    assert calls == []  # a model without a target never fits
    grid = predict_slide(normed, slide_path, batch_size=16, n_threads=1)
    assert len(calls) == 1 and len(grid.prob) > 16  # once per slide, not per batch
    assert not np.array_equal(grid.prob, before.prob)
    monkeypatch.setattr(stain, "fit_slide", lambda *a: pytest.fail("fitted"))
    again = predict_slide(plain, slide_path, batch_size=16, n_threads=1)
    np.testing.assert_array_equal(again.prob, before.prob)  # exactly as before


def test_predict_applies_the_slide_transform(models, slide_path) -> None:
    """The scores are the network's on the tiles mapped by the slide's own fit."""
    from prostate_fast.predict import load_model, predict_slide
    from prostate_fast.slide import open_slide
    from prostate_fast.tile import build_grid, read_tiles
    from prostate_fast.tissue import detect_tissue

    _, normed = models
    info = read_model_info(normed)
    with open_slide(slide_path) as sl, load_model(normed, n_threads=1) as pred:
        tissue = detect_tissue(sl, n_threads=1)
        grid = build_grid(sl, tissue, magnification=20.0, tile_size=TILE)
        full = np.flatnonzero(grid.tissue_fraction >= 1.0)[:20]
        tiles = read_tiles(sl, grid, full)
        norm = stain_transform(stain.fit_slide(sl, tissue), info.stain)
        want = pred.predict_batch(norm(tiles))
        got = predict_slide(pred, sl, tissue=tissue)
    np.testing.assert_allclose(got.prob[full], want, atol=1e-5)


# -- dataset ----------------------------------------------------------------------------------------
def test_dataset_normalises_per_slide_and_records_the_target(tmp_path, monkeypatch) -> None:
    from prostate_fast.dataset import build_dataset, load_dataset_info, read_records
    from prostate_fast.label import label_tiles
    from prostate_fast.slide import open_slide
    from prostate_fast.synthetic import make_synthetic
    from prostate_fast.tile import full_grid

    tables = []
    for i in range(3):
        made = make_synthetic(tmp_path, name=f"s{i}", width=2048, height=1024, seed=10 + i)
        with open_slide(made.slide) as sl:
            grid = full_grid(sl, sl.choose_level(magnification=20.0), 128)
            tables.append(label_tiles(sl, made.mask, grid, n_threads=1))
    kw = {"balance": "all", "fractions": (0.67, 0.33), "n_threads": 1, "seed": 1}
    plain = build_dataset(tables, tmp_path / "plain", stain_normalise=None, **kw).path
    default = load_dataset_info(build_dataset(tables, tmp_path / "default", **kw).path)
    assert default.stain.method == "glass"  # the default: each slide's glass light
    calls = _counting(monkeypatch)
    normed = build_dataset(tables, tmp_path / "normed", stain_normalise="macenko", **kw).path
    assert len(calls) == 3  # once per slide
    info = load_dataset_info(normed)
    assert isinstance(info.stain, StainFit) and load_dataset_info(plain).stain is None
    assert np.all(info.stain.io >= 242)  # the synthetic glass (about 245), not the fixed 240
    meta = json.loads((normed / "dataset.json").read_text())
    assert meta["settings"]["stain_normalise"] == "macenko"
    assert set(meta["stain"]["slides"]) == {t.slide_name for t in tables}
    a = next(read_records(plain, "train", [0]))[1]
    b = next(read_records(normed, "train", [0]))[1]
    assert a.shape == b.shape and not np.array_equal(a, b)
    with pytest.raises(ValueError, match="stain_normalise"):
        build_dataset(tables, tmp_path / "x", stain_normalise="reinhard", **kw)
    meta["stain"]["max_conc"] = [1.0]
    (normed / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(DatasetError, match=r"dataset\.json: bad 'stain' record"):
        load_dataset_info(normed)


# -- colour augmentation ----------------------------------------------------------------------------
def test_augment_colour_is_seeded_and_stays_in_uint8_range() -> None:
    x = np.stack([he_image(s, size=32) for s in range(6)]).transpose(0, 3, 1, 2).astype(np.float32)
    a = augment_colour(x.copy(), np.random.default_rng(7))
    b = augment_colour(x.copy(), np.random.default_rng(7))
    c = augment_colour(x.copy(), np.random.default_rng(8))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c) and not np.array_equal(a, x)
    assert a.min() >= 0 and a.max() <= 255 and np.array_equal(a, np.rint(a))
    assert np.abs(a - x).mean() < 25  # a jitter, not a new image
    same = augment_colour(x.copy(), np.random.default_rng(7), hed=0, brightness=0, contrast=0)
    np.testing.assert_array_equal(same, x)  # zero strength: the batch as it was
    with pytest.raises(ValueError, match="float32"):
        augment_colour(x.astype(np.float64), np.random.default_rng(0))


def test_an_identity_map_gives_back_every_pixel_so_it_can_be_skipped() -> None:
    """predict and dataset skip a map that is_identity: it must give back every uint8 value."""
    v = np.arange(256, dtype=np.uint8)
    tiles = np.stack(np.meshgrid(v, v, indexing="ij") + [v[::-1][:, None].repeat(256, 1)], -1)
    eye = np.eye(3, dtype=np.float32)
    for io in ([240.0] * 3, [231.0, 235.0, 236.0], [255.0, 200.0, 238.5]):
        same = stain.StainTransform(eye, io, io, exact=True)
        assert same.is_identity
        np.testing.assert_array_equal(same(tiles), tiles)
    assert not stain.StainTransform(eye, [240.0] * 3, [240.0] * 3).is_identity  # truncates
    assert not stain.StainTransform(eye, [250.0] * 3, [240.0] * 3, exact=True).is_identity
    assert not stain.StainTransform(eye * 1.1, exact=True).is_identity
