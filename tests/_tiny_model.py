"""A model folder following train.py's contract, without training: the study CNN, Xavier-seeded.

Used by test_predict and bench_predict. ``make_model(dir, tile_size=64)`` exports the study's
network (prostate_fast.networks, softmax-wrapped) with random but deterministic weights and writes
``model.json`` exactly as ``train`` does, so every engine can load it.
"""

from __future__ import annotations

import json
from pathlib import Path


def make_model(
    out: Path,
    *,
    tile_size: int = 64,
    classes: tuple[str, ...] = ("benign", "cancer"),
    n_outputs: int | None = None,
    magnification: float | None = 20.0,
    mpp: float | None = 0.5,
    threshold: float = 0.5,
    seed: int = 0,
    epoch: int = 3,
) -> Path:
    """Write a model folder to ``out`` and return it.

    ``n_outputs`` (default ``len(classes)``) lets a test build a network whose output size does
    not match ``model.json``.
    """
    from prostate_fast._mx import import_mxnet
    from prostate_fast.model.networks import build_network, network_spec, with_softmax

    mx = import_mxnet()
    out.mkdir(parents=True, exist_ok=True)
    n_out = len(classes) if n_outputs is None else n_outputs
    mx.random.seed(seed)
    net = build_network("study", n_out, tile_size=tile_size)
    net.initialize(mx.init.Xavier(), ctx=mx.cpu())
    wrapped = with_softmax(net)
    wrapped.hybridize()
    wrapped(mx.nd.zeros((1, 3, tile_size, tile_size)))
    wrapped.export(str(out / "model"), epoch=epoch)
    meta = {
        "format": "prostate-fast-model",
        "version": 1,
        "classes": list(classes),
        "colours": {classes[-1]: [0, 255, 0]},
        "tile_size": tile_size,
        "magnification": magnification,
        "mpp": mpp,
        "downsample": 1.0,
        "channel_order": "RGB",
        "layout": "NCHW",
        "normalisation": {"scale": 1 / 255},
        "input_name": "data",
        "output": "softmax probabilities",
        "epoch": epoch,
        "threshold": {classes[-1]: threshold, "target_sensitivity": 0.99},
        "architecture": network_spec("study", n_out, tile_size),
        "training": {"note": "untrained test fixture", "seed": seed},
    }
    (out / "model.json").write_text(json.dumps(meta, indent=1) + "\n")
    return out
