"""Write a model folder: the one writer, used by training's export and by the test fixtures.

:func:`write_model` exports a Gluon network followed by a softmax (``model-symbol.json`` and
``model-NNNN.params``) and writes ``model.json`` beside it; :func:`write_model_json` (re)writes
``model.json`` alone, e.g. when evaluation stores a new threshold. The field order of
``model.json`` is fixed here, so two runs write the same bytes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .._mx import import_mxnet
from .._util import write_json
from ..stain import StainFit
from .domain import StainDomain
from .info import MODEL_FORMAT, MODEL_VERSION
from .networks import with_softmax

__all__ = ["write_model", "write_model_json"]


def write_model(
    model_dir: str | os.PathLike[str],
    net: Any,
    *,
    epoch: int,
    classes: Sequence[str],
    colours: Mapping[str, Sequence[int]],
    tile_size: int,
    scale: float,
    magnification: float | None,
    mpp: float | None,
    downsample: float | None,
    threshold: Mapping[str, Any],
    architecture: Mapping[str, Any],
    training: Mapping[str, Any],
    ctx: Any = None,
    domain: StainDomain | None = None,
    stain: StainFit | None = None,
) -> Path:
    """Export ``net`` (logits out) followed by a softmax, and write ``model.json``.

    Parameters
    ----------
    model_dir : path
        An existing folder. Its previous ``model-*`` files are removed first.
    net : mxnet.gluon.HybridBlock
        The trained network (logits out), initialised on ``ctx``.
    epoch : int
        Epoch of the weights (the ``NNNN`` of ``model-NNNN.params``).
    classes, colours : sequence of str, mapping
        Class names (index 0 the negative class); class name to (R, G, B) overlay colour.
    tile_size : int
        Side of the square input tiles (pixels at the model's scale).
    scale : float
        ``normalisation.scale``: factor applied to uint8 pixels before the network.
    magnification, mpp, downsample : float or None
        The scale the model was trained at.
    threshold, architecture, training : mapping
        Stored as they are: ``threshold`` (per class or ``"a+b"`` key, plus notes), the network
        description, the training settings.
    ctx : mxnet.Context, optional
        Where ``net`` lives (default: MXNet's current context, the CPU).
    domain : StainDomain, optional
        The stain domain of the training tissue (:func:`~prostate_fast.model.domain.measure_domain`),
        recorded as ``"domain"``; prediction refuses slides outside it. None: not recorded (the
        check is then skipped).
    stain : StainFit, optional
        The stain normalisation target of the training data (:mod:`prostate_fast.stain`),
        recorded as ``"stain"``: prediction then normalises every slide to it. None: not
        recorded (tiles are used as read).

    Returns
    -------
    pathlib.Path
        ``model_dir``.

    Raises
    ------
    ValueError
        ``epoch`` is not a non-negative integer, ``tile_size`` not a positive one, or fewer
        than two classes.
    """
    _check_arguments(epoch, tile_size, classes)
    mx = import_mxnet()
    out = Path(model_dir)
    for old in out.glob("model-*"):
        old.unlink()
    wrapped = with_softmax(net)
    wrapped.hybridize()
    wrapped(mx.nd.zeros((1, 3, tile_size, tile_size), ctx=ctx))
    wrapped.export(str(out / "model"), epoch=epoch)
    meta = {
        "format": MODEL_FORMAT,
        "version": MODEL_VERSION,
        "classes": list(classes),
        "colours": {k: list(v) for k, v in colours.items()},
        "tile_size": tile_size,
        "magnification": magnification,
        "mpp": mpp,
        "downsample": downsample,
        "channel_order": "RGB",
        "layout": "NCHW",
        "normalisation": {"scale": scale},
        "input_name": "data",
        "output": "softmax probabilities",
        "epoch": epoch,
        "threshold": dict(threshold),
        "architecture": dict(architecture),
        "training": dict(training),
    }
    if domain is not None:
        meta["domain"] = domain.to_json()
    if stain is not None:
        meta["stain"] = stain.to_json()
    write_model_json(out, meta)
    return out


def _check_arguments(epoch: int, tile_size: int, classes: Sequence[str]) -> None:
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        raise ValueError(f"epoch must be a non-negative integer, got {epoch!r}")
    if isinstance(tile_size, bool) or not isinstance(tile_size, int) or tile_size < 1:
        raise ValueError(f"tile_size must be a positive integer, got {tile_size!r}")
    if len(classes) < 2:
        raise ValueError(f"classes must name at least 2 classes, got {list(classes)!r}")


def write_model_json(model_dir: str | os.PathLike[str], meta: Mapping[str, Any]) -> Path:
    """Write ``MODEL_DIR/model.json`` (indented JSON, NaN as null) through a temporary name.

    Parameters
    ----------
    model_dir : path
        The model folder.
    meta : mapping
        The whole description, e.g. :attr:`ModelInfo.meta` with a field changed.

    Returns
    -------
    pathlib.Path
        The ``model.json`` file.

    Raises
    ------
    ValueError
        ``meta`` is not a model description (``MODEL_FORMAT``) of this version.
    """
    if meta.get("format") != MODEL_FORMAT or meta.get("version") != MODEL_VERSION:
        raise ValueError(
            f"meta must be a {MODEL_FORMAT!r} description of version {MODEL_VERSION}, got "
            f"format {meta.get('format')!r} version {meta.get('version')!r}"
        )
    path = Path(model_dir) / "model.json"
    write_json(path, dict(meta))
    return path
