"""Export a model folder's network to ONNX (``model.onnx``), for the ``"onnx"`` engine.

:func:`export_onnx` runs MXNet's exporter (``mx.onnx.export_model``, which needs ``onnx<1.15``)
atomically and drops the parameters from the graph inputs, so that ONNX Runtime folds them as
constants. The onnx engine calls :func:`fresh_onnx`, which reuses ``model.onnx`` while it is newer
than the network files.
"""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..._util import atomic_path
from ...errors import ModelError
from ...model import ModelInfo, check_network, read_model_info
from ...model.load import error_line
from .base import mxnet_with_threads

__all__ = ["export_onnx", "fresh_onnx"]


def fresh_onnx(info: ModelInfo, n_threads: int | None) -> Path:
    """``model.onnx`` if it is newer than the symbol and params files, else a new export."""
    path = info.onnx_file
    try:
        newest = max(info.symbol_file.stat().st_mtime, info.params_file.stat().st_mtime)
        if path.is_file() and path.stat().st_mtime >= newest:
            return path
    except OSError:
        pass
    return export_onnx(info.model_dir, n_threads=n_threads, overwrite=True)


def export_onnx(
    model_dir: str | os.PathLike[str],
    *,
    out: str | os.PathLike[str] | None = None,
    batch: int | None = None,
    n_threads: int | None = None,
    overwrite: bool = False,
) -> Path:
    """Export a model folder's network to ONNX (``mx.onnx.export_model``), atomically.

    Parameters
    ----------
    model_dir : path
        A model folder (see :func:`~prostate_fast.model.read_model_info`).
    out : path, optional
        Output file (default ``MODEL_DIR/model.onnx``).
    batch : int, optional
        Fixed batch size; default None exports a dynamic batch axis (any batch size).
    n_threads : int, optional
        MXNet threads, when this call loads MXNet.
    overwrite : bool
        Replace an existing file; otherwise ``FileExistsError``.

    Returns
    -------
    pathlib.Path
        The ONNX file. When ``out`` is not given and the model folder is not writable, the file
        is written to a temporary folder instead (and is not reused next time).

    Raises
    ------
    ModelError
        A bad model folder (see :func:`~prostate_fast.predict.load_model`), or no ONNX exporter
        (MXNet's needs ``onnx<1.15``).
    FileExistsError
        ``out`` exists and ``overwrite`` is false.

    Notes
    -----
    The network's parameters become ONNX initializers and are not listed as graph inputs, so
    ONNX Runtime applies its constant folding. Takes about a second for the study network.
    """
    info = read_model_info(model_dir)
    if batch is not None and (isinstance(batch, bool) or not isinstance(batch, int) or batch < 1):
        raise ValueError(f"batch must be None or a positive integer, got {batch!r}")
    mxnet_with_threads(n_threads, warn=False)
    check_network(info)
    try:
        import onnx
        from mxnet import onnx as mx_onnx
    except ImportError as exc:
        raise ModelError(
            "ONNX export needs the onnx package (<1.15 for MXNet 1.9): pip install "
            "'prostate-fast[onnx]'"
        ) from exc
    target = Path(out) if out is not None else info.onnx_file
    if out is None and not os.access(info.model_dir, os.W_OK):
        target = Path(tempfile.mkdtemp(prefix="prostate-fast-onnx-")) / "model.onnx"
    with atomic_path(target, overwrite=overwrite) as tmp:
        _run_exporter(mx_onnx, info, tmp, batch)
        _drop_initializer_inputs(onnx, tmp)
        os.chmod(tmp, 0o644)
    return target


def _run_exporter(mx_onnx: Any, info: ModelInfo, tmp: Path, batch: int | None) -> None:
    """MXNet's exporter to ``tmp``, quietly; a dynamic batch axis when ``batch`` is None."""
    t = info.tile_size
    shape = (batch or 1, 3, t, t)
    level = logging.getLogger().level
    logging.getLogger().setLevel(logging.WARNING)  # the exporter logs every node at INFO
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # onnx.mapping, used by MXNet
            mx_onnx.export_model(
                str(info.symbol_file),
                str(info.params_file),
                [shape],
                [np.float32],
                str(tmp),
                dynamic=batch is None,
                dynamic_input_shapes=[(None, 3, t, t)] if batch is None else None,
            )
    except Exception as exc:  # noqa: BLE001
        raise ModelError(f"{info.model_dir}: ONNX export failed: {error_line(exc)}") from exc
    finally:
        logging.getLogger().setLevel(level)


def _drop_initializer_inputs(onnx: Any, path: Path) -> None:
    """Remove the initializers from the graph inputs (so ONNX Runtime folds them), in place."""
    model = onnx.load(str(path))
    names = {init.name for init in model.graph.initializer}
    keep = [i for i in model.graph.input if i.name not in names]
    if len(keep) != len(model.graph.input):
        del model.graph.input[:]
        model.graph.input.extend(keep)
        onnx.save(model, str(path))
