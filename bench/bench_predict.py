"""Prediction throughput: every engine on the same batches of 256 tiles (tiles/s in extra_info).

Run: ``pytest bench/bench_predict.py --benchmark-group-by=group`` (about a minute on 2 cores).

The network is the 2018 study's CNN at its 128 px tile (13.9 M parameters, random but seeded
weights: speed does not depend on the values). Tiles are 256 real tissue tiles from CMU-1 when
``PROSTATE_FAST_DATA`` is set, else from a synthetic slide. Compared, in one run:

* ``native``: the C++ engine on MXNet's C predict API (GIL released);
* ``gluon``: SymbolBlock, static graph, MKLDNN backend on CPU;
* ``onnx``: ONNX Runtime on the exported network;
* ``baseline``: the plain way (Gluon SymbolBlock, not hybridized, one tile per call, normalised
  per tile), as a straightforward re-implementation of the 2018 study's loop would run;
* ``onnx fp32`` / ``onnx int8``: ONNX Runtime on the exported network and on its int8 form
  (``precision="int8"``: calibrated on a synthetic validation split recorded as the model's
  dataset); the ratio of their rates and the share of the 256 tiles whose decision (at the
  model's threshold) is unchanged are printed. With random weights every probability is near
  0.5, so that share is a worst case; the accuracy check itself is the int8 report's;
* ``prepare``: the shared NumPy normalisation (uint8 NHWC to scaled float32 NCHW), included in
  every engine's time above;
* ``peak``: the limit: a 2048 x 2048 float32 matrix product through NumPy's BLAS and through
  ONNX Runtime's MLAS (every core), GFLOP/s; the larger is the peak. Each engine's achieved
  GFLOP/s (``gflops``: tiles/s times the network's FLOP per tile,
  counted from the ONNX graph's convolutions and dense layers, ``flop_per_tile``) is printed
  against it, and ``tools/bench_report.py`` puts both in its "limit" table.

Every engine is timed through ``Predictor.predict_batch`` (normalisation included), batch 64.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from _tiny_model import make_model  # noqa: E402

TILE = 128
N_TILES = 256
BATCH = 64
#: Rounds of each engine timing (the rate is the median round's).
ROUNDS = 5
THREADS = int(os.environ.get("PF_BENCH_THREADS", "0")) or None


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_model(tmp_path_factory.mktemp("bench-model") / "m", tile_size=TILE)


@pytest.fixture(scope="module")
def tiles(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    from prostate_fast.slide import open_slide
    from prostate_fast.tile import build_grid, read_tiles

    root = os.environ.get("PROSTATE_FAST_DATA")
    path = Path(root) / "wsi" / "CMU-1-Small-Region.svs" if root else None
    if path is None or not path.is_file():
        from prostate_fast.synthetic import make_synthetic

        out = tmp_path_factory.mktemp("bench-slide")
        path = make_synthetic(out, width=4096, height=4096, seed=5).slide
    with open_slide(path) as slide:
        grid = build_grid(slide, magnification=20.0, tile_size=TILE)
        idx = np.arange(N_TILES) % len(grid)  # repeat when the slide has fewer tissue tiles
        return read_tiles(slide, grid, idx)


_RATES: dict[str, float] = {}
_PROBS: dict[str, np.ndarray] = {}
_FLOP: list[float] = []  # FLOP per tile of the study CNN at TILE px
_PEAK: list[float] = []  # GFLOP/s of the float32 matrix product


def flop_per_tile(onnx_path: Path) -> float:
    """Multiply-adds x 2 of the network's Conv and Gemm nodes for one tile (shape inference)."""
    import onnx
    from onnx import shape_inference

    m = shape_inference.infer_shapes(onnx.load(str(onnx_path)))
    dims = {
        v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
        for v in [*m.graph.value_info, *m.graph.output]
    }
    weights = {i.name: list(i.dims) for i in m.graph.initializer}
    flop = 0
    for node in m.graph.node:
        if node.op_type == "Conv":  # output C x H x W, each sums Cin x kh x kw products
            flop += (
                2
                * int(np.prod(dims[node.output[0]][1:]))
                * int(np.prod(weights[node.input[1]][1:]))
            )
        elif node.op_type == "Gemm":
            flop += 2 * int(np.prod(weights[node.input[1]]))
    return float(flop)


@pytest.fixture(scope="module")
def flop(model_dir: Path) -> float:
    from prostate_fast.predict import load_model

    if not _FLOP:
        with load_model(model_dir, engine="onnx", n_threads=THREADS) as pred:
            _FLOP.append(flop_per_tile(pred.onnx_path))
    return _FLOP[0]


@pytest.fixture(scope="module", autouse=True)
def _report(request: pytest.FixtureRequest):
    """Print tiles/s per engine after the module (also in --benchmark-json's extra_info)."""
    yield
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if capture is None or not _RATES:
        return
    with capture.global_and_fixture_disabled():
        print()
        peak = f" of {_PEAK[0]:.0f} GFLOP/s peak (matmul)" if _PEAK else ""
        for name, rate in _RATES.items():
            engine = _FLOP and not name.startswith("prepare")
            gf = f", {rate * _FLOP[0] / 1e9:6.1f} GFLOP/s{peak}" if engine else ""
            print(f"bench_predict: {name:<30} {rate:8.1f} tiles/s{gf}")
        if "onnx int8" in _RATES and "onnx fp32" in _RATES:
            ratio = _RATES["onnx int8"] / _RATES["onnx fp32"]
            print(
                f"bench_predict: int8 / fp32 {ratio:.2f}x, {_UNCHANGED[0]:.1%} decisions unchanged"
            )


def _rate(benchmark, name: str, n: int) -> None:
    """tiles/s of the median round (one round slowed by the machine does not move it)."""
    rate = round(n / benchmark.stats.stats.median, 1)
    benchmark.extra_info["tiles"] = n
    benchmark.extra_info["tiles_per_s"] = rate
    if _FLOP:
        benchmark.extra_info["flop_per_tile"] = _FLOP[0]
        benchmark.extra_info["gflops"] = round(rate * _FLOP[0] / 1e9, 2)
    _RATES[name] = rate


def _ort_matmul(n: int) -> Any:
    """An ONNX Runtime session of one n x n float32 MatMul (MLAS, every core)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    io = [helper.make_tensor_value_info(k, TensorProto.FLOAT, [n, n]) for k in "xyz"]
    node = helper.make_node("MatMul", ["x", "y"], ["z"])
    m = helper.make_model(helper.make_graph([node], "peak", io[:2], io[2:]))
    m.ir_version = 8
    m.opset_import[0].version = 13
    opts = ort.SessionOptions()
    if THREADS:
        opts.intra_op_num_threads = THREADS
    return ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("how", ["numpy", "onnxruntime"])
def test_peak_matmul(benchmark, how: str) -> None:
    """The limit the engines are measured against: the best float32 GEMM of NumPy's BLAS and
    ONNX Runtime's MLAS (the peak is the larger)."""
    n = 2048
    rng = np.random.default_rng(0)
    a, b = rng.random((n, n), np.float32), rng.random((n, n), np.float32)
    if how == "numpy":
        call = lambda: a @ b  # noqa: E731
    else:
        sess = _ort_matmul(n)
        call = lambda: sess.run(None, {"x": a, "y": b})  # noqa: E731
    call()  # warm-up: threads
    benchmark.group = "peak: float32 matrix product 2048"
    benchmark.pedantic(call, rounds=5, iterations=1)
    gflops = round(2 * n**3 / benchmark.stats.stats.min / 1e9, 2)
    benchmark.extra_info["gflops"] = gflops
    _PEAK[:] = [max([gflops, *_PEAK])]


@pytest.mark.parametrize("engine", ["native", "gluon", "onnx"])
def test_engine(benchmark, model_dir: Path, tiles: np.ndarray, flop: float, engine: str) -> None:
    from prostate_fast.predict import load_model

    pred = load_model(model_dir, engine=engine, batch_size=BATCH, n_threads=THREADS)
    pred.predict_batch(tiles[:BATCH])  # warm-up: memory plans, MKLDNN primitives
    benchmark.group = "predict 256 tiles of 128 px"
    out = benchmark.pedantic(pred.predict_batch, args=(tiles,), rounds=ROUNDS, iterations=1)
    assert out.shape == (N_TILES, 2)
    _rate(benchmark, engine, N_TILES)


@pytest.fixture(scope="module")
def int8_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bench model with a synthetic 128 px dataset recorded (int8 calibrates on its val)."""
    from _tiny_dataset import make_tiny_dataset

    root = tmp_path_factory.mktemp("bench-int8")
    ds = make_tiny_dataset(root / "ds", size=TILE, train_slides=1, per_slide=2, val_per_slide=128)
    return make_model(root / "m", tile_size=TILE, dataset=ds)


_UNCHANGED = [float("nan")]


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_onnx_precision(
    benchmark, int8_model_dir: Path, tiles: np.ndarray, flop: float, precision: str
) -> None:
    from prostate_fast.predict import load_model
    from prostate_fast.predict.scoregrid import decide

    pred = load_model(
        int8_model_dir,
        engine="onnx",
        precision=precision,
        batch_size=BATCH,
        n_threads=THREADS,
        max_auc_drop=1.0,  # random weights: the bench measures speed, not this model's AUC
    )
    pred.predict_batch(tiles[:BATCH])
    benchmark.group = "predict 256 tiles of 128 px: onnx fp32 vs int8"
    out = benchmark.pedantic(pred.predict_batch, args=(tiles,), rounds=ROUNDS, iterations=1)
    assert out.shape == (N_TILES, 2)
    _rate(benchmark, f"onnx {precision}", N_TILES)
    _PROBS[precision] = out
    if len(_PROBS) == 2:
        thr = np.array([pred.info.thresholds["cancer"]], np.float32)
        same = float(np.mean(decide(_PROBS["fp32"], thr) == decide(_PROBS["int8"], thr)))
        _UNCHANGED[0] = same
        benchmark.extra_info["decisions_unchanged"] = same
        benchmark.extra_info["max_abs_prob_diff"] = float(np.abs(_PROBS["fp32"] - out).max())
        assert np.abs(_PROBS["fp32"] - out).max() < 0.05


def test_baseline_one_tile_per_call(benchmark, model_dir: Path, tiles: np.ndarray) -> None:
    import warnings

    from prostate_fast._mx import import_mxnet
    from prostate_fast.predict import read_model_info

    mx = import_mxnet(THREADS)
    info = read_model_info(model_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = mx.gluon.SymbolBlock.imports(
            str(info.symbol_file), ["data"], str(info.params_file), ctx=mx.cpu()
        )

    def run(batch: np.ndarray) -> list:
        out = []
        for t in batch:
            x = mx.nd.array(t.transpose(2, 0, 1)[None].astype(np.float32) / 255.0)
            out.append(net(x).asnumpy()[0])
        return out

    run(tiles[:8])
    benchmark.group = "predict 256 tiles of 128 px"
    benchmark.pedantic(run, args=(tiles,), rounds=1, iterations=1)  # slow: one round
    _rate(benchmark, "baseline (1 tile per call)", N_TILES)


def test_prepare_numpy(benchmark, model_dir: Path, tiles: np.ndarray) -> None:
    from prostate_fast.predict import load_model

    pred = load_model(model_dir, engine="native", batch_size=BATCH, n_threads=THREADS)
    benchmark.group = "normalise 256 tiles (shared by every engine)"
    x = benchmark(pred.prepare, tiles)
    assert x.shape == (N_TILES, 3, TILE, TILE)
    _rate(benchmark, "prepare (NumPy normalisation)", N_TILES)
