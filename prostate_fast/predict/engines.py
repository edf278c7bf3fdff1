"""Load a trained model folder and run it on tiles with one of three engines.

A model folder (written by :func:`prostate_fast.train.train`) holds ``model-symbol.json``,
``model-NNNN.params`` and ``model.json`` (classes, colours, tile size, scale, normalisation,
threshold; see :class:`ModelInfo`), and optionally ``model.onnx``. :func:`load_model` checks all of
it once, whatever the engine, and returns a :class:`Predictor` whose
:meth:`~Predictor.predict_batch` maps uint8 RGB tiles ``(n, T, T, 3)`` to float32 class
probabilities ``(n, n_classes)``:

* ``"gluon"``: ``mxnet.gluon.SymbolBlock`` on the requested context, hybridized with a static
  graph (and the MKLDNN backend on CPU when the wheel has it), batches padded to a fixed size.
* ``"native"``: the C++ engine ``prostate_fast._native.MxPredictor`` on MXNet's C predict API,
  with the ``libmxnet.so`` of the installed mxnet package loaded at run time (so the package builds
  without MXNet's headers and runs with CPU and CUDA wheels alike). It releases the GIL while it
  runs, so tile reading in another thread overlaps with inference.
* ``"onnx"``: the network exported to ONNX (:func:`export_onnx`, done once and kept as
  ``model.onnx``) and run by ONNX Runtime: CPU, or CUDA with ``onnxruntime-gpu`` (the route to
  current GPUs, which MXNet's CUDA wheels cannot use).

The normalisation (``model.json``'s ``normalisation.scale``, channel order, NHWC to NCHW) is done
once in NumPy by :meth:`Predictor.prepare`, identically for every engine, so the engines agree
to float rounding (about 1e-7 here).

Threads: MXNet's OpenMP thread count is fixed when MXNet loads. ``n_threads`` given before that is
applied (``OMP_NUM_THREADS``), otherwise every core is used, never MXNet's default of half the
cores; ONNX Runtime takes ``n_threads`` per session.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import sys
import threading
import warnings
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .._util import atomic_path, resolve_threads
from ..errors import ModelError

__all__ = [
    "ENGINES",
    "ModelInfo",
    "Predictor",
    "export_onnx",
    "load_model",
    "read_model_info",
]

Engine = Literal["gluon", "native", "onnx"]
ENGINES: tuple[str, ...] = ("gluon", "native", "onnx")
"""Engine names accepted by :func:`load_model`."""

MODEL_FORMAT = "prostate-fast-model"
MODEL_VERSION = 1
DEFAULT_THRESHOLD = 0.5


# -- model folder ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelInfo:
    """What ``model.json`` says about a model, checked, with the paths of its files.

    Attributes
    ----------
    model_dir : pathlib.Path
    symbol_file, params_file : pathlib.Path
        ``model-symbol.json`` and the ``model-NNNN.params`` of the recorded epoch.
    classes : tuple of str
        Class names; index 0 is the negative class (benign).
    colours : dict
        Class name to (R, G, B) overlay colour.
    tile_size : int
        Side of the square input tiles, in pixels at the model's scale.
    magnification, mpp : float or None
        The scale the model was trained at (objective power; microns per tile pixel).
    scale : float
        Factor applied to the uint8 pixels before the network (``normalisation.scale``).
    channel_order : str
        ``"RGB"`` or ``"BGR"``: channel order the network expects.
    input_name : str
        Name of the network's input variable.
    thresholds : dict
        Decision threshold per non-negative class (probability), from ``model.json``.
    epoch : int or None
    meta : dict
        The whole ``model.json``.
    """

    model_dir: Path
    symbol_file: Path
    params_file: Path
    classes: tuple[str, ...]
    colours: dict[str, tuple[int, int, int]]
    tile_size: int
    magnification: float | None
    mpp: float | None
    scale: float
    channel_order: str
    input_name: str
    thresholds: dict[str, float]
    epoch: int | None
    meta: dict[str, Any] = field(repr=False)

    @property
    def n_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)

    @property
    def onnx_file(self) -> Path:
        """Where the ONNX export lives (``model.onnx``)."""
        return self.model_dir / "model.onnx"


def _positive_number(meta: dict[str, Any], key: str, path: Path, *, optional: bool) -> float | None:
    value = meta.get(key)
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ModelError(f"{path}: {key!r} must be a positive number, got {value!r}")
    return float(value)


def _thresholds(raw: Any, classes: tuple[str, ...], path: Path) -> dict[str, float]:
    """Per non-negative class threshold; a combined key ``"a+b"`` applies to a and b."""
    out: dict[str, float] = {}
    combined: dict[str, float] = {}
    if raw is None:
        raw = {}
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        raw = {c: raw for c in classes[1:]}
    if not isinstance(raw, dict):
        raise ModelError(f"{path}: 'threshold' must be an object, got {raw!r}")
    for key, value in raw.items():
        parts = str(key).split("+")
        if not all(p in classes[1:] for p in parts):
            continue  # target_sensitivity, source and other notes
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            raise ModelError(f"{path}: threshold of {key!r} must be in [0, 1], got {value!r}")
        for p in parts:
            (out if len(parts) == 1 else combined)[p] = float(value)
    return {c: out.get(c, combined.get(c, DEFAULT_THRESHOLD)) for c in classes[1:]}


def _params_file(model_dir: Path, epoch: int | None) -> Path:
    if epoch is not None:
        return model_dir / f"model-{epoch:04d}.params"
    found = sorted(model_dir.glob("model-[0-9][0-9][0-9][0-9].params"))
    if not found:
        raise ModelError(f"{model_dir}: no model-NNNN.params file")
    return found[-1]


def read_model_info(model_dir: str | os.PathLike[str]) -> ModelInfo:
    """Read and check ``model.json`` of a model folder (no MXNet needed).

    Parameters
    ----------
    model_dir : path
        Folder written by training (``model-symbol.json``, ``model-NNNN.params``, ``model.json``).

    Returns
    -------
    ModelInfo

    Raises
    ------
    ModelError
        Missing folder or file, unreadable or malformed ``model.json`` (the message names the
        file and the field).
    """
    d = Path(model_dir)
    if not d.is_dir():
        raise ModelError(f"{d}: no such model folder")
    path = d / "model.json"
    if not path.is_file():
        raise ModelError(f"{path}: missing; is {d} a model folder written by prostate-fast train?")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ModelError(f"{path}: not readable JSON ({exc})") from exc
    if not isinstance(meta, dict) or meta.get("format") != MODEL_FORMAT:
        raise ModelError(
            f"{path}: not a prostate-fast model description (format != {MODEL_FORMAT!r})"
        )
    if meta.get("version") != MODEL_VERSION:
        raise ModelError(f"{path}: unsupported model version {meta.get('version')!r}")
    classes = meta.get("classes")
    if (
        not isinstance(classes, list)
        or len(classes) < 2
        or not all(isinstance(c, str) and c for c in classes)
        or len(set(classes)) != len(classes)
    ):
        raise ModelError(f"{path}: 'classes' must list at least 2 distinct names, got {classes!r}")
    classes_t = tuple(classes)
    tile = meta.get("tile_size")
    if isinstance(tile, bool) or not isinstance(tile, int) or tile <= 0:
        raise ModelError(f"{path}: 'tile_size' must be a positive integer, got {tile!r}")
    magnification = _positive_number(meta, "magnification", path, optional=True)
    mpp = _positive_number(meta, "mpp", path, optional=True)
    layout = meta.get("layout", "NCHW")
    if layout != "NCHW":
        raise ModelError(f"{path}: layout {layout!r} is not supported (NCHW only)")
    order = meta.get("channel_order", "RGB")
    if order not in ("RGB", "BGR"):
        raise ModelError(f"{path}: channel_order must be 'RGB' or 'BGR', got {order!r}")
    norm = meta.get("normalisation", {"scale": 1.0})
    if not isinstance(norm, dict):
        raise ModelError(f"{path}: 'normalisation' must be an object, got {norm!r}")
    scale = _positive_number(norm, "scale", path, optional=False)
    name = meta.get("input_name", "data")
    if not isinstance(name, str) or not name:
        raise ModelError(f"{path}: 'input_name' must be a name, got {name!r}")
    epoch = meta.get("epoch")
    if epoch is not None and (isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0):
        raise ModelError(f"{path}: 'epoch' must be a non-negative integer, got {epoch!r}")
    colours: dict[str, tuple[int, int, int]] = {}
    for cname, rgb in (meta.get("colours") or {}).items():
        if (
            not isinstance(rgb, list | tuple)
            or len(rgb) != 3
            or not all(isinstance(v, int) and 0 <= v <= 255 for v in rgb)
        ):
            raise ModelError(f"{path}: colour of {cname!r} must be [R, G, B] in 0-255, got {rgb!r}")
        colours[str(cname)] = (int(rgb[0]), int(rgb[1]), int(rgb[2]))
    symbol_file = d / "model-symbol.json"
    if not symbol_file.is_file():
        raise ModelError(f"{symbol_file}: missing")
    params_file = _params_file(d, epoch)
    if not params_file.is_file():
        raise ModelError(f"{params_file}: missing (model.json names epoch {epoch})")
    return ModelInfo(
        model_dir=d,
        symbol_file=symbol_file,
        params_file=params_file,
        classes=classes_t,
        colours=colours,
        tile_size=tile,
        magnification=magnification,
        mpp=mpp,
        scale=float(scale),  # type: ignore[arg-type]
        channel_order=order,
        input_name=name,
        thresholds=_thresholds(meta.get("threshold"), classes_t, path),
        epoch=epoch,
        meta=meta,
    )


# -- MXNet, devices, checks -----------------------------------------------------------------------
def _mxnet(n_threads: int | None, *, warn: bool = True) -> Any:
    """Import MXNet with ``n_threads`` OpenMP threads when it is not loaded yet.

    The thread count reaches MXNet (and oneDNN) through ``OMP_NUM_THREADS``, which the OpenMP
    runtime reads once, when it loads: before MXNet, or before one of our OpenMP extensions
    when one of those ran first. Call this (``load_model`` does) before any other native work.
    """
    from .._mx import import_mxnet

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


def _parse_device(ctx: Any) -> tuple[str, int]:
    """``"cpu"``, ``"gpu"``, ``"gpu(1)"``, ``"gpu:1"``, ``"cuda:1"`` or an mx.Context → (kind, id)."""
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


def _check_network(mx: Any, info: ModelInfo) -> tuple[str, bytes, dict[str, Any]]:
    """Load symbol and params; check they fit each other and ``model.json``.

    Returns (symbol JSON text, params bytes, loaded params dict).
    """
    try:
        symbol_json = info.symbol_file.read_text(encoding="utf-8")
        sym = mx.sym.load_json(symbol_json)
    except Exception as exc:  # noqa: BLE001 - MXNetError, JSON, decoding errors alike
        raise ModelError(f"{info.symbol_file}: corrupt symbol file ({_first_line(exc)})") from exc
    args = sym.list_arguments()
    if info.input_name not in args:
        raise ModelError(
            f"{info.symbol_file}: the network has no input {info.input_name!r} "
            f"(model.json input_name); its free inputs start with {args[:1]}"
        )
    t = info.tile_size
    try:
        arg_shapes, out_shapes, aux_shapes = sym.infer_shape(**{info.input_name: (1, 3, t, t)})
    except Exception as exc:  # noqa: BLE001
        raise ModelError(
            f"{info.symbol_file}: the network does not take (N, 3, {t}, {t}) input "
            f"(model.json tile_size): {_first_line(exc)}"
        ) from exc
    if len(out_shapes) != 1 or len(out_shapes[0]) != 2:
        raise ModelError(
            f"{info.symbol_file}: the network must have one (N, classes) output, got {out_shapes}"
        )
    n_out = int(out_shapes[0][1])
    if n_out != info.n_classes:
        raise ModelError(
            f"{info.model_dir}: class count mismatch: model.json lists {info.n_classes} classes "
            f"{list(info.classes)} but the network outputs {n_out}"
        )
    try:
        params_bytes = info.params_file.read_bytes()
    except OSError as exc:
        raise ModelError(f"{info.params_file}: cannot read ({exc})") from exc
    try:
        params = mx.nd.load_frombuffer(params_bytes)
    except Exception as exc:  # noqa: BLE001
        raise ModelError(f"{info.params_file}: corrupt params file ({_first_line(exc)})") from exc
    if not isinstance(params, dict):
        raise ModelError(f"{info.params_file}: corrupt params file (no parameter names)")
    want = {f"arg:{n}": s for n, s in zip(args, arg_shapes, strict=True) if n != info.input_name}
    want.update(
        {f"aux:{n}": s for n, s in zip(sym.list_auxiliary_states(), aux_shapes, strict=True)}
    )
    missing = sorted(k.split(":", 1)[1] for k in want if k not in params)
    if missing:
        raise ModelError(
            f"{info.params_file}: corrupt params file or another network's: "
            f"{len(missing)} parameters missing (e.g. {missing[0]})"
        )
    bad = [k for k, s in want.items() if tuple(params[k].shape) != tuple(s)]
    if bad:
        k = bad[0]
        raise ModelError(
            f"{info.params_file}: parameters do not fit the network: {k.split(':', 1)[1]} has "
            f"shape {tuple(params[k].shape)}, the network needs {tuple(want[k])}"
        )
    return symbol_json, params_bytes, params


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    text = text.split("\nStack trace", 1)[0].strip()
    return " ".join(text.split("\n")[:2])[:300] or type(exc).__name__


# -- predictors -----------------------------------------------------------------------------------
class Predictor:
    """A loaded model bound to one engine and device.

    Use :func:`load_model` to make one. :meth:`predict_batch` is the whole interface: uint8 RGB
    tiles in, float32 class probabilities out. :meth:`prepare` (NumPy, thread-safe) and
    :meth:`run` (the engine) are its two halves, so a reader thread can prepare batch k + 1 while
    batch k runs. :meth:`run` is not meant to be called from several threads at once (the native
    engine serialises such calls, Gluon's buffers are shared): use one Predictor per thread.

    Attributes
    ----------
    info : ModelInfo
    engine : str
    device : (str, int)
        ("cpu" or "gpu", device id).
    batch_size : int
        Samples per engine call (the last batch is padded where the engine needs a fixed shape).
    n_threads : int
        Threads the engine was asked to use.
    """

    engine: str = ""

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
        src = tiles[..., ::-1] if self.info.channel_order == "BGR" else tiles
        x = np.empty((len(tiles), 3, t, t), np.float32)
        x[...] = src.transpose(0, 3, 1, 2)
        x *= np.float32(self.info.scale)
        return x

    def run(self, x: np.ndarray) -> np.ndarray:
        """float32 (n, 3, T, T) prepared input → float32 (n, n_classes) probabilities."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        t = self.info.tile_size
        if x.ndim != 4 or x.shape[1:] != (3, t, t):
            raise ValueError(f"x must have shape (n, 3, {t}, {t}), got {x.shape}")
        if len(x) == 0:
            return np.zeros((0, self.info.n_classes), np.float32)
        return self._run(x)

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

    def __enter__(self) -> Predictor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        kind, i = self.device
        return (
            f"<{type(self).__name__} {self.info.model_dir} engine={self.engine} "
            f"device={kind}({i}) batch={self.batch_size} threads={self.n_threads}>"
        )


def _chunks(n: int, size: int) -> list[tuple[int, int]]:
    return [(s, min(s + size, n)) for s in range(0, n, size)]


class GluonPredictor(Predictor):
    """``SymbolBlock`` hybridized with a static graph; batches padded to ``batch_size``."""

    engine = "gluon"

    def __init__(self, info: ModelInfo, device: tuple[str, int], batch_size: int,
                 n_threads: int) -> None:  # fmt: skip
        super().__init__(info, device, batch_size, n_threads)
        mx = _mxnet(n_threads)
        kind, i = device
        self._ctx = mx.gpu(i) if kind == "gpu" else mx.cpu()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Cannot decide type for the following arguments"
            try:
                net = mx.gluon.SymbolBlock.imports(
                    str(info.symbol_file), [info.input_name], str(info.params_file), ctx=self._ctx
                )
            except Exception as exc:  # noqa: BLE001
                raise ModelError(f"{info.model_dir}: Gluon cannot load the model: "
                                 f"{_first_line(exc)}") from exc  # fmt: skip
            self.backend = None
            t = info.tile_size
            probe = mx.nd.zeros((batch_size, 3, t, t), ctx=self._ctx)
            for backend in ("MKLDNN", None) if kind == "cpu" else (None,):
                try:
                    kw = {"backend": backend} if backend else {}
                    net.hybridize(static_alloc=True, static_shape=True, **kw)
                    net(probe).wait_to_read()
                    self.backend = backend
                    break
                except Exception:  # noqa: BLE001 - no MKLDNN in this wheel: plain static graph
                    if backend is None:
                        raise
        self._net = net
        self._buf = np.zeros((batch_size, 3, t, t), np.float32)
        self._input = mx.nd.zeros((batch_size, 3, t, t), ctx=self._ctx, dtype=np.float32)

    def _run(self, x: np.ndarray) -> np.ndarray:
        out = np.empty((len(x), self.info.n_classes), np.float32)
        for s, e in _chunks(len(x), self.batch_size):
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


_LIVE_NATIVE: weakref.WeakSet[NativePredictor] = weakref.WeakSet()
_ATEXIT_LOCK = threading.Lock()
_ATEXIT_DONE = False


def _close_native() -> None:
    """Free every native handle before MXNet's own atexit shutdown (atexit runs LIFO)."""
    for p in list(_LIVE_NATIVE):
        p.close()


class NativePredictor(Predictor):
    """``prostate_fast._native.MxPredictor``: MXNet's C predict API, GIL released while running."""

    engine = "native"

    def __init__(self, info: ModelInfo, device: tuple[str, int], batch_size: int,
                 n_threads: int, symbol_json: str, params_bytes: bytes) -> None:  # fmt: skip
        global _ATEXIT_DONE
        super().__init__(info, device, batch_size, n_threads)
        mx = _mxnet(n_threads)  # loads libmxnet with the thread settings; dlopen reuses it
        from .. import _native

        libs = mx.libinfo.find_lib_path()
        if not libs:
            raise ModelError("mxnet.libinfo.find_lib_path() found no libmxnet.so")
        self.lib_path = str(libs[0])
        kind, i = device
        t = info.tile_size
        with _ATEXIT_LOCK:
            if not _ATEXIT_DONE:  # registered after `import mxnet`, so it runs before MXNet's
                atexit.register(_close_native)
                _ATEXIT_DONE = True
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
            raise ModelError(f"{info.model_dir}: the native engine cannot load the model: "
                             f"{_first_line(exc)}") from exc  # fmt: skip
        if self._pred.output_size != info.n_classes:  # pragma: no cover - checked before
            raise ModelError(f"{info.model_dir}: class count mismatch in the native engine")
        _LIVE_NATIVE.add(self)

    def _run(self, x: np.ndarray) -> np.ndarray:
        try:
            return self._pred.predict(x)
        except RuntimeError as exc:
            raise ModelError(f"{self.info.model_dir}: native engine: {exc}") from exc

    def close(self) -> None:
        self._pred.close()


class OnnxPredictor(Predictor):
    """ONNX Runtime session on ``model.onnx`` (exported on first use)."""

    engine = "onnx"

    def __init__(self, info: ModelInfo, device: tuple[str, int], batch_size: int,
                 n_threads: int) -> None:  # fmt: skip
        super().__init__(info, device, batch_size, n_threads)
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise ModelError(
                "the onnx engine needs ONNX Runtime: pip install 'prostate-fast[onnx]' "
                "(onnxruntime-gpu for CUDA)"
            ) from exc
        path = _fresh_onnx(info, n_threads)
        kind, i = device
        available = ort.get_available_providers()
        if kind == "gpu":
            if "CUDAExecutionProvider" not in available:
                raise ModelError(
                    f"ONNX Runtime here has no CUDA provider (has {', '.join(available)}): "
                    "install onnxruntime-gpu for ctx=gpu"
                )
            providers: list[Any] = [
                ("CUDAExecutionProvider", {"device_id": i}),
                "CPUExecutionProvider",
            ]
        else:
            providers = ["CPUExecutionProvider"]
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = n_threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3  # no "Initializer appears in graph inputs" warnings
        try:
            self._sess = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
        except Exception as exc:  # noqa: BLE001 - onnxruntime's own exception types
            raise ModelError(f"{path}: ONNX Runtime cannot load it: {_first_line(exc)}") from exc
        self.onnx_path = path
        self.providers = tuple(self._sess.get_providers())
        self._input = self._sess.get_inputs()[0].name

    def _run(self, x: np.ndarray) -> np.ndarray:
        out = np.empty((len(x), self.info.n_classes), np.float32)
        for s, e in _chunks(len(x), self.batch_size):
            out[s:e] = self._sess.run(None, {self._input: x[s:e]})[0]
        return out


# -- ONNX export ----------------------------------------------------------------------------------
def _fresh_onnx(info: ModelInfo, n_threads: int | None) -> Path:
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
        A model folder (see :func:`read_model_info`).
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
        A bad model folder (see :func:`load_model`), or no ONNX exporter (MXNet's needs
        ``onnx<1.15``).
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
    mx = _mxnet(n_threads, warn=False)
    _check_network(mx, info)
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
        import tempfile

        target = Path(tempfile.mkdtemp(prefix="prostate-fast-onnx-")) / "model.onnx"
    t = info.tile_size
    shape = (batch or 1, 3, t, t)
    with atomic_path(target, overwrite=overwrite) as tmp:
        import logging

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
            raise ModelError(f"{info.model_dir}: ONNX export failed: {_first_line(exc)}") from exc
        finally:
            logging.getLogger().setLevel(level)
        model = onnx.load(str(tmp))
        names = {init.name for init in model.graph.initializer}
        keep = [i for i in model.graph.input if i.name not in names]
        if len(keep) != len(model.graph.input):
            del model.graph.input[:]
            model.graph.input.extend(keep)
            onnx.save(model, str(tmp))
        os.chmod(tmp, 0o644)
    return target


# -- entry point ----------------------------------------------------------------------------------
def load_model(
    model_dir: str | os.PathLike[str],
    *,
    engine: Engine | str = "gluon",
    ctx: Any = "cpu",
    batch_size: int = 64,
    n_threads: int | None = None,
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
        or a missing MXNet / ONNX Runtime.

    Notes
    -----
    Every engine reads the symbol and parameters once to check them (about 0.2 s for the study
    network), so a damaged model fails here, with the same message for every engine.
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, int | np.integer)
        or batch_size < 1
    ):
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    threads = resolve_threads(n_threads)
    device = _parse_device(ctx)
    info = read_model_info(model_dir)
    mx = _mxnet(n_threads, warn=engine != "onnx")
    if device[0] == "gpu" and engine != "onnx":
        from .._mx import parse_context

        parse_context(f"gpu({device[1]})")  # ModelError when this MXNet sees no such GPU
    symbol_json, params_bytes, _ = _check_network(mx, info)
    batch = int(batch_size)
    if engine == "gluon":
        return GluonPredictor(info, device, batch, threads)
    if engine == "native":
        return NativePredictor(info, device, batch, threads, symbol_json, params_bytes)
    return OnnxPredictor(info, device, batch, threads)
