"""A model folder written by the package's own writer, without training: the study CNN, Xavier-seeded.

Used by test_predict, test_evaluate, test_screen, test_batch and bench_predict.
``make_model(dir, tile_size=64)`` builds the study's network with random but deterministic weights
and writes it with :func:`prostate_fast.model.write_model`, as ``train`` does, so every engine can
load it.
"""

from __future__ import annotations

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
    domain: object = None,
    dataset: Path | None = None,
    network: str = "study",
) -> Path:
    """Write a model folder to ``out`` and return it.

    ``n_outputs`` (default ``len(classes)``) lets a test build a network whose output size does
    not match ``model.json``. ``domain`` (a :class:`~prostate_fast.model.StainDomain`) is
    recorded as the training domain; None writes a model as older versions did, without one.
    ``dataset`` is recorded as the training dataset (``training.dataset``, as ``train`` does: the
    int8 precision calibrates on its validation split). ``network`` is any name of
    :data:`prostate_fast.model.NETWORKS`.
    """
    from prostate_fast._mx import import_mxnet
    from prostate_fast.model import build_network, network_spec, write_model

    mx = import_mxnet()
    out.mkdir(parents=True, exist_ok=True)
    n_out = len(classes) if n_outputs is None else n_outputs
    mx.random.seed(seed)
    net = build_network(network, n_out, tile_size=tile_size)
    net.initialize(mx.init.Xavier(), ctx=mx.cpu())
    if network != "study":  # the ResNets' deferred shapes (batch norm) need one forward pass
        net(mx.nd.zeros((1, 3, tile_size, tile_size)))
    return write_model(
        out,
        net,
        epoch=epoch,
        classes=classes,
        colours={classes[-1]: (0, 255, 0)},
        tile_size=tile_size,
        scale=1 / 255,
        magnification=magnification,
        mpp=mpp,
        downsample=1.0,
        threshold={classes[-1]: threshold, "target_sensitivity": 0.99},
        architecture=network_spec(network, n_out, tile_size),
        training={"note": "untrained test fixture", "seed": seed}
        | ({"dataset": str(dataset)} if dataset is not None else {}),
        domain=domain,
    )
