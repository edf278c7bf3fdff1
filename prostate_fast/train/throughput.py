"""Training throughput against its compute limit, measured in the same run.

:func:`measure_throughput` builds the network and trainer exactly as
:func:`prostate_fast.train.train` does for a recipe, then times the same training step
(:func:`~.epoch._train_epoch`: forward, backward, update, loss and accuracy read back) on two
sources, and the forward pass alone:

* **limit**: on a few batches already decoded, augmented and held in memory as NDArrays (no
  reading at all), cycled: the most samples per second this network, batch size and machine
  can train;
* **real**: on the training split read through :class:`~.reader.BatchReader` (read, decode,
  augmentation as configured, one epoch after another), as training reads it;
* **forward**: the network's forward pass alone (prediction mode) on the held batches, for
  reference (a training step costs about three to four of them).

Each round times the limit and then the real rate back to back, after a warm-up (the first
batches build the static graph), from a finished engine to a finished engine (``waitall``: the
last update counts). Over ``rounds`` rounds, ``limit`` and ``real`` are the medians and ``ratio``
the median of the rounds' own ratios: on a shared machine the load changes between rounds (by
3x on the 2 shared cores here), far less within one.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._mx import import_mxnet, parse_context
from .._util import resolve_threads
from ..model.networks import network_spec
from .config import _class_weights, _Config
from .epoch import _nd_batches, _train_epoch
from .io import _count, _dataset, _Progress, channel_stats
from .loop import _build, _Run
from .reader import BatchReader
from .recipes import RECIPE_DEFAULT, resolve_recipe

__all__ = ["Throughput", "measure_throughput"]

_HELD = 4  # distinct batches held in memory for the limit


@dataclass(frozen=True)
class Throughput:
    """Training samples per second: ``real`` (reading the split) against ``limit`` (in memory).

    ``ratio`` is the median of the rounds' ``real / limit`` (1: reading never holds training
    back); ``forward`` the forward pass alone, for reference.
    """

    recipe: str
    network: str
    batch_size: int
    tile_size: int
    augment: bool | str
    threads: int
    batches: int
    limit: float
    real: float
    forward: float
    ratio: float

    def line(self) -> str:
        """One line for a report: settings, both rates and their ratio."""
        return (
            f"{self.recipe} ({self.network}, {self.tile_size} px, batch {self.batch_size}, "
            f"augment {self.augment or 'off'}, {self.threads} threads): "
            f"{self.real:.1f} samples/s reading the split, limit {self.limit:.1f} samples/s "
            f"in memory, ratio {self.ratio:.2f} (forward pass alone: {self.forward:.1f}/s)"
        )


def measure_throughput(
    dataset_dir: str | os.PathLike[str],
    *,
    recipe: str = RECIPE_DEFAULT,
    batches: int = 20,
    warmup: int = 3,
    rounds: int = 2,
    n_threads: int | None = None,
    seed: int = 0,
    ctx: Any = "cpu",
    **settings: Any,
) -> Throughput:
    """Measure training throughput on a dataset's train split and its compute limit.

    Parameters
    ----------
    dataset_dir : path
        A dataset folder (only its train split is read).
    recipe : {"default", "study"}
        The recipe trained (:mod:`prostate_fast.train.recipes`).
    batches, warmup : int
        Batches timed, and batches run before timing, per measurement.
    rounds : int
        Rounds of (limit, real) measured back to back (module docstring).
    n_threads : int, optional
        Threads for MXNet and reading, as ``train --threads`` (None: all cores).
    seed : int
        Seeds the network's initialisation and the reader.
    ctx : str
        Device, as :func:`prostate_fast.train.train`.
    **settings
        Recipe settings to override (``network``, ``batch_size``, ``augment``, ...).

    Returns
    -------
    Throughput

    Raises
    ------
    DatasetError
        Missing or unreadable dataset, empty train split.
    ValueError
        Bad argument (named).

    Notes
    -----
    Cost: ``rounds * 2 * (batches + warmup)`` training steps.
    """
    for name, v in (("batches", batches), ("warmup", warmup), ("rounds", rounds)):
        if isinstance(v, bool) or not isinstance(v, int) or v < (0 if name == "warmup" else 1):
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    run, arch = _setup(Path(dataset_dir), recipe, seed, n_threads, ctx, settings)
    net, trainer = _build(run, arch, None, "local")
    net.hybridize(static_alloc=True, static_shape=True)
    cfg, info = run.cfg, run.info
    sp = info.split("train")
    with BatchReader(
        sp.rec,
        sp.idx,
        tile_size=info.tile_size,
        n_classes=len(info.classes),
        batch_size=cfg.batch_size,
        scale=info.scale,
        augment=cfg.augment,
        n_threads=n_threads,
    ) as reader:
        held = _held(reader, seed)
        memory = itertools.cycle(held)
        reading = _epochs(reader, seed)
        pairs = np.array(
            [
                (
                    _timed(run, net, trainer, memory, batches, warmup),
                    _timed(run, net, trainer, reading, batches, warmup),
                )
                for _ in range(rounds)
            ]
        )
        forward = float(np.median([_forward(net, held, batches, warmup) for _ in range(rounds)]))
    limit, real = (float(v) for v in np.median(pairs, axis=0))
    return Throughput(
        recipe=cfg.recipe,
        network=arch["name"],
        batch_size=cfg.batch_size,
        tile_size=info.tile_size,
        augment=cfg.augment,
        threads=resolve_threads(n_threads),
        batches=batches,
        limit=limit,
        real=real,
        forward=forward,
        ratio=float(np.median(pairs[:, 1] / pairs[:, 0])),
    )


def _setup(
    path: Path, recipe: str, seed: int, n_threads: int | None, ctx: Any, settings: dict[str, Any]
) -> tuple[_Run, dict[str, Any]]:
    """The training's shared state and architecture, as :func:`train` resolves them."""
    r = resolve_recipe(recipe, **settings)
    info = _dataset(path)
    n_train = _count(info, "train")
    stats = channel_stats(info, n_train) if r["standardise"] else None
    n_classes = len(info.classes)
    arch = network_spec(
        r["network"], n_classes, info.tile_size, None, init=r["init"], standardise=stats
    )
    weights = _class_weights(r["class_weights"], info)
    import_mxnet(n_threads)
    held = {k: v for k, v in r.items() if k in _Config.__dataclass_fields__}
    cfg = _Config(
        **held, seed=seed, kvstore="local", n_threads=n_threads, progress=False, log_interval=10**9
    )
    ctxs = parse_context(ctx)
    run = _Run(cfg, info, ctxs, weights, [], 1, 0, path, lambda line: None, n_train)
    return run, arch


def _held(reader: BatchReader, seed: int) -> list[tuple[Any, Any, int]]:
    """The first batches of an epoch, decoded and augmented, as NDArrays (all samples valid)."""
    epoch = reader.epoch(seed)
    try:
        out = [(d, lab, len(lab)) for d, lab, _ in itertools.islice(_nd_batches(epoch), _HELD)]
    finally:
        epoch.close()  # stop the read-ahead: nothing is read while the limit is timed
    return out


def _epochs(reader: BatchReader, seed: int) -> Iterator[tuple[Any, Any, int]]:
    """The reader's epochs one after another, as training reads them (a new order each)."""
    for e in itertools.count():
        yield from _nd_batches(reader.epoch(seed + 1 + e))


def _timed(
    run: _Run, net: Any, trainer: Any, source: Iterator[Any], batches: int, warmup: int
) -> float:
    """Samples per second of the training step over ``batches`` batches of ``source``."""
    mx = import_mxnet()
    bs, epoch = run.cfg.batch_size, int(run.cfg.warmup) + 1  # past the learning-rate warm-up
    off = _Progress(False, 1, "")
    if warmup:
        _train_epoch(run, net, trainer, itertools.islice(source, warmup), warmup * bs, epoch, off)
    mx.nd.waitall()
    t0 = time.perf_counter()
    row = _train_epoch(
        run, net, trainer, itertools.islice(source, batches), batches * bs, epoch, off
    )
    mx.nd.waitall()  # the last backward and update
    return row["samples_per_s"] * row["time_s"] / (time.perf_counter() - t0)


def _forward(net: Any, held: list[tuple[Any, Any, int]], batches: int, warmup: int) -> float:
    """Samples per second of the forward pass alone (prediction mode) on the held batches."""
    for i in range(max(warmup, 1)):
        net(held[i % len(held)][0]).wait_to_read()
    t0, seen = time.perf_counter(), 0
    for i in range(batches):
        data, _, valid = held[i % len(held)]
        net(data).wait_to_read()
        seen += valid
    return seen / max(time.perf_counter() - t0, 1e-9)
