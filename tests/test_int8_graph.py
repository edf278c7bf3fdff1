"""The int8 graph itself (:mod:`prostate_fast.predict.engines._qgraph`): which operators run in
int8, where the graph changes form, and that each rewrite keeps the function."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _tiny_model import make_model

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from prostate_fast.predict.engines import _qgraph  # noqa: E402
from prostate_fast.predict.engines.int8 import _session  # noqa: E402
from prostate_fast.predict.engines.onnx_export import export_onnx  # noqa: E402

TILE = 32


def _fp32(tmp: Path, network: str) -> object:
    return onnx.load(str(export_onnx(make_model(tmp / network, tile_size=TILE, network=network))))


@pytest.fixture(scope="module")
def x() -> np.ndarray:
    return np.random.default_rng(1).random((48, 3, TILE, TILE), np.float32)


def _run(model: object, x: np.ndarray) -> np.ndarray:
    sess = _session(ort, model.SerializeToString(), 2)
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def _int8(model: object, x: np.ndarray) -> object:
    model = _qgraph.fold_batchnorm(onnx, model)
    ranges = _qgraph.calibrate(onnx, model, lambda m: _session(ort, m, 2), x, 16)
    return _qgraph.quantize(onnx, model, ranges)


def _producers(model: object) -> dict[str, object]:
    return {o: n for n in model.graph.node for o in n.output}


def test_study_graph_int8_where_it_pays(tmp_path, x) -> None:
    fp32 = _fp32(tmp_path, "study")
    q = _int8(fp32, x)
    nodes, made_by = list(q.graph.node), _producers(q)
    weights = {i.name: i.dims for i in q.graph.initializer}
    convs = [n for n in nodes if n.op_type == "QLinearConv"]
    assert len(convs) == 2 and not [n for n in nodes if n.op_type in ("Conv", "Relu")]
    # input channels in fours (MLAS's direct int8 kernel): the RGB input gets a zero-point channel
    assert all(weights[c.input[3]][1] % _qgraph.CHANNEL_ALIGN == 0 for c in convs)
    assert made_by[convs[0].input[0]].op_type == "Pad"
    # max pooling runs on the convolution's uint8 output: no dequantize/quantize around it
    for pool in (n for n in nodes if n.op_type == "MaxPool"):
        assert made_by[pool.input[0]].op_type == "QLinearConv"
    # the first dense layer (uint8 input) is int8; those on sigmoid outputs stay float32
    gemms = [n for n in nodes if n.op_type in ("QGemm", "Gemm")]
    assert [n.op_type for n in gemms] == ["QGemm", "Gemm", "Gemm", "Gemm"]
    assert sum(n.op_type == "QuantizeLinear" for n in nodes) == 1  # the network input only
    assert np.abs(_run(q, x) - _run(fp32, x)).max() < 0.05


def test_channel_padding_is_exact(tmp_path, x, monkeypatch) -> None:
    fp32 = _fp32(tmp_path, "study")
    padded = _run(_int8(fp32, x), x)
    monkeypatch.setattr(_qgraph, "CHANNEL_ALIGN", 1)
    plain = _int8(fp32, x)
    assert "Pad" not in {n.op_type for n in plain.graph.node}
    np.testing.assert_array_equal(padded, _run(plain, x))


def test_resnet_batchnorm_folded_and_fused(tmp_path, x) -> None:
    fp32 = _fp32(tmp_path, "resnet10")
    assert "BatchNormalization" in {n.op_type for n in fp32.graph.node}
    folded = _qgraph.fold_batchnorm(onnx, fp32)
    assert "BatchNormalization" not in {n.op_type for n in folded.graph.node}
    np.testing.assert_allclose(_run(folded, x), _run(fp32, x), atol=1e-5)
    q = _int8(fp32, x)
    ops = [n.op_type for n in q.graph.node]
    assert {"QLinearAdd", "QLinearGlobalAveragePool", "QGemm"} <= set(ops)
    float_ops = {"Conv", "BatchNormalization", "Relu", "Add", "GlobalAveragePool", "Gemm"}
    assert not float_ops & set(ops) and "DequantizeLinear" not in ops
    assert ops.count("QuantizeLinear") == 1
    assert np.abs(_run(q, x) - _run(fp32, x)).max() < 0.05
