"""The limits the per-slide stages are measured against, on the shared benchmark slide.

Run: ``pytest bench/bench_limits.py --benchmark-only`` (a minute at the default scale).

* ``decode``: the time to only read and decode the tissue tiles of the slide and of its painted
  copy (``read_tiles``, batches of 512), the floor of preprocessing (tile, label, clean, pack in
  ``bench_end_to_end.py``); ``tools/bench_report.py`` puts preprocessing against it (target:
  within 1.25x).
* ``predict vs engine`` (fp32 and int8, the onnx engine): ``predict_slide``'s inference phase
  (tiles read and normalised in its background thread while the engine runs) against the engine's
  pure batch time on the same tiles (``Predictor.run`` on batches read and normalised beforehand,
  untimed), each the best of :data:`ROUNDS` runs. The ratio is printed (target: <= 1.1,
  reading fully hidden). The model is the study CNN at 128 px with seeded weights and a
  synthetic validation split for int8's calibration.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

TILE = 128
BATCH = 64
THREADS = int(os.environ.get("PF_BENCH_THREADS", "0")) or None
RESULTS: dict[str, dict[str, Any]] = {}
#: Runs of predict and of the engine alone; the ratio takes the best of each.
ROUNDS = 3


@pytest.fixture(scope="module")
def grid_of(bench_slide) -> tuple[Any, Any]:
    from prostate_fast.slide import open_slide
    from prostate_fast.tile import build_grid
    from prostate_fast.tissue import detect_tissue

    with open_slide(bench_slide.slide) as sl:
        tissue = detect_tissue(sl)
        return tissue, build_grid(sl, tissue)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from _tiny_dataset import make_tiny_dataset
    from _tiny_model import make_model

    root = tmp_path_factory.mktemp("bench-limits")
    ds = make_tiny_dataset(root / "ds", size=TILE, train_slides=1, per_slide=2, val_per_slide=64)
    return make_model(root / "m", tile_size=TILE, dataset=ds)


@pytest.fixture(scope="module", autouse=True)
def _report(request: pytest.FixtureRequest):
    yield
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if capture is None or not RESULTS:
        return
    with capture.global_and_fixture_disabled():
        print()
        for name, r in RESULTS.items():
            if "ratio" in r:
                print(
                    f"bench_limits: predict/engine {name}: {r['ratio']:.2f} "
                    f"({r['inference_s']:.2f} s / {r['engine_s']:.2f} s)"
                )
            else:
                print(f"bench_limits: {name}: {r['s_per_slide']:.2f} s")


def _batches(n: int, size: int) -> list[np.ndarray]:
    return [np.arange(s, min(s + size, n)) for s in range(0, n, size)]


def decode_only(bench_slide, grid: Any) -> None:
    from prostate_fast.slide import open_slide
    from prostate_fast.tile import read_tiles

    for path in (bench_slide.slide, bench_slide.painted):
        with open_slide(path) as sl:
            for idx in _batches(len(grid), 512):
                read_tiles(sl, grid, idx)


def test_decode_only(benchmark, bench_slide, grid_of) -> None:
    _, grid = grid_of
    benchmark.group = "limits: decode only"
    benchmark.pedantic(decode_only, args=(bench_slide, grid), rounds=3, iterations=1)
    info = {"limit": "decode", "s_per_slide": round(benchmark.stats.stats.median, 4)}
    info["tissue_tiles"] = len(grid)
    benchmark.extra_info.update(info)
    RESULTS["decode slide + painted copy"] = info


def engine_seconds(pred: Any, slide: Path, grid: Any) -> float:
    """The engine's pure batch time on the grid's tiles (reading and normalising untimed)."""
    from prostate_fast.slide import open_slide
    from prostate_fast.tile import read_tiles

    total = 0.0
    with open_slide(slide) as sl:
        for idx in _batches(len(grid), pred.batch_size):
            x = pred.prepare(read_tiles(sl, grid, idx))
            t0 = time.perf_counter()
            pred.run(x)
            total += time.perf_counter() - t0
    return total


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_predict_vs_engine(benchmark, bench_slide, grid_of, model: Path, precision: str) -> None:
    from prostate_fast.predict import load_model, predict_slide

    tissue, grid = grid_of
    pred = load_model(
        model,
        engine="onnx",
        precision=precision,
        batch_size=BATCH,
        n_threads=THREADS,
        max_auc_drop=1.0,  # seeded weights: the bench measures speed
    )
    inference_runs: list[float] = []

    def predict() -> Any:
        scores = predict_slide(pred, bench_slide.slide, tissue=tissue)
        inference_runs.append(scores.timings["inference"])
        return scores

    with pred:
        engine_s = min(engine_seconds(pred, bench_slide.slide, grid) for _ in range(ROUNDS))
        benchmark.group = "limits: predict vs engine"
        scores = benchmark.pedantic(predict, rounds=ROUNDS, warmup_rounds=1)
    assert len(scores.prob) == len(grid)
    assert scores.engine == ("onnx" if precision == "fp32" else f"onnx-{precision}")  # no fallback
    inference = min(inference_runs[1:])  # after the warm-up: the best of ROUNDS, as the engine
    info = {
        "limit": f"predict-{precision}",
        "tissue_tiles": len(grid),
        "engine_s": round(engine_s, 4),
        "inference_s": round(inference, 4),
        "predict_s": round(benchmark.stats.stats.median, 4),
        "ratio": round(inference / engine_s, 3) if engine_s > 0 else None,
    }
    benchmark.extra_info.update(info)
    RESULTS[precision] = info
