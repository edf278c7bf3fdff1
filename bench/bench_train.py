"""Train stage: training throughput against its compute limit, in the same run.

Run: ``pytest bench/bench_train.py --benchmark-only -s [--bench-scale tiny|small|default]``
(about 2 minutes on 2 cores at ``default``).

Input: the benchmark dataset, the shared synthetic slide's tissue tiles (``bench_slide``: 128 px at
20x, labelled from its painted copy) packed as ``build_dataset`` packs them (JPEG q95, every tile,
one train split): 1,933 tiles at ``default``.

For each recipe, ``"study"`` (the study's CNN, batch 32, no augmentation) and ``"default"``
(ResNet-10, batch 32, standardised input, class weights, flips and colour jitter),
:func:`prostate_fast.train.throughput.measure_throughput` times the same training step (forward,
backward, update) on batches already decoded in memory (the limit) and on the train split read
through the training reader with ``--threads`` threads (real); both in samples/s, and their ratio
(target >= 0.8). ``extra_info``: ``limit_sps``, ``real_sps``, ``ratio``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from prostate_fast.dataset import build_dataset
from prostate_fast.label import label_tiles
from prostate_fast.slide import open_slide
from prostate_fast.tile import build_grid
from prostate_fast.tissue import detect_tissue
from prostate_fast.train.throughput import measure_throughput

#: Batches timed per measurement by scale (the tiny scale is a smoke test: its timings mean nothing).
BATCHES = {"tiny": 2, "small": 10, "default": 20, "large": 20}
THREADS = int(os.environ.get("PF_BENCH_THREADS", "0")) or None  # all cores
RESULTS: dict[str, str] = {}


@pytest.fixture(scope="module")
def bench_dataset(bench_slide, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The benchmark dataset: the slide's tissue tiles, labelled, JPEG q95, one train split."""
    with open_slide(bench_slide.slide) as sl:
        table = label_tiles(sl, bench_slide.painted, build_grid(sl, detect_tissue(sl)))
    out = tmp_path_factory.mktemp("bench-train") / "ds"
    build_dataset(
        [table],
        out,
        balance="all",
        encoding="jpeg",
        quality=95,
        split={"train": [table.slide_name]},
    )
    return out


@pytest.fixture(scope="module", autouse=True)
def _report(request: pytest.FixtureRequest):
    yield
    capture = request.config.pluginmanager.getplugin("capturemanager")
    if capture is None or not RESULTS:
        return
    with capture.global_and_fixture_disabled():
        print()
        for line in RESULTS.values():
            print(f"bench_train: {line}")


@pytest.mark.parametrize("recipe", ["study", "default"])
def test_train_throughput(benchmark, bench_dataset: Path, bench_scale: str, recipe: str) -> None:
    benchmark.group = "train: throughput vs limit"
    got = benchmark.pedantic(
        measure_throughput,
        args=(bench_dataset,),
        kwargs={
            "recipe": recipe,
            "batch_size": 32,
            "batches": BATCHES[bench_scale],
            "warmup": 1 if bench_scale == "tiny" else 3,
            "n_threads": THREADS,
        },
        rounds=1,
        iterations=1,
    )
    assert got.limit > 0 and got.real > 0
    benchmark.extra_info.update(
        {
            "recipe": recipe,
            "network": got.network,
            "batch_size": got.batch_size,
            "threads": got.threads,
            "limit_sps": round(got.limit, 2),
            "real_sps": round(got.real, 2),
            "ratio": round(got.ratio, 3),
            "forward_sps": round(got.forward, 2),
        }
    )
    RESULTS[recipe] = got.line()
