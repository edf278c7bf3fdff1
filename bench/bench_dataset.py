"""Dataset stage: RecordIO packing throughput and ImageRecordIter read throughput.

Run: ``pytest bench/bench_dataset.py --benchmark-only -s`` (about 2-3 minutes on 2 cores).

Input: 10 label tables of 2048 tiles (128 px at 20x) each, 20480 tiles in all, from synthetic
8192 x 4096 slides. To keep set-up short, 5 distinct slides are generated and each is also
linked under a second name (so 10 "slides"); labels come from the truth mask
(``label_tiles(..., white=False)``) and the white fraction from the mask's glass share. Every
tile is packed (``balance="all"``, ``white_keep=1``), glass and tissue alike.

Compared on the same tiles, in one run:

* ``build_dataset`` with all cores, PNG (level 1) and JPEG (q95): tiles/s;
* ``build_dataset`` with one thread on a 2048-tile sample (one slide), JPEG: tiles/s;
* the 2018 study's way (:mod:`prostate_fast.baseline.dataset`): every tile a JPEG file written
  with ``cv2.imwrite`` (same sample): tiles/s;
* reading: ``record_iter`` (ImageRecordIter, batch 32, shuffle) over the train split, PNG and
  JPEG, plain (one epoch) and with the 90-degree-turn augmentation (4096 images): images/s;
  the baseline reads its JPEG files back one by one with ``cv2.imread``: images/s.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import numpy as np
import pytest

from prostate_fast._mx import import_mxnet
from prostate_fast.baseline.dataset import export_tile_files, load_tile_files
from prostate_fast.dataset import build_dataset, epoch_batches, load_dataset_info, record_iter
from prostate_fast.label import label_tiles
from prostate_fast.slide import open_slide
from prostate_fast.synthetic import make_synthetic
from prostate_fast.tile import full_grid

N_DISTINCT = 5
ALIASES = 2  # names per distinct slide
SIZE = (8192, 4096)
AUGMENT_SAMPLE = 4096  # images read with augmentation (the rotation runs in Python)
RESULTS: dict[str, float] = {}


def _tables_for(made, name: str, path: Path):
    with open_slide(made.slide) as slide:
        grid = full_grid(slide, slide.choose_level(magnification=20.0), 128)
        table = label_tiles(slide, made.mask, grid, white=False, n_threads=1)
    mask = made.truth_mask()
    d = made.mask_downsample
    k = 128 // d
    rows, cols = grid.grid_shape
    tissue = (mask[: rows * k, : cols * k] > 0).reshape(rows, k, cols, k).mean(axis=(1, 3))
    white = (1.0 - tissue[grid.tile_rc[:, 0], grid.tile_rc[:, 1]]).astype(np.float32)
    return dataclasses.replace(table, slide_name=name, slide_path=str(path), white_fraction=white)


@pytest.fixture(scope="session")
def tables(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench_slides")
    out = []
    t0 = time.perf_counter()
    for i in range(N_DISTINCT):
        made = make_synthetic(
            root, name=f"b{i}", width=SIZE[0], height=SIZE[1], seed=100 + i, n_cores=6
        )
        out.append(_tables_for(made, made.slide.name, made.slide))
        for a in range(1, ALIASES):
            alias = root / f"b{i}-copy{a}.tif"
            os.symlink(made.slide, alias)
            out.append(dataclasses.replace(out[-1], slide_name=alias.name, slide_path=str(alias)))
    n = sum(len(t) for t in out)
    assert n >= 20000
    import_mxnet()  # once, outside the timings
    print(f"\n[set-up] {len(out)} tables, {n} tiles in {time.perf_counter() - t0:.1f} s")
    return out


@pytest.fixture(scope="session")
def packed(tmp_path_factory):
    return {"root": tmp_path_factory.mktemp("bench_ds")}


def _pack(tables, packed, encoding: str, n_threads=None, name=None):
    out = packed["root"] / (name or encoding)
    summary = build_dataset(
        tables,
        out,
        balance="all",
        white_keep=1.0,
        encoding=encoding,
        quality=95,
        n_threads=n_threads,
        overwrite=True,
    )
    packed[name or encoding] = out
    return summary


def _report(benchmark, key: str, count: int, seconds: float, unit: str) -> None:
    rate = count / seconds
    RESULTS[key] = rate
    benchmark.extra_info.update({"count": count, unit: round(rate, 1)})
    print(f"\n{key}: {count} in {seconds:.2f} s = {rate:,.0f} {unit}")


@pytest.mark.parametrize("encoding", ["png", "jpeg"])
def test_pack(benchmark, tables, packed, encoding) -> None:
    t0 = time.perf_counter()
    summary = benchmark.pedantic(_pack, args=(tables, packed, encoding), rounds=1, iterations=1)
    total = time.perf_counter() - t0
    assert summary.records == sum(len(t) for t in tables)
    _report(benchmark, f"pack {encoding} (all cores)", summary.records, total, "tiles/s")
    size = sum(p.stat().st_size for p in packed[encoding].glob("*.rec"))
    print(f"  .rec size {size / 2**20:.0f} MiB ({size / summary.records / 1024:.1f} KiB/tile)")


def test_pack_one_thread_sample(benchmark, tables, packed) -> None:
    sample = tables[0]
    t0 = time.perf_counter()
    summary = benchmark.pedantic(
        build_dataset,
        args=([sample], packed["root"] / "one"),
        kwargs={
            "balance": "all",
            "white_keep": 1.0,
            "encoding": "jpeg",
            "n_threads": 1,
            "split": {"train": [sample.slide_name]},
            "overwrite": True,
        },
        rounds=1,
        iterations=1,
    )
    seconds = time.perf_counter() - t0
    _report(benchmark, "pack jpeg (1 thread, sample)", summary.records, seconds, "tiles/s")


def test_baseline_tile_files(benchmark, tables, packed) -> None:
    t = tables[0]
    out = packed["root"] / "baseline"

    def run():
        with open_slide(t.slide_path) as slide:
            choice = slide.choose_level(magnification=20.0)
            return export_tile_files(slide, choice, t.l0_xy, t.label, t.classes, out, quality=95)

    t0 = time.perf_counter()
    paths = benchmark.pedantic(run, rounds=1, iterations=1)
    _report(
        benchmark, "baseline cv2.imwrite files", len(paths), time.perf_counter() - t0, "tiles/s"
    )
    t0 = time.perf_counter()
    tiles = load_tile_files(paths)
    _report(benchmark, "baseline cv2.imread files", len(tiles), time.perf_counter() - t0, "img/s")


@pytest.mark.parametrize(("encoding", "augment"), [("png", False), ("jpeg", False), ("png", True)])
def test_read(benchmark, tables, packed, encoding, augment) -> None:
    if encoding not in packed:
        _pack(tables, packed, encoding)
    out = packed[encoding]
    n = load_dataset_info(out).splits["train"].records
    if augment:
        n = min(n, AUGMENT_SAMPLE)

    def epoch():
        it = record_iter(out, "train", batch_size=32, shuffle=True, augment=augment, seed=0)
        seen = 0
        for batch in epoch_batches(it, n):
            batch.data[0].wait_to_read()
            seen += batch.data[0].shape[0] - batch.pad
        return seen

    t0 = time.perf_counter()
    seen = benchmark.pedantic(epoch, rounds=1, iterations=1)
    assert seen == n
    key = f"read {encoding}{' + augment' if augment else ''} (ImageRecordIter)"
    _report(benchmark, key, seen, time.perf_counter() - t0, "img/s")


def test_zz_summary(benchmark) -> None:
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    print("\n== dataset benchmark ==")
    for key, rate in RESULTS.items():
        print(f"  {key:<40} {rate:>10,.0f}")
