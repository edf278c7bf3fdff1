"""What every engine shares: the engine names, the :class:`Predictor` interface, threads, devices.

:class:`Predictor` does the normalisation once in NumPy (:meth:`~Predictor.prepare`: channel
order, NHWC to NCHW, ``normalisation.scale``), identically for every engine, and checks the
prepared input before handing it to the engine's ``_run``.
"""

from __future__ import annotations

import os
import re
import sys
import warnings
from types import ModuleType
from typing import Any, Literal, get_args

import numpy as np

from ..._util import resolve_threads
from ...model import ModelInfo

__all__ = [
    "ENGINES",
    "PRECISIONS",
    "Engine",
    "Precision",
    "Predictor",
    "check_engine",
    "chunks",
    "lane_parts",
    "mxnet_with_threads",
    "parse_device",
    "prepare_tiles",
]

Engine = Literal["gluon", "native", "onnx"]
ENGINES: tuple[str, ...] = get_args(Engine)
"""Engine names accepted by :func:`~prostate_fast.predict.load_model` (the CLI's choices)."""
Precision = Literal["fp32", "fp16", "int8"]
PRECISIONS: tuple[str, ...] = get_args(Precision)
"""Numeric precisions: ``"fp16"`` and ``"int8"`` are the onnx engine's (int8 is calibrated once
per model, fp16 is meant for GPUs)."""


def check_engine(engine: Any, batch_size: Any, precision: Any = "fp32") -> None:
    """ValueError unless ``engine`` is one of :data:`ENGINES`, ``batch_size`` a positive
    integer and ``precision`` one of :data:`PRECISIONS` that the engine has."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision != "fp32" and engine != "onnx":
        raise ValueError(f"precision {precision!r} needs engine 'onnx', got engine {engine!r}")
    if (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, int | np.integer)
        or batch_size < 1
    ):
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")


def mxnet_with_threads(n_threads: int | None, *, warn: bool = True) -> ModuleType:
    """Import MXNet with ``n_threads`` OpenMP threads when it is not loaded yet.

    The thread count reaches MXNet (and oneDNN) through ``OMP_NUM_THREADS``, which the OpenMP
    runtime reads once, when it loads: before MXNet, or before one of our OpenMP extensions
    when one of those ran first. Call this (``load_model`` does) before any other native work.
    When MXNet is already loaded with another count, ``warn`` says so (``RuntimeWarning``).
    """
    from ..._mx import import_mxnet

    os.environ.setdefault("MXNET_SUBGRAPH_VERBOSE", "0")  # no "backend MKLDNN is activated"
    if "mxnet" not in sys.modules:
        threads = str(resolve_threads(n_threads))
        if n_threads is not None:  # an explicit request wins over the environment
            for var in ("OMP_NUM_THREADS", "MXNET_OMP_MAX_THREADS"):
                os.environ[var] = threads
    elif warn and n_threads is not None and _omp_env() not in (None, resolve_threads(n_threads)):
        warnings.warn(
            f"MXNet is already loaded with OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}; "
            f"n_threads={n_threads} cannot change MXNet's threads now",
            RuntimeWarning,
            stacklevel=3,
        )
    return import_mxnet(n_threads)


def _omp_env() -> int | None:
    try:
        return int(os.environ["OMP_NUM_THREADS"])
    except (KeyError, ValueError):
        return None


def parse_device(ctx: Any) -> tuple[str, int]:
    """``"cpu"``, ``"gpu"``, ``"gpu(1)"``, ``"gpu:1"``, ``"cuda:1"`` or an mx.Context → (kind, id).

    Raises
    ------
    ValueError
        Anything else (several devices included).
    """
    if ctx is None:
        return "cpu", 0
    if hasattr(ctx, "device_type") and hasattr(ctx, "device_id"):
        kind = str(ctx.device_type)
        return ("gpu" if kind == "gpu" else "cpu"), int(ctx.device_id)
    text = str(ctx).strip().lower().replace(" ", "")
    if text in ("", "cpu", "cpu(0)"):
        return "cpu", 0
    m = re.fullmatch(r"(?:gpu|cuda)(?:\((\d+)\)|:(\d+))?", text)
    if not m:
        raise ValueError(f"ctx must be 'cpu', 'gpu' or 'gpu(N)' (one device), got {ctx!r}")
    return "gpu", int(m.group(1) or m.group(2) or 0)


def prepare_tiles(info: ModelInfo, tiles: np.ndarray) -> np.ndarray:
    """uint8 (n, T, T, 3) RGB → float32 (n, 3, T, T) network input (channel order, scale); the
    kernel of :meth:`Predictor.prepare`, which checks ``tiles``."""
    t = info.tile_size
    src = tiles[..., ::-1] if info.channel_order == "BGR" else tiles
    x = np.empty((len(tiles), 3, t, t), np.float32)
    x[...] = src.transpose(0, 3, 1, 2)
    x *= np.float32(info.scale)
    return x


def chunks(n: int, size: int) -> list[tuple[int, int]]:
    """``[(start, end), ...]`` covering ``range(n)`` in pieces of ``size`` (the last shorter)."""
    return [(s, min(s + size, n)) for s in range(0, n, size)]


#: Fewest tiles one lane is given when a batch is shared out (smaller parts cost more in calls
#: than they gain in parallelism).
MIN_LANE_PART = 8


def lane_parts(n: int, lanes: int) -> list[tuple[int, int]]:
    """``[(start, end), ...]``: ``range(n)`` shared out over at most ``lanes`` nearly equal parts
    of at least :data:`MIN_LANE_PART` (one part when ``n`` is smaller)."""
    k = max(1, min(lanes, n // MIN_LANE_PART))
    edges = [n * i // k for i in range(k + 1)]
    return [(edges[i], edges[i + 1]) for i in range(k) if edges[i + 1] > edges[i]]


class Predictor:
    """A loaded model bound to one engine and device.

    Use :func:`~prostate_fast.predict.load_model` to make one. :meth:`predict_batch` is the
    whole interface: uint8 RGB tiles in, float32 class probabilities out. :meth:`prepare`
    (NumPy, thread-safe) and :meth:`run` (the engine) are its two halves, so a reader thread can
    prepare batch k + 1 while batch k runs. :meth:`run` is not meant to be called from several
    threads at once (the native engine serialises such calls, Gluon's buffers are shared): use
    one Predictor per thread.

    Lanes: an engine with :attr:`lanes` > 1 runs that many calls at once, each on one thread of
    its own (the onnx engine on CPU: one lane per thread, batch parallelism instead of splitting
    every layer over the threads, which synchronises the threads at every layer). :meth:`run`
    then shares each batch out over the lanes (:func:`lane_parts`), and :meth:`run_lane` runs
    one part on the calling thread (thread-safe), so ``predict_slide`` can keep every lane busy
    with no wait between batches.

    Attributes
    ----------
    info : ModelInfo
    engine : str
    precision : str
        ``"fp32"`` or ``"int8"`` (:data:`PRECISIONS`).
    device : (str, int)
        ("cpu" or "gpu", device id).
    batch_size : int
        Samples per engine call (the last batch is padded where the engine needs a fixed shape).
    n_threads : int
        Threads the engine was asked to use.
    lanes : int
        Engine calls that may run at once (1: one call at a time, over the engine's threads).
    """

    engine: str = ""
    precision: str = "fp32"
    lanes: int = 1
    _lane_pool: Any = None

    def __init__(
        self, info: ModelInfo, device: tuple[str, int], batch_size: int, n_threads: int
    ) -> None:
        self.info = info
        self.device = device
        self.batch_size = batch_size
        self.n_threads = n_threads

    @property
    def classes(self) -> tuple[str, ...]:
        """Class names (index 0 is the negative class)."""
        return self.info.classes

    def prepare(self, tiles: np.ndarray) -> np.ndarray:
        """uint8 (n, T, T, 3) RGB tiles → float32 (n, 3, T, T) network input (normalised).

        Raises
        ------
        ValueError
            Not a uint8 (n, T, T, 3) array with the model's tile size T.
        """
        tiles = np.asarray(tiles)
        t = self.info.tile_size
        if tiles.dtype != np.uint8:
            raise ValueError(f"tiles must be uint8, got {tiles.dtype}")
        if tiles.ndim != 4 or tiles.shape[1:] != (t, t, 3):
            raise ValueError(f"tiles must have shape (n, {t}, {t}, 3), got {tiles.shape}")
        return prepare_tiles(self.info, tiles)

    def run(self, x: np.ndarray) -> np.ndarray:
        """float32 (n, 3, T, T) prepared input → float32 (n, n_classes) probabilities (on every
        lane: the batch shared out over them)."""
        x = self._checked(x)
        parts = lane_parts(len(x), self.lanes)
        if len(parts) < 2:
            return self._run(x) if len(x) else self._empty()
        if self._lane_pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._lane_pool = ThreadPoolExecutor(self.lanes, thread_name_prefix="pf-lane")
        out = np.empty((len(x), self.info.n_classes), np.float32)
        futures = [(s, e, self._lane_pool.submit(self._run, x[s:e])) for s, e in parts]
        for s, e, f in futures:
            out[s:e] = f.result()
        return out

    def run_lane(self, x: np.ndarray) -> np.ndarray:
        """:meth:`run` on one lane: on the calling thread alone (engines with :attr:`lanes` > 1;
        with one lane, the same as :meth:`run`). Thread-safe when :attr:`lanes` > 1."""
        if self.lanes < 2:
            return self.run(x)
        x = self._checked(x)
        return self._run(x) if len(x) else self._empty()

    def _checked(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        t = self.info.tile_size
        if x.ndim != 4 or x.shape[1:] != (3, t, t):
            raise ValueError(f"x must have shape (n, 3, {t}, {t}), got {x.shape}")
        return x

    def _empty(self) -> np.ndarray:
        return np.zeros((0, self.info.n_classes), np.float32)

    def predict_batch(self, tiles: np.ndarray) -> np.ndarray:
        """Class probabilities of uint8 RGB tiles.

        Parameters
        ----------
        tiles : numpy.ndarray
            uint8 (n, T, T, 3), RGB, T = the model's tile size; any n (run in chunks of
            ``batch_size``).

        Returns
        -------
        numpy.ndarray
            float32 (n, n_classes); rows sum to 1.
        """
        return self.run(self.prepare(tiles))

    def _run(self, x: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def close(self) -> None:
        """Release the engine's resources (idempotent)."""
        pool, self._lane_pool = self._lane_pool, None
        if pool is not None:
            pool.shutdown(wait=True)

    def __enter__(self) -> Predictor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        kind, i = self.device
        return (
            f"<{type(self).__name__} {self.info.model_dir} engine={self.engine} "
            f"device={kind}({i}) precision={self.precision} batch={self.batch_size} "
            f"threads={self.n_threads} lanes={self.lanes}>"
        )
