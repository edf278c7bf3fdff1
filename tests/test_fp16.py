"""The fp16 precision of the onnx engine: float16 weights, float32 in and out, made once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from _tiny_model import make_model  # noqa: E402


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_model(tmp_path_factory.mktemp("fp16") / "m", tile_size=32)


def test_fp16_agrees_with_fp32_and_is_cached(model_dir: Path) -> None:
    import onnx

    from prostate_fast.predict import load_model

    tiles = np.random.default_rng(0).integers(0, 256, (10, 32, 32, 3), dtype=np.uint8)
    p32 = load_model(model_dir, engine="onnx", n_threads=2).predict_batch(tiles)
    pred = load_model(model_dir, engine="onnx", precision="fp16", n_threads=2)
    assert pred.onnx_path == model_dir / "model-fp16.onnx"
    p16 = pred.predict_batch(tiles)
    assert p16.dtype == np.float32 and p16.shape == p32.shape
    assert np.abs(p16 - p32).max() < 5e-3
    m = onnx.load(str(pred.onnx_path))
    weights = [i for i in m.graph.initializer if i.name.endswith("_weight")]
    assert weights and all(i.data_type == onnx.TensorProto.FLOAT16 for i in weights)
    mtime = pred.onnx_path.stat().st_mtime_ns
    load_model(model_dir, engine="onnx", precision="fp16", n_threads=2)
    assert pred.onnx_path.stat().st_mtime_ns == mtime  # reused, not made again


def test_fp16_needs_onnx(model_dir: Path) -> None:
    from prostate_fast.predict import load_model

    with pytest.raises(ValueError, match="'fp16' needs engine 'onnx'"):
        load_model(model_dir, engine="native", precision="fp16")
