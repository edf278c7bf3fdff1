"""The ``"gluon"`` engine: the model's ``SymbolBlock`` hybridized with a static graph.

The network comes from :func:`prostate_fast.model.load_network` (the one Gluon loader). On CPU
the MKLDNN backend is tried first and kept when the wheel has it; batches are padded to
``batch_size`` because a static graph has one input shape.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from ...model import ModelInfo, load_network
from .base import Predictor, chunks, mxnet_with_threads

__all__ = ["GluonPredictor"]


class GluonPredictor(Predictor):
    """``SymbolBlock`` hybridized with a static graph; batches padded to ``batch_size``."""

    engine = "gluon"

    def __init__(
        self, info: ModelInfo, device: tuple[str, int], batch_size: int, n_threads: int
    ) -> None:
        super().__init__(info, device, batch_size, n_threads)
        mx = mxnet_with_threads(n_threads)
        kind, i = device
        self._ctx = mx.gpu(i) if kind == "gpu" else mx.cpu()
        net = load_network(info, self._ctx)
        t = info.tile_size
        probe = mx.nd.zeros((batch_size, 3, t, t), ctx=self._ctx)
        self.backend = _hybridize(net, probe, mkldnn=kind == "cpu")
        self._net = net
        self._buf = np.zeros((batch_size, 3, t, t), np.float32)
        self._input = mx.nd.zeros((batch_size, 3, t, t), ctx=self._ctx, dtype=np.float32)

    def _run(self, x: np.ndarray) -> np.ndarray:
        out = np.empty((len(x), self.info.n_classes), np.float32)
        for s, e in chunks(len(x), self.batch_size):
            k = e - s
            if k == self.batch_size:
                batch = x[s:e]
            else:  # the static graph has a fixed shape: pad
                self._buf[:k] = x[s:e]
                self._buf[k:] = 0.0
                batch = self._buf
            self._input[:] = batch  # one device buffer, refilled (static_shape graph)
            out[s:e] = self._net(self._input).asnumpy()[:k]
        return out


def _hybridize(net: Any, probe: Any, *, mkldnn: bool) -> str | None:
    """Hybridize ``net`` with a static graph (MKLDNN first if asked), run ``probe``; the backend."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Cannot decide type for the following arguments"
        for backend in ("MKLDNN", None) if mkldnn else (None,):
            try:
                kw = {"backend": backend} if backend else {}
                net.hybridize(static_alloc=True, static_shape=True, **kw)
                net(probe).wait_to_read()
                return backend
            except Exception:  # noqa: BLE001 - no MKLDNN in this wheel: plain static graph
                if backend is None:
                    raise
    return None  # pragma: no cover - the loop returns or raises
