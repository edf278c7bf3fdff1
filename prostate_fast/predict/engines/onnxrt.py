"""The ``"onnx"`` engine: ONNX Runtime on the exported network (``model.onnx``).

The network is exported once (:func:`~prostate_fast.predict.engines.onnx_export.export_onnx`)
and kept beside the model; ONNX Runtime runs it on CPU, or on CUDA with ``onnxruntime-gpu`` (the
route to current GPUs, which MXNet's CUDA wheels cannot use). ``n_threads`` is set per session.
``precision="int8"`` runs the statically quantized network of :mod:`.int8` instead (made and
checked once per model, kept as ``model-int8.onnx`` with its report ``model-int8.json``);
``precision="fp16"`` the float16 network of :mod:`.fp16` (``model-fp16.onnx``, for GPUs).
"""

from __future__ import annotations

import queue
from typing import Any

import numpy as np

from ...errors import ModelError
from ...model import ModelInfo
from ...model.load import error_line
from .base import Predictor, chunks
from .onnx_export import fresh_onnx

__all__ = ["OnnxPredictor"]


class OnnxPredictor(Predictor):
    """ONNX Runtime session on ``model.onnx`` (exported on first use)."""

    engine = "onnx"

    def __init__(
        self,
        info: ModelInfo,
        device: tuple[str, int],
        batch_size: int,
        n_threads: int,
        precision: str = "fp32",
        max_auc_drop: float | None = None,
    ) -> None:
        super().__init__(info, device, batch_size, n_threads)
        self.precision = precision
        self.int8_report: dict[str, Any] | None = None
        self._twin: OnnxPredictor | None = None
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise ModelError(
                "the onnx engine needs ONNX Runtime: pip install 'prostate-fast[onnx]' "
                "(onnxruntime-gpu for CUDA)"
            ) from exc
        path = fresh_onnx(info, n_threads)
        if precision == "int8":
            from .int8 import INT8_MAX_AUC_DROP, int8_onnx

            drop = INT8_MAX_AUC_DROP if max_auc_drop is None else max_auc_drop
            path, self.int8_report = int8_onnx(info, path, n_threads, max_auc_drop=drop)
        elif precision == "fp16":
            from .fp16 import fp16_onnx

            path = fp16_onnx(info, path)
        providers = _providers(ort, device)
        # on CPU, one lane per thread: calls run side by side, each on its own thread and its
        # own session (own memory arena: lanes sharing one contend for it and take several
        # batches to warm up), instead of every layer split over the threads (which meet at
        # every layer, so a thread that predict_slide's reader preempts stalls them all).
        # Measured on 2 cores, batch 64: fp32 +3 %, int8 +10-15 % tiles/s from the engine alone.
        self.lanes = n_threads if device[0] == "cpu" else 1
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1 if self.lanes > 1 else n_threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3  # no "Initializer appears in graph inputs" warnings
        # idle worker threads (one lane: the session's own) sleep instead of spinning: the CPU
        # time they would burn is the reader's, which decodes the next batch beside the engine
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            sessions = [
                ort.InferenceSession(str(path), sess_options=opts, providers=providers)
                for _ in range(self.lanes)
            ]
        except Exception as exc:  # noqa: BLE001 - onnxruntime's own exception types
            raise ModelError(f"{path}: ONNX Runtime cannot load it: {error_line(exc)}") from exc
        self._sess = sessions[0]
        self._free: queue.SimpleQueue[Any] = queue.SimpleQueue()  # sessions not running now
        for sess in sessions:
            self._free.put(sess)
        self.onnx_path = path
        self.providers = tuple(self._sess.get_providers())
        self._input = self._sess.get_inputs()[0].name

    def fp32_twin(self) -> OnnxPredictor:
        """This model in fp32 on the same device, batch size and threads (this predictor when it
        is fp32): made on first use, closed with this one. ``predict_slide`` checks an int8
        engine against it on every slide."""
        if self.precision == "fp32":
            return self
        if self._twin is None:
            self._twin = OnnxPredictor(
                self.info, self.device, self.batch_size, self.n_threads, "fp32"
            )
        return self._twin

    def close(self) -> None:
        super().close()
        twin, self._twin = self._twin, None
        if twin is not None:
            twin.close()

    def _run(self, x: np.ndarray) -> np.ndarray:
        out = np.empty((len(x), self.info.n_classes), np.float32)
        sess = self._free.get()  # one per lane: a caller past the lanes waits for one
        try:
            for s, e in chunks(len(x), self.batch_size):
                out[s:e] = sess.run(None, {self._input: x[s:e]})[0]
        finally:
            self._free.put(sess)
        return out


def _providers(ort: Any, device: tuple[str, int]) -> list[Any]:
    """ONNX Runtime execution providers for ``device`` (ModelError: no CUDA provider for a GPU)."""
    kind, i = device
    if kind != "gpu":
        return ["CPUExecutionProvider"]
    available = ort.get_available_providers()
    if "CUDAExecutionProvider" not in available:
        raise ModelError(
            f"ONNX Runtime here has no CUDA provider (has {', '.join(available)}): "
            "install onnxruntime-gpu for ctx=gpu"
        )
    return [("CUDAExecutionProvider", {"device_id": i}), "CPUExecutionProvider"]
