"""The int8 precision of the ``"onnx"`` engine: static quantization, calibrated and checked once.

:func:`int8_onnx` turns ``model.onnx`` into ``model-int8.onnx`` (ONNX Runtime's QOperator form,
see :mod:`._qgraph`: batch norm folded into the convolutions first; ``QLinearConv`` with
per-output-channel int8 weights and uint8 activations, input channels padded to fours for MLAS's
direct int8 kernel, a ReLU after a convolution or a residual ``QLinearAdd`` folded into its output
range; max pooling, flattening and global average pooling kept in uint8; ``QGemm`` for a dense
layer on uint8 input, with float output; everything else in float32). Activation ranges are the
minimum and maximum over up to :data:`CALIBRATION_TILES` tiles spread over the model's own
validation split (``model.json``'s ``training.dataset``, read with
:func:`prostate_fast.dataset.read_records`). The whole validation split is then scored in fp32 and
in int8, and ``model-int8.json`` beside the network records the change: ROC AUC of each (the
screening score of :func:`prostate_fast.metrics.screening_labels`), the tiles whose decision at
the model's thresholds changes, the largest probability difference. When the dense layers in
int8 lose more than :data:`INT8_MAX_AUC_DROP` of AUC (a network whose probabilities differ by
less than int8's step, as an undertrained one), they are kept in fp32 (``"dense_layers"``), and
the version with the smaller drop is kept.

Both files are made once and reused while ``model.onnx`` is the one they were made from (its
SHA-256 is recorded). A model whose AUC drops by more than ``max_auc_drop``
(:data:`INT8_MAX_AUC_DROP`, 0.005) is refused at every load, with the numbers in the message.

Why the package writes the graph itself: ONNX Runtime's quantizer (``onnxruntime.quantization``,
1.32) imports ``ml_dtypes`` and needs ``onnx>=1.16`` (``TensorProto.INT4``), while MXNet 1.9's
exporter needs ``onnx<1.15`` (``onnx.mapping``). The graph here uses only ``onnx.helper`` of
onnx 1.14 and operators ONNX Runtime has had for years, so the ``onnx`` extra stays as it is.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ..._util import atomic_path
from ...errors import ModelError
from ...model import ModelInfo
from .base import prepare_tiles

__all__ = ["CALIBRATION_TILES", "INT8_MAX_AUC_DROP", "int8_onnx"]

#: Largest ROC AUC drop from fp32 to int8 on the validation split that is accepted.
INT8_MAX_AUC_DROP = 0.005
#: Validation tiles (spread evenly over the split) whose activations set the int8 ranges.
CALIBRATION_TILES = 256
INT8_ONNX = "model-int8.onnx"
INT8_REPORT = "model-int8.json"
_BATCH = 64


def int8_onnx(
    info: ModelInfo, fp32: Path, n_threads: int, *, max_auc_drop: float = INT8_MAX_AUC_DROP
) -> tuple[Path, dict[str, Any]]:
    """The int8 network of a model folder and its report, made on first use (see the module).

    Parameters
    ----------
    info : ModelInfo
    fp32 : path
        The float32 network (``model.onnx``).
    n_threads : int
        ONNX Runtime threads for calibration and scoring.
    max_auc_drop : float
        Largest accepted AUC drop from fp32 to int8 on the validation split.

    Returns
    -------
    (pathlib.Path, dict)
        ``model-int8.onnx`` and the contents of ``model-int8.json``.

    Raises
    ------
    ModelError
        The validation split is needed (no cache) but gone or unreadable, its AUC is undefined
        (one class), or the AUC drops by more than ``max_auc_drop``.
    """
    if isinstance(max_auc_drop, bool) or not isinstance(max_auc_drop, int | float):
        raise ValueError(f"max_auc_drop must be a number >= 0, got {max_auc_drop!r}")
    if not max_auc_drop >= 0:
        raise ValueError(f"max_auc_drop must be a number >= 0, got {max_auc_drop!r}")
    folder = info.model_dir
    if not os.access(folder, os.W_OK):  # made anew each time in a temporary folder
        folder = Path(tempfile.mkdtemp(prefix="prostate-fast-int8-"))
    source = _sha256(fp32)
    report = _cached(folder, source)
    if report is None:
        report = _make(info, fp32, source, folder, n_threads)
    drop = float(report["auc_fp32"]) - float(report["auc_int8"])
    if drop > max_auc_drop:
        raise ModelError(
            f"{folder / INT8_REPORT}: int8 refused: validation AUC drops by {drop:.4f} "
            f"({report['auc_fp32']:.4f} -> {report['auc_int8']:.4f}), more than {max_auc_drop:g}"
            "; use fp32"
        )
    return folder / INT8_ONNX, report


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _cached(folder: Path, source: str) -> dict[str, Any] | None:
    """The report when both files are there, complete and made from ``source``; else None
    (stale files of ours are removed)."""
    rep, net = folder / INT8_REPORT, folder / INT8_ONNX
    try:
        report = json.loads(rep.read_text(encoding="utf-8"))
        ours = isinstance(report, dict) and report.get("prostate_fast") == "int8 calibration"
        intact = ours and net.is_file() and _sha256(net) == report.get("int8_sha256")
    except (OSError, ValueError):
        return None
    if intact and report.get("source_sha256") == source:
        return report
    if intact:  # made from an older model.onnx: ours, replace both
        net.unlink()
        rep.unlink()
    return None


def _validation_tiles(info: ModelInfo) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (n, T, T, 3) tiles and int64 labels of the model's validation split."""
    from ...dataset import load_dataset_info, read_records
    from ...errors import DatasetError

    where = info.model_dir / "model.json"
    training = info.meta.get("training")
    path = training.get("dataset") if isinstance(training, dict) else None
    if not isinstance(path, str):
        raise ModelError(
            f"{where}: records no training dataset; int8 needs its validation tiles to calibrate"
        )
    try:
        ds = load_dataset_info(path)
        if list(ds.classes) != list(info.classes) or ds.tile_size != info.tile_size:
            raise ModelError(f"{path}: classes or tile size differ from {where}'s")
        recs = list(read_records(path, "val"))
    except (DatasetError, OSError) as exc:
        raise ModelError(
            f"{where}: int8 calibration needs the validation split of the training dataset "
            f"{path}, which cannot be read ({str(exc).splitlines()[0]})"
        ) from None
    if not recs:
        raise ModelError(f"{path}: the validation split is empty; int8 cannot be calibrated")
    tiles = np.stack([r[1] for r in recs])
    return tiles, np.array([r[2] for r in recs], np.int64)


def _session(ort: Any, model: str | bytes, n_threads: int) -> Any:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = n_threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"])


def _scores(sess: Any, x: np.ndarray) -> np.ndarray:
    name = sess.get_inputs()[0].name
    return np.concatenate(
        [sess.run(None, {name: x[s : s + _BATCH]})[0] for s in range(0, len(x), _BATCH)]
    )


def _make(info: ModelInfo, fp32: Path, source: str, folder: Path, n_threads: int) -> dict:
    """Calibrate, quantize, score both on the validation split, write both files."""
    import onnx
    import onnxruntime as ort

    from ._qgraph import calibrate, fold_batchnorm, quantize

    tiles, labels = _validation_tiles(info)
    x = prepare_tiles(info, tiles)
    model = fold_batchnorm(onnx, onnx.load(str(fp32)))
    pick = np.unique(np.linspace(0, len(x) - 1, min(CALIBRATION_TILES, len(x))).astype(int))
    ranges = calibrate(onnx, model, lambda m: _session(ort, m, n_threads), x[pick], _BATCH)
    p32 = _scores(_session(ort, str(fp32), n_threads), x)
    best: tuple[bytes, dict[str, Any]] | None = None
    for dense in (True, False):  # dense layers in fp32 only when int8 ones lose accuracy
        q_bytes = quantize(onnx, model, ranges, dense=dense).SerializeToString()
        p8 = _scores(_session(ort, q_bytes, n_threads), x)
        change = _change(info, labels, p32, p8) | {"dense_layers": "int8" if dense else "fp32"}
        if best is None or change["auc_drop"] < best[1]["auc_drop"]:
            best = q_bytes, change
        if change["auc_drop"] <= INT8_MAX_AUC_DROP:
            break
    assert best is not None
    q_bytes, change = best
    report = {
        "prostate_fast": "int8 calibration",
        "quantization": "static QOperator: int8 per-channel weights, uint8 activations (min/max)",
        "source_sha256": source,
        "int8_sha256": hashlib.sha256(q_bytes).hexdigest(),
        "calibration_tiles": len(pick),
        "validation_tiles": len(x),
        **change,
    }
    # the report first: a run killed between the two leaves a report without its network, which
    # is not reused and is ours to replace (the network is not marked as ours by its bytes)
    with atomic_path(folder / INT8_REPORT, overwrite=True) as tmp:
        tmp.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    with atomic_path(folder / INT8_ONNX, overwrite=False) as tmp:
        tmp.write_bytes(q_bytes)
        os.chmod(tmp, 0o644)
    return report


def _change(info: ModelInfo, labels: np.ndarray, p32: np.ndarray, p8: np.ndarray) -> dict:
    """AUC of both, decisions changed at the model's thresholds, largest probability change."""
    from ...metrics import roc_auc, screening_labels
    from ..scoregrid import decide

    aucs = [roc_auc(*screening_labels(labels, p, info.classes)) for p in (p32, p8)]
    if any(np.isnan(a) for a in aucs):
        raise ModelError(
            f"{info.model_dir / 'model.json'}: the validation split has one class only: "
            "the AUC that int8 is checked by is undefined"
        )
    thr = np.array([info.thresholds[c] for c in info.classes[1:]], np.float32)
    changed = int(np.count_nonzero(decide(p32, thr) != decide(p8, thr)))
    return {
        "auc_fp32": aucs[0],
        "auc_int8": aucs[1],
        "auc_drop": aucs[0] - aucs[1],
        "thresholds": {c: float(info.thresholds[c]) for c in info.classes[1:]},
        "decisions_changed": changed,
        "decisions_changed_share": changed / len(p32),
        "max_abs_prob_diff": float(np.abs(p32 - p8).max()),
    }
