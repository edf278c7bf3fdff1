"""Train stage: training throughput against its compute limit, in the same run.

Run: ``pytest bench/bench_train.py --benchmark-only -s [--bench-scale tiny|small|default]``
(about 2 minutes on 2 cores at ``default``).

Input: the benchmark dataset, the shared synthetic slide's tissue tiles (``bench_slide``: 128 px at
20x, labelled from its painted copy) packed as the end-to-end benchmark's preprocessing packs them
(``bench_end_to_end.ours_preprocess``: white cleaning, JPEG q95, one train split).

For each recipe, ``"study"`` (the study's CNN, batch 32, no augmentation) and ``"default"``
(ResNet-10, batch 32, standardised input, class weights, flips and colour jitter),
:func:`prostate_fast.train.throughput.measure_throughput` times the same training step (forward,
backward, update) on batches already decoded in memory (the limit) and on the train split read
through the training reader with ``--threads`` threads (real), back to back in each round; both
in samples/s (medians of the rounds), and the median of the rounds' ratios (target >= 0.8); the
forward pass alone for reference. ``extra_info``: ``limit_sps``, ``real_sps``, ``ratio``,
``forward_sps``. ``PF_BENCH_THREADS`` sets ``--threads`` (default: all cores).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from bench_end_to_end import ours_preprocess

from prostate_fast.train.throughput import measure_throughput

#: Batches timed per measurement by scale (the tiny scale is a smoke test: its timings mean nothing).
BATCHES = {"tiny": 2, "small": 6, "default": 8, "large": 8}
#: Measurements of each kind, alternately (best of each kept): short and many, so that both kinds
#: see the same load when the machine is shared.
ROUNDS = {"tiny": 1, "small": 4, "default": 6, "large": 6}
THREADS = int(os.environ.get("PF_BENCH_THREADS", "0")) or None  # all cores


@pytest.fixture(scope="module")
def bench_dataset(bench_slide, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The benchmark dataset: what the end-to-end benchmark's preprocessing packs."""
    out = tmp_path_factory.mktemp("bench-train") / "ds"
    ours_preprocess(bench_slide, out)
    return out


@pytest.mark.parametrize("recipe", ["study", "default"])
def test_train_throughput(
    benchmark,
    capsys: pytest.CaptureFixture[str],
    bench_dataset: Path,
    bench_scale: str,
    recipe: str,
) -> None:
    benchmark.group = "train: throughput vs limit"
    got = benchmark.pedantic(
        measure_throughput,
        args=(bench_dataset,),
        kwargs={
            "recipe": recipe,
            "batch_size": 32,
            "batches": BATCHES[bench_scale],
            "warmup": 1 if bench_scale == "tiny" else 2,
            "rounds": ROUNDS[bench_scale],
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
    with capsys.disabled():
        print(f"\nbench_train: {got.line()}")
