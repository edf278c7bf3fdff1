"""The training reader (prostate_fast.train.reader) and the throughput measurement."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from _tiny_dataset import make_tiny_dataset

from prostate_fast.dataset import load_dataset_info, read_records
from prostate_fast.errors import DatasetError
from prostate_fast.train.reader import BatchReader


@pytest.fixture(scope="module")
def ds(tmp_path_factory) -> Path:
    """2 slides x 13 training tiles of 32 px (26: batches of 8 end with 2 valid), PNG."""
    return make_tiny_dataset(
        tmp_path_factory.mktemp("reader") / "ds", train_slides=2, per_slide=13, val_per_slide=4
    )


def _reader(ds: Path, **kw) -> BatchReader:
    sp = load_dataset_info(ds).split("train")
    args = {"tile_size": 32, "n_classes": 2, "batch_size": 8, "scale": 1 / 255}
    return BatchReader(sp.rec, sp.idx, **{**args, "augment": False, "n_threads": 2, **kw})


def _epoch(ds: Path, seed: int = 0, **kw) -> list[tuple[np.ndarray, np.ndarray, int]]:
    with _reader(ds, **kw) as r:
        return [(d.copy(), lab.copy(), v) for d, lab, v in r.epoch(seed)]


def _tiles(batches) -> np.ndarray:
    """The valid samples as uint8 (n, H, W, 3) RGB."""
    x = np.concatenate([d[:v] for d, _, v in batches])
    return np.rint(x * 255).astype(np.uint8).transpose(0, 2, 3, 1)


def _same(a, b) -> bool:
    return all(
        np.array_equal(x[0], y[0]) and np.array_equal(x[1], y[1]) and x[2] == y[2]
        for x, y in zip(a, b, strict=True)
    )


def test_epoch_is_a_seeded_permutation_of_the_split(ds: Path) -> None:
    plain = _epoch(ds, seed=3)
    assert [v for _, _, v in plain] == [8, 8, 8, 2]  # ceil(26 / 8) batches, static shape
    assert all(d.shape == (8, 3, 32, 32) and d.dtype == np.float32 for d, _, _ in plain)
    records = list(read_records(ds, "train"))
    want = {rgb.tobytes(): label for _, rgb, label in records}
    got = _tiles(plain)
    labels = np.concatenate([lab[:v] for _, lab, v in plain])
    assert len(got) == len(records) and {t.tobytes() for t in got} == set(want)  # each once
    assert [want[t.tobytes()] for t in got] == labels.astype(int).tolist()
    # the last batch's tail is the epoch's first samples, labelled as read
    np.testing.assert_array_equal(plain[-1][0][2:], plain[0][0][:6])
    order = [t.tobytes() for t in got]
    assert order != [rgb.tobytes() for _, rgb, _ in records]  # shuffled
    with _reader(ds) as r:
        in_order = _tiles(list(r.epoch(0, shuffle=False)))
    assert [t.tobytes() for t in in_order] == [rgb.tobytes() for _, rgb, _ in records]
    assert [t.tobytes() for t in _tiles(_epoch(ds, seed=4))] != order


@pytest.mark.parametrize("augment", [False, "flips", "colour"])
def test_same_seed_same_batches_for_any_thread_count(ds: Path, augment) -> None:
    one = _epoch(ds, seed=5, augment=augment, n_threads=1)
    assert _same(one, _epoch(ds, seed=5, augment=augment, n_threads=3))
    assert not _same(one, _epoch(ds, seed=6, augment=augment, n_threads=1))


def test_flips_turn_each_tile_and_colour_jitters_it(ds: Path) -> None:
    plain = _tiles(_epoch(ds, seed=1))
    flips = _tiles(_epoch(ds, seed=1, augment="flips"))
    turned = 0
    for p, f in zip(plain, flips, strict=True):  # the same order: a symmetry of the same tile
        symmetries = [np.rot90(t, k) for t in (p, p[:, ::-1]) for k in range(4)]
        assert any(np.array_equal(f, s) for s in symmetries)
        turned += not np.array_equal(f, p)
    assert turned > len(plain) // 2
    colour = _epoch(ds, seed=1, augment="colour")
    x = np.concatenate([d for d, _, _ in colour])
    assert x.min() >= 0 and x.max() <= 1 + 1e-6  # scaled like the plain reader
    assert not np.array_equal(_tiles(colour), flips)


def test_parts_split_the_records_and_arguments_are_checked(ds: Path) -> None:
    with _reader(ds) as whole, _reader(ds, num_parts=2, part_index=1) as part:
        assert len(whole) == 26 and part.keys == whole.keys[13:]
        batches = list(part.epoch(0, n=12))
        assert [v for _, _, v in batches] == [8, 4]
    with pytest.raises(ValueError, match="part_index"):
        _reader(ds, num_parts=2, part_index=2)
    with pytest.raises(ValueError, match="augment"):
        _reader(ds, augment="hsv")


def test_bad_records_name_the_file(ds: Path, tmp_path: Path) -> None:
    from prostate_fast._mx import import_mxnet

    mx = import_mxnet()
    rec, idx = tmp_path / "bad.rec", tmp_path / "bad.idx"
    w = mx.recordio.MXIndexedRecordIO(str(idx), str(rec), "w")
    for i in range(4):
        w.write_idx(i, mx.recordio.pack(mx.recordio.IRHeader(0, 1.0, i, 0), b"junk"))
    w.close()
    args = {"tile_size": 32, "n_classes": 2, "batch_size": 2, "scale": 1.0, "n_threads": 2}
    with (
        BatchReader(rec, idx, augment=False, **args) as r,
        pytest.raises(DatasetError, match=r"bad\.rec: unreadable record"),
    ):
        list(r.epoch(0))
    with (
        BatchReader(rec, idx, augment=False, **{**args, "n_classes": 1}) as r,
        pytest.raises(DatasetError, match=r"bad\.rec: label 1 outside the 1 classes"),
    ):
        list(r.epoch(0))
    sp = load_dataset_info(ds).split("train")
    with BatchReader(sp.rec, sp.idx, augment=False, **{**args, "tile_size": 64}) as r:
        with pytest.raises(DatasetError, match=r"train\.rec: unreadable record.*not 64 x 64"):
            next(r.epoch(0))


def test_an_abandoned_epoch_stops_its_reads(ds: Path) -> None:
    with _reader(ds, n_threads=2) as r:
        first = list(itertools.islice(r.epoch(0), 1))
        again = list(itertools.islice(r.epoch(0), 1))
    assert _same(first, again)


def test_measure_throughput(ds: Path) -> None:
    from prostate_fast.train.throughput import measure_throughput

    small = {"batch_size": 8, "batches": 3, "warmup": 1, "rounds": 1, "n_threads": 2}
    got = measure_throughput(ds, recipe="study", augment="colour", **small)
    assert got.limit > 0 and got.real > 0 and got.forward > 0
    assert got.ratio == pytest.approx(got.real / got.limit)
    assert (got.network, got.batch_size, got.tile_size, got.augment) == ("study", 8, 32, "colour")
    assert "samples/s" in got.line() and "ratio" in got.line()
    with pytest.raises(ValueError, match="batches"):
        measure_throughput(ds, batches=0)
