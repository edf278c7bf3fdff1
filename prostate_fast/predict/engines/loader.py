""":func:`load_model`: check a model folder once and bind it to an engine and a device."""

from __future__ import annotations

import os
from typing import Any

from ..._util import resolve_threads
from ...model import check_network, read_model_info
from .base import Engine, Precision, Predictor, check_engine, mxnet_with_threads, parse_device
from .gluon import GluonPredictor
from .native import NativePredictor
from .onnxrt import OnnxPredictor

__all__ = ["load_model"]


def load_model(
    model_dir: str | os.PathLike[str],
    *,
    engine: Engine | str = "gluon",
    ctx: Any = "cpu",
    batch_size: int = 64,
    n_threads: int | None = None,
    precision: Precision | str = "fp32",
    max_auc_drop: float | None = None,
) -> Predictor:
    """Load a model folder once and bind it to an engine and a device.

    Parameters
    ----------
    model_dir : path
        Folder written by training: ``model-symbol.json``, ``model-NNNN.params``, ``model.json``
        (and optionally ``model.onnx``).
    engine : {"gluon", "native", "onnx"}
        ``"gluon"``: MXNet Gluon ``SymbolBlock``; ``"native"``: the C++ engine on MXNet's C
        predict API (GIL released); ``"onnx"``: ONNX Runtime on the exported network
        (``model.onnx`` is written on first use).
    ctx : str or mxnet.Context
        ``"cpu"`` or ``"gpu(N)"``. MXNet engines need an MXNet build that sees the GPU; the onnx
        engine needs ``onnxruntime-gpu``.
    batch_size : int
        Tiles per engine call (default 64). Gluon and native pad the last batch to this size.
    n_threads : int, optional
        CPU threads (None = every core). MXNet takes it only if it is not loaded yet.
    precision : {"fp32", "fp16", "int8"}
        ``"fp16"`` (onnx engine only): float16 weights and compute, float32 in and out, made on
        first use as ``model-fp16.onnx`` (for GPUs; see :mod:`prostate_fast.predict.engines.fp16`).
        ``"int8"`` (onnx engine only): the network quantized statically, calibrated on the
        model's own validation split (``model.json``'s ``training.dataset``), made on first use
        and cached beside the model as ``model-int8.onnx`` with its accuracy change against fp32
        in ``model-int8.json`` (see :mod:`prostate_fast.predict.engines.int8`).
    max_auc_drop : float, optional
        int8 only: the largest accepted validation AUC drop from fp32 (default 0.005).

    Returns
    -------
    Predictor

    Raises
    ------
    ValueError
        Unknown engine, bad ``ctx``, ``batch_size`` or ``n_threads``.
    ModelError
        Missing or malformed files (the message names the file), a corrupt params file, a class
        count mismatch between ``model.json`` and the network, a GPU that the engine cannot use,
        or a missing MXNet / ONNX Runtime. int8: no cached network and no readable validation
        split, or an AUC drop over ``max_auc_drop`` (one line with the numbers).

    Notes
    -----
    Every engine reads the symbol and parameters once to check them
    (:func:`prostate_fast.model.check_network`, about 0.2 s for the study network), so a damaged
    model fails here, with the same message for every engine.
    """
    check_engine(engine, batch_size, precision)
    threads = resolve_threads(n_threads)
    device = parse_device(ctx)
    info = read_model_info(model_dir)
    mxnet_with_threads(n_threads, warn=engine != "onnx")
    if device[0] == "gpu" and engine != "onnx":
        from ..._mx import parse_context

        parse_context(f"gpu({device[1]})")  # ModelError when this MXNet sees no such GPU
    symbol_json, params_bytes = check_network(info)
    batch = int(batch_size)
    if engine == "gluon":
        return GluonPredictor(info, device, batch, threads)
    if engine == "native":
        return NativePredictor(info, device, batch, threads, symbol_json, params_bytes)
    return OnnxPredictor(info, device, batch, threads, str(precision), max_auc_drop)
