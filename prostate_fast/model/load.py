"""Load a model folder's network with MXNet: the one Gluon loader and the one network check.

:func:`check_network` reads ``model-symbol.json`` and ``model-NNNN.params`` and checks that they
fit each other and ``model.json`` (input name, tile size, class count, every parameter's shape),
so that a damaged model fails with the same message whatever runs it. :func:`load_network`
returns the network as a Gluon ``SymbolBlock`` on one context; the caller hybridizes it as its
engine needs (prediction probes the MKLDNN backend, evaluation uses a plain static graph).
MXNet is imported inside the functions.
"""

from __future__ import annotations

import warnings
from typing import Any

from .._mx import import_mxnet, parse_context
from ..errors import ModelError
from .info import ModelInfo

__all__ = ["check_network", "error_line", "load_network"]


def error_line(exc: BaseException) -> str:
    """The first lines of an MXNet (or other) error, without MXNet's stack trace, for a message."""
    text = str(exc).strip()
    text = text.split("\nStack trace", 1)[0].strip()
    return " ".join(text.split("\n")[:2])[:300] or type(exc).__name__


def load_network(info: ModelInfo, ctx: Any = "cpu") -> Any:
    """Load the model's network (softmax output) as a Gluon ``SymbolBlock``, not hybridized.

    Parameters
    ----------
    info : ModelInfo
        The model folder, from :func:`~prostate_fast.model.read_model_info`.
    ctx : str or mxnet.Context
        One device: ``"cpu"``, ``"gpu(N)"`` or an ``mx.Context``.

    Returns
    -------
    mxnet.gluon.SymbolBlock
        Input ``info.input_name`` (float32 NCHW, already normalised), output class
        probabilities.

    Raises
    ------
    ModelError
        MXNet cannot load the symbol or the parameters (the message names the folder), or a GPU
        that this MXNet cannot use.
    """
    mx = import_mxnet()
    device = parse_context(ctx)[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Cannot decide type for the following arguments"
        try:
            return mx.gluon.SymbolBlock.imports(
                str(info.symbol_file), [info.input_name], str(info.params_file), ctx=device
            )
        except Exception as exc:  # noqa: BLE001 - MXNetError, OSError, AssertionError alike
            raise ModelError(
                f"{info.model_dir}: Gluon cannot load the model: {error_line(exc)}"
            ) from exc


def check_network(info: ModelInfo) -> tuple[str, bytes]:
    """Read the symbol and parameters; check they fit each other and ``model.json``.

    Parameters
    ----------
    info : ModelInfo
        The model folder, from :func:`~prostate_fast.model.read_model_info`.

    Returns
    -------
    (str, bytes)
        The symbol's JSON text and the params file's bytes, for an engine that loads them itself.

    Raises
    ------
    ModelError
        A corrupt symbol or params file, a network that does not take ``(N, 3, T, T)`` input
        named ``input_name``, a class count that differs from ``model.json``, parameters missing
        or of the wrong shape (the message names the file).

    Notes
    -----
    Costs one read of the params file and a shape inference (about 0.2 s for the study network).
    """
    mx = import_mxnet()
    symbol_json, sym = _load_symbol(mx, info)
    args = sym.list_arguments()
    if info.input_name not in args:
        raise ModelError(
            f"{info.symbol_file}: the network has no input {info.input_name!r} "
            f"(model.json input_name); its free inputs start with {args[:1]}"
        )
    arg_shapes, aux_shapes = _infer_shapes(sym, info)
    params_bytes, params = _load_params(mx, info)
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
    return symbol_json, params_bytes


def _load_symbol(mx: Any, info: ModelInfo) -> tuple[str, Any]:
    try:
        symbol_json = info.symbol_file.read_text(encoding="utf-8")
        return symbol_json, mx.sym.load_json(symbol_json)
    except Exception as exc:  # noqa: BLE001 - MXNetError, JSON, decoding errors alike
        raise ModelError(f"{info.symbol_file}: corrupt symbol file ({error_line(exc)})") from exc


def _infer_shapes(sym: Any, info: ModelInfo) -> tuple[list[Any], list[Any]]:
    """(argument shapes, auxiliary shapes) for a (1, 3, T, T) input; one (N, classes) output."""
    t = info.tile_size
    try:
        arg_shapes, out_shapes, aux_shapes = sym.infer_shape(**{info.input_name: (1, 3, t, t)})
    except Exception as exc:  # noqa: BLE001
        raise ModelError(
            f"{info.symbol_file}: the network does not take (N, 3, {t}, {t}) input "
            f"(model.json tile_size): {error_line(exc)}"
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
    return arg_shapes, aux_shapes


def _load_params(mx: Any, info: ModelInfo) -> tuple[bytes, dict[str, Any]]:
    try:
        params_bytes = info.params_file.read_bytes()
    except OSError as exc:
        raise ModelError(f"{info.params_file}: cannot read ({exc})") from exc
    try:
        params = mx.nd.load_frombuffer(params_bytes)
    except Exception as exc:  # noqa: BLE001
        raise ModelError(f"{info.params_file}: corrupt params file ({error_line(exc)})") from exc
    if not isinstance(params, dict):
        raise ModelError(f"{info.params_file}: corrupt params file (no parameter names)")
    return params_bytes, params
