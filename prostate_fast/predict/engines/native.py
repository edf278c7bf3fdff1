"""The ``"native"`` engine: ``prostate_fast._native.MxPredictor`` on MXNet's C predict API.

The C++ class loads the ``libmxnet.so`` of the installed mxnet package at run time (``dlopen``),
so the package builds without MXNet's headers and runs with CPU and CUDA wheels alike. It
releases the GIL while it runs, so tile reading in another thread overlaps with inference.
Every live handle is freed at exit before MXNet's own shutdown.
"""

from __future__ import annotations

import atexit
import threading
import weakref

import numpy as np

from ...errors import ModelError
from ...model import ModelInfo
from ...model.load import error_line
from .base import Predictor, mxnet_with_threads

__all__ = ["NativePredictor"]

_LIVE_NATIVE: weakref.WeakSet[NativePredictor] = weakref.WeakSet()
_ATEXIT_LOCK = threading.Lock()
_ATEXIT_DONE = False


def _close_native() -> None:
    """Free every native handle before MXNet's own atexit shutdown (atexit runs LIFO)."""
    for p in list(_LIVE_NATIVE):
        p.close()


def _register_atexit() -> None:
    """Register :func:`_close_native` once; after ``import mxnet``, so it runs before MXNet's."""
    global _ATEXIT_DONE
    with _ATEXIT_LOCK:
        if not _ATEXIT_DONE:
            atexit.register(_close_native)
            _ATEXIT_DONE = True


class NativePredictor(Predictor):
    """``prostate_fast._native.MxPredictor``: MXNet's C predict API, GIL released while running."""

    engine = "native"

    def __init__(
        self,
        info: ModelInfo,
        device: tuple[str, int],
        batch_size: int,
        n_threads: int,
        symbol_json: str,
        params_bytes: bytes,
    ) -> None:
        super().__init__(info, device, batch_size, n_threads)
        mx = mxnet_with_threads(
            n_threads
        )  # loads libmxnet with the thread settings; dlopen reuses it
        from ... import _native

        libs = mx.libinfo.find_lib_path()
        if not libs:
            raise ModelError("mxnet.libinfo.find_lib_path() found no libmxnet.so")
        self.lib_path = str(libs[0])
        kind, i = device
        t = info.tile_size
        _register_atexit()
        try:
            self._pred = _native.MxPredictor(
                self.lib_path,
                symbol_json,
                params_bytes,
                (batch_size, 3, t, t),
                2 if kind == "gpu" else 1,
                i,
                info.input_name,
            )
        except (RuntimeError, ValueError) as exc:
            raise ModelError(
                f"{info.model_dir}: the native engine cannot load the model: {error_line(exc)}"
            ) from exc
        if self._pred.output_size != info.n_classes:  # pragma: no cover - checked before
            raise ModelError(f"{info.model_dir}: class count mismatch in the native engine")
        _LIVE_NATIVE.add(self)

    def _run(self, x: np.ndarray) -> np.ndarray:
        try:
            return self._pred.predict(x)
        except RuntimeError as exc:
            raise ModelError(f"{self.info.model_dir}: native engine: {exc}") from exc

    def close(self) -> None:
        super().close()
        self._pred.close()
