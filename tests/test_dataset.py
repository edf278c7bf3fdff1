"""Dataset stage: white cleaning, class balance, split by slide, RecordIO packing and reading."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from prostate_fast.cli.main import main
from prostate_fast.dataset import (
    build_dataset,
    count_records,
    epoch_batches,
    load_dataset_info,
    load_side_car,
    read_records,
    record_iter,
)
from prostate_fast.dataset.selection import (
    apportion,
    assign_splits,
    balance_indices,
    stratified_group_folds,
    white_keep_mask,
)
from prostate_fast.errors import DatasetError
from prostate_fast.label import label_tiles
from prostate_fast.slide import open_slide
from prostate_fast.synthetic import make_synthetic
from prostate_fast.tile import full_grid

N_SLIDES = 4


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    """Four small synthetic slides (2048 x 1024, 128 tiles each, mostly glass) labelled by mask."""
    root = tmp_path_factory.mktemp("slides")
    out = []
    for i in range(N_SLIDES):
        made = make_synthetic(
            root, name=f"s{i}", width=2048, height=1024, seed=10 + i, n_cancer=2, n_cores=2
        )
        with open_slide(made.slide) as slide:
            grid = full_grid(slide, slide.choose_level(magnification=20.0), 128)
            out.append(label_tiles(slide, made.mask, grid, n_threads=1))
    assert all(t.counts()["cancer"] > 0 for t in out)
    return out


@pytest.fixture(scope="module")
def png_set(tables, tmp_path_factory):
    """One PNG dataset with a 3-way split, balance 50:50 on train and 10 % white kept."""
    out = tmp_path_factory.mktemp("ds") / "png"
    summary = build_dataset(
        tables, out, white_keep=0.1, fractions=(0.5, 0.25, 0.25), seed=3, n_threads=2
    )
    return out, summary


def _leftovers(parent: Path) -> list[str]:
    return sorted(
        p.name
        for p in parent.iterdir()
        if ".part-" in p.name or ".old-" in p.name or ".pf-" in p.name
    )


def _files(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(root.iterdir())}


# -- records ------------------------------------------------------------------------------------
def test_png_records_are_the_slide_pixels(png_set, tables) -> None:
    out, summary = png_set
    info = load_dataset_info(out)
    assert set(info.splits) == {"train", "val", "test"}
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["dataset.json", "summary.json"]
        + [f"{s}.{e}" for s in ("train", "val", "test") for e in ("rec", "idx", "lst", "csv")]
    )
    paths = {t.slide_name: t.slide_path for t in tables}
    for split in info.splits:
        side = load_side_car(out, split)
        assert len(side["record"]) == info.splits[split].records == count_records(out, split)
        slides = {name: open_slide(paths[name]) for name in set(side["slide"])}
        choices = {n: s.choose_level(magnification=20.0) for n, s in slides.items()}
        for rid, rgb, label in read_records(out, split):
            name = side["slide"][rid]
            xy = (int(side["l0_x"][rid]), int(side["l0_y"][rid]))
            want = slides[name].read_scaled(xy, (128, 128), choices[name])
            assert np.array_equal(rgb, want), (split, rid)
            assert label == side["label"][rid]
        for s in slides.values():
            s.close()
    lst = (out / "val.lst").read_text().splitlines()
    side = load_side_car(out, "val")
    assert (
        lst[0] == f"0\t{side['label'][0]}\t{side['slide'][0]}:{side['l0_x'][0]}:{side['l0_y'][0]}"
    )


def test_side_car_labels_match_tables(png_set, tables) -> None:
    out, _ = png_set
    by_xy = {
        (t.slide_name, int(x), int(y)): int(lab)
        for t in tables
        for (x, y), lab in zip(t.l0_xy, t.label, strict=True)
    }
    for split in ("train", "val", "test"):
        side = load_side_car(out, split)
        rows = zip(side["slide"], side["l0_x"], side["l0_y"], side["label"], strict=True)
        for name, x, y, lab in rows:
            assert by_xy[(name, int(x), int(y))] == lab


def test_image_record_iter_reads_side_car_labels(png_set) -> None:
    out, _ = png_set
    info = load_dataset_info(out)
    side = load_side_car(out, "train")
    n = info.splits["train"].records
    decoded = {rid: rgb for rid, rgb, _ in read_records(out, "train")}
    it = record_iter(out, "train", batch_size=16, shuffle=False, scale=1.0, n_threads=1)
    for _ in range(2):  # two epochs: the second after reset()
        got, labels = [], []
        for batch in epoch_batches(it, n):
            k = batch.data[0].shape[0] - batch.pad
            got.append(batch.data[0].asnumpy()[:k])
            labels.append(batch.label[0].asnumpy()[:k])
        data, label = np.concatenate(got), np.concatenate(labels)
        assert data.dtype == np.float32 and data.shape == (n, 3, 128, 128)
        assert np.array_equal(label, side["label"].astype(np.float32))
        for rid in (0, n // 2, n - 1):  # RGB order, exact pixels
            assert np.array_equal(data[rid].transpose(1, 2, 0).astype(np.uint8), decoded[rid])
        it.reset()
    # shuffled, with the dataset's scale: every record once, each with its own label
    it = record_iter(out, "train", batch_size=16, shuffle=True, seed=1, n_threads=1)
    lookup = {rgb[:4, :4].tobytes(): rid for rid, rgb in decoded.items()}
    seen = []
    for batch in epoch_batches(it, n):
        k = batch.data[0].shape[0] - batch.pad
        x = np.rint(batch.data[0].asnumpy()[:k] * 255).astype(np.uint8).transpose(0, 2, 3, 1)
        for img, lab in zip(x, batch.label[0].asnumpy()[:k], strict=True):
            rid = lookup[np.ascontiguousarray(img[:4, :4]).tobytes()]
            assert lab == side["label"][rid]
            seen.append(rid)
    assert sorted(seen) == list(range(n)) and seen != list(range(n))


def test_augment_gives_dihedral_copies(png_set) -> None:
    out, _ = png_set
    decoded = [rgb for _, rgb, _ in read_records(out, "val", range(8))]
    it = record_iter(out, "val", batch_size=8, shuffle=False, augment=True, scale=1.0, seed=5)
    x = it.next().data[0].asnumpy().astype(np.uint8).transpose(0, 2, 3, 1)
    kinds = set()
    for img, ref in zip(x, decoded, strict=True):
        variants = [np.rot90(r, k) for r in (ref, ref[:, ::-1]) for k in range(4)]
        hit = [i for i, v in enumerate(variants) if np.array_equal(img, v)]
        assert hit, "augmented tile is not a flip/quarter turn of its record"
        kinds.add(hit[0])
    assert len(kinds) > 1


def test_dataset_json_contract(png_set) -> None:
    out, summary = png_set
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["format"] == "prostate-fast-dataset" and meta["version"] == 1
    assert meta["classes"] == ["benign", "cancer"] and meta["colours"] == {"cancer": [0, 255, 0]}
    assert meta["tile_size"] == 128 and meta["downsample"] == 1.0 and meta["mpp"] == 0.5
    assert meta["magnification"] == 20.0 and meta["encoding"] == "png"
    assert meta["channel_order"] == "RGB" and meta["normalisation"]["scale"] == 1 / 255
    for name, s in meta["splits"].items():
        assert s["records"] == sum(s["per_class"]) == summary.splits[name]["records"]
    assert json.loads((out / "summary.json").read_text()) == summary.to_dict()
    text = summary.format()
    assert "train" in text and "s0.tif" in text and "white" in text


# -- selection ----------------------------------------------------------------------------------
def test_no_slide_or_patient_in_two_splits(png_set, tables, tmp_path) -> None:
    out, summary = png_set
    groups = [set(s["slides"]) for s in summary.splits.values()]
    assert sum(len(g) for g in groups) == N_SLIDES and len(set().union(*groups)) == N_SLIDES
    csv_path = tmp_path / "patients.csv"
    csv_path.write_text("patient,slide\nP1,s0\nP1,s1.tif\nP2,s2\nP3,s3\n")
    for seed in range(4):
        s = build_dataset(tables, tmp_path / f"p{seed}", patients=csv_path, seed=seed)
        where = {name: split for split, v in s.splits.items() for name in v["slides"]}
        assert where["s0.tif"] == where["s1.tif"] and len(where) == N_SLIDES
        assert set(load_side_car(tmp_path / f"p{seed}", "train")["patient"]) <= {"P1", "P2", "P3"}


@pytest.mark.parametrize("ratio", ["30:70", "50:50", "70:30"])
def test_balance_within_one_tile(tables, tmp_path, ratio) -> None:
    s = build_dataset(tables, tmp_path / "d", balance=ratio, encoding="jpeg", seed=1)
    share = np.array([float(v) for v in ratio.split(":")]) / 100
    n = np.array(s.splits["train"]["per_class"])
    assert n.sum() > 0 and np.all(np.abs(n - share * n.sum()) <= 1), n
    for name in s.splits["val"]["slides"]:  # val is not balanced: every non-white tile is in
        v = s.slides[name]
        assert v["records"] == v["tiles"] - v["white_tiles"] + v["white_records"]


def test_white_share_within_half_percent(tables, tmp_path) -> None:
    s = build_dataset(tables, tmp_path / "d", balance="all", class_weights=True, encoding="jpeg")
    white = s.white
    assert white["white_tiles"] > 300 and white["kept"] > 0
    assert abs(white["share"] - 0.02) <= 0.005 and white["records"] == white["kept"]
    n_tiles = sum(len(t) for t in tables)
    n_white = sum(int((t.white_fraction > 0.5).sum()) for t in tables)
    assert s.records == n_tiles - n_white + white["kept"]
    side = load_side_car(tmp_path / "d", "train")
    assert int((side["white_fraction"] > 0.5).sum()) == s.splits["train"]["white_kept"]
    c = np.array(s.splits["train"]["per_class"], float)
    assert np.allclose(s.class_weights, c.sum() / (2 * c), rtol=1e-5)


def test_same_seed_same_bytes_any_threads(tables, tmp_path) -> None:
    a = build_dataset(tables, tmp_path / "a", seed=7, n_threads=1)
    b = build_dataset(tables, tmp_path / "b", seed=7, n_threads=2)
    build_dataset(tables, tmp_path / "c", seed=8, n_threads=2)
    assert a.to_dict() == b.to_dict()
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    assert _files(tmp_path / "a") != _files(tmp_path / "c")


def test_tables_from_files_and_split_lists(tables, tmp_path) -> None:
    paths = []
    for i, t in enumerate(tables):
        paths.append(t.save(tmp_path / f"{t.slide_name}.{'npz' if i % 2 else 'csv'}"))
    s = build_dataset(paths, tmp_path / "d", split={"val": ["s1"], "test": ["s3.tif"]})
    assert s.splits["val"]["slides"] == ["s1.tif"] and s.splits["test"]["slides"] == ["s3.tif"]
    assert s.splits["train"]["slides"] == ["s0.tif", "s2.tif"]


def test_folds_partition_the_slides(tables, tmp_path) -> None:
    vals = []
    for fold in range(2):
        s = build_dataset(tables, tmp_path / f"f{fold}", folds=2, fold=fold, balance="all")
        vals.append(set(s.splits["val"]["slides"]))
        assert not vals[-1] & set(s.splits["train"]["slides"])
    assert not vals[0] & vals[1] and len(vals[0] | vals[1]) == N_SLIDES


def _fold_counts(counts: dict, of: dict, folds: int) -> np.ndarray:
    out = np.zeros((folds, len(next(iter(counts.values())))), np.int64)
    for g, f in of.items():
        out[f] += counts[g]
    return out


@pytest.mark.parametrize("seed", range(5))
def test_folds_are_stratified_by_class(seed: int) -> None:
    rng = np.random.default_rng(seed)
    counts = {f"g{i}": [int(rng.integers(0, 40)), int(rng.integers(0, 10))] for i in range(40)}
    of = stratified_group_folds(counts, 5)
    assert set(of) == set(counts) and set(of.values()) == set(range(5))
    per_fold = _fold_counts(counts, of, 5)
    share = per_fold / per_fold.sum(axis=0)
    assert np.all(per_fold > 0) and np.abs(share - 0.2).max() < 0.05
    assert stratified_group_folds(counts, 5) == of  # deterministic


def test_rare_class_reaches_every_fold() -> None:
    """One benign tile in each of three slides: each of three folds gets one (issue 14)."""
    counts = {f"s{i}": [0, 50 + i] for i in range(9)} | {f"b{i}": [1, 40] for i in range(3)}
    for folds in (2, 3):
        per_fold = _fold_counts(counts, stratified_group_folds(counts, folds), folds)
        assert np.all(per_fold > 0) and per_fold[:, 0].max() - per_fold[:, 0].min() <= 1
    with pytest.raises(ValueError, match="folds"):
        stratified_group_folds(counts, 13)


@pytest.mark.parametrize("seed", range(6))
def test_assign_splits_folds_grouped_and_stratified(seed: int) -> None:
    """Two benign-only slides of one patient each, four cancer slides: every val fold has
    benign tiles, a patient's slides stay together, and each slide is val exactly once."""
    slides = ["b0", "b1", "c0", "c1", "c2", "c3"]
    patient = {"b0": "P0", "b1": "P1", "c0": "P2", "c1": "P2", "c2": "P3", "c3": "P4"}
    counts = {s: [100, 0] if s[0] == "b" else [0, 60] for s in slides}
    val_of = {}
    for fold in range(2):
        a = assign_splits(
            slides,
            patient,
            split=None,
            fractions=(0.8, 0.2),
            folds=2,
            fold=fold,
            lookup={s: s for s in slides},
            rng=np.random.default_rng(seed),
            counts=counts,
        )
        val = [s for s in slides if a[s] == "val"]
        assert any(s[0] == "b" for s in val) and any(s[0] == "c" for s in val)
        assert a["c0"] == a["c1"]
        val_of.update({s: fold for s in val})
    assert sorted(val_of) == slides


def test_small_split_warning(tables, tmp_path, capsys) -> None:
    """A val or test split with fewer than 20 tiles of a class is warned about, by name."""
    from prostate_fast.metrics import SmallSplitWarning

    with pytest.warns(SmallSplitWarning) as caught:
        s = build_dataset(tables, tmp_path / "d", fractions=(0.5, 0.25, 0.25), seed=3)
    small = {
        (name, cls)
        for name in ("val", "test")
        for cls, n in zip(s.classes, s.splits[name]["per_class"], strict=True)
        if n < 20
    }
    said = {(m.split("'")[1], m.split("'")[3]) for m in (str(w.message) for w in caught)}
    assert small and said == small
    paths = [str(t.save(tmp_path / f"{t.slide_name}.npz")) for t in tables]
    args = ["dataset", *paths, "-o", str(tmp_path / "cli"), "--white-keep", "0.02"]
    assert main([*args, "--fractions", "0.5,0.25,0.25", "--seed", "3"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert len(err) == len(small) and all(
        e.startswith("prostate-fast: warning: split") for e in err
    )


def test_reordered_classes_and_a_slide_without_tiles(tables, tmp_path) -> None:
    t1 = tables[1]
    flipped = dataclasses.replace(
        t1, classes=("cancer", "benign"), label=(1 - t1.label).astype(np.int16)
    )
    t2 = tables[2]
    empty = dataclasses.replace(
        t2,
        tile_rc=t2.tile_rc[:0],
        l0_xy=t2.l0_xy[:0],
        label=t2.label[:0],
        coverage=t2.coverage[:0],
        white_fraction=t2.white_fraction[:0],
    )
    kw = {"balance": "all", "white_keep": 0.0, "encoding": "jpeg", "split": {"val": ["s3"]}}
    ref = build_dataset(tables, tmp_path / "ref", **kw)
    s = build_dataset([tables[0], flipped, empty, tables[3]], tmp_path / "d", **kw)
    assert s.slides["s1.tif"] == ref.slides["s1.tif"]
    assert s.slides["s2.tif"]["records"] == 0 and s.slides["s2.tif"]["tiles"] == 0


def test_apportion_and_selection_units() -> None:
    rng = np.random.default_rng(0)
    for _ in range(300):
        k = int(rng.integers(2, 5))
        counts = rng.integers(0, 500, k)
        shares = rng.random(k) + 0.01
        shares /= shares.sum()
        n = apportion(shares, counts)
        assert np.all(n <= counts) and np.all(np.abs(n - shares * n.sum()) < 1)
    labels = np.repeat([0, 1], [700, 300])
    keep, n = balance_indices(labels, np.array([0.5, 0.5]), np.random.default_rng(1))
    assert list(n) == [300, 300] and np.all(np.diff(keep) > 0)
    white = np.zeros(10000, bool)
    white[::2] = True
    mask, k = white_keep_mask(white, 0.02, np.random.default_rng(2))
    assert k == 100 and int(mask[white].sum()) == 100 and mask[~white].all()


# -- errors: DatasetError with the reason, nothing left behind ----------------------------------
def _fails(tables, out: Path, match: str, **kw) -> None:
    with pytest.raises(DatasetError, match=match):
        build_dataset(tables, out, **kw)
    assert not out.exists()
    assert _leftovers(out.parent) == []


def test_tables_sharing_no_class(tables, tmp_path) -> None:
    other = dataclasses.replace(
        tables[1],
        classes=("normal", "gleason4"),
        coverage=tables[1].coverage,
    )
    _fails([tables[0], other], tmp_path / "d", "share no class")


def test_tables_with_different_classes(tables, tmp_path) -> None:
    other = dataclasses.replace(tables[1], classes=("benign", "gleason4"))
    _fails([tables[0], other], tmp_path / "d", "different classes")


def test_empty_selection(tables, tmp_path) -> None:
    empty = [
        dataclasses.replace(
            t,
            tile_rc=t.tile_rc[:0],
            l0_xy=t.l0_xy[:0],
            label=t.label[:0],
            coverage=t.coverage[:0],
            white_fraction=t.white_fraction[:0],
        )
        for t in tables
    ]
    _fails(empty, tmp_path / "d", "empty selection")
    _fails([], tmp_path / "d", "empty selection")


def test_split_left_empty(tables, tmp_path) -> None:
    _fails(tables[:2], tmp_path / "d", "would be empty", fractions=(0.6, 0.2, 0.2))
    names = [t.slide_name for t in tables]
    _fails(tables, tmp_path / "d", "'train' is empty", split={"val": names})


def test_missing_slide_file(tables, tmp_path) -> None:
    gone = dataclasses.replace(tables[2], slide_path=str(tmp_path / "nowhere" / "gone.tif"))
    _fails([tables[0], tables[1], gone, tables[3]], tmp_path / "d", "gone.tif")


def test_failure_while_packing_leaves_no_rec(tables, tmp_path) -> None:
    bad = dataclasses.replace(tables[3], level=7)  # found only when the slide is opened
    _fails([*tables[:3], bad], tmp_path / "d", "level 7", split={"val": ["s3"]})


def test_patient_in_two_lists(tables, tmp_path) -> None:
    _fails(
        tables,
        tmp_path / "d",
        "patient 'P1'",
        split={"val": ["s0"]},
        patients={"s0.tif": "P1", "s1.tif": "P1", "s2.tif": "P2", "s3.tif": "P3"},
    )


def test_table_without_white_fraction(tables, tmp_path) -> None:
    nan = np.full(len(tables[0]), np.nan, np.float32)
    _fails([dataclasses.replace(tables[0], white_fraction=nan)], tmp_path / "d", "white fraction")


def test_patient_missing_for_a_slide(tables, tmp_path) -> None:
    _fails(
        tables,
        tmp_path / "d",
        "no patient for slide.*s3.tif",
        patients={"s0": "A", "s1": "B", "s2": "C"},
    )


def test_existing_output_needs_overwrite(png_set, tables, tmp_path) -> None:
    out = tmp_path / "d"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        build_dataset(tables, out)
    assert (out / "keep.txt").read_text() == "mine"
    with pytest.raises(FileExistsError, match="not written by prostate-fast"):  # not ours
        build_dataset(tables, out, overwrite=True)
    assert (out / "keep.txt").read_text() == "mine"
    (out / "keep.txt").unlink()
    build_dataset(tables, out)  # an empty folder is filled
    build_dataset(tables, out, overwrite=True, encoding="jpeg", quality=80)  # ours: replaced
    assert load_dataset_info(out).jpeg_quality == 80
    assert _leftovers(tmp_path) == []


def test_load_dataset_info_errors(png_set, tmp_path) -> None:
    with pytest.raises(DatasetError, match="dataset.json"):
        load_dataset_info(tmp_path)
    (tmp_path / "dataset.json").write_text("{not json")
    with pytest.raises(DatasetError, match="corrupt"):
        load_dataset_info(tmp_path)
    out, _ = png_set
    meta = json.loads((out / "dataset.json").read_text())
    (tmp_path / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(DatasetError, match="train.rec"):
        load_dataset_info(tmp_path)
    with pytest.raises(ValueError, match="no split 'nope'"):
        record_iter(out, "nope")


def test_record_iter_on_damaged_records(png_set, tmp_path) -> None:
    import shutil

    from prostate_fast._mx import import_mxnet

    out, _ = png_set
    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    mx = import_mxnet()
    w = mx.recordio.MXIndexedRecordIO(str(bad / "val.idx"), str(bad / "val.rec"), "w")
    for i in range(4):
        w.write_idx(i, mx.recordio.pack(mx.recordio.IRHeader(0, 0.0, i, 0), b"junk"))
    w.close()
    with pytest.raises(DatasetError, match=r"val\.rec: unreadable record"):
        record_iter(bad, "val", batch_size=4)
    with pytest.raises(DatasetError, match="record 1 does not decode"):
        list(read_records(bad, "val", [1]))


# -- CLI ------------------------------------------------------------------------------------------
def test_cli_dataset(tables, tmp_path, capsys) -> None:
    paths = [t.save(tmp_path / f"{t.slide_name}.npz") for t in tables]
    args = ["dataset", *map(str, paths), "-o", str(tmp_path / "d"), "--encoding", "jpeg"]
    assert main([*args, "--test-slides", "s0", "--balance", "all", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "benign" in out and "test" in out and "white tiles" in out
    assert load_dataset_info(tmp_path / "d").splits["test"].slides == ("s0.tif",)
    assert (
        main([*args, "--overwrite", "--fractions", "0.5,0.5", "--folds", "2", "--fold", "1"]) == 0
    )
    capsys.readouterr()
    assert main([*args[:-2], "--overwrite", "--val-slides", "s0,s1,s2,s3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "empty" in err[0]
