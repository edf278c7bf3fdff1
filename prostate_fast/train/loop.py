"""Train a network on a packed dataset with MXNet Gluon, and export it.

The settings start from a recipe (:mod:`prostate_fast.train.recipes`): ``"default"`` (ResNet-10,
per-channel standardisation, class weights, augmentation, AUC selection with floors), which learns
on real tissue, or ``"study"``, the 2018 study's exactly (its CNN, SGD lr 0.001, momentum 0.8,
batch 32, 100 epochs, Xavier). The study's "input / 255" is the dataset's ``normalisation``
(applied by the record iterator here and by prediction from ``model.json``); the per-channel
standardisation, when asked, is the network's first layer, with its constants in the exported
weights, so every engine applies it.

Data: the ``train`` RecordIO file read by :class:`~.reader.BatchReader` (decoded and augmented
by ``n_threads`` threads ahead of the training step, each epoch's order and augmentation seeded
with ``(seed, epoch)``; the step itself is :func:`~.epoch._train_epoch`), ``val`` streamed through
``mx.io.ImageRecordIter`` (:func:`prostate_fast.dataset.record_iter`); samples counted here,
padded samples masked out of the loss and the metrics.

Outputs (``MODEL_DIR``, built in ``MODEL_DIR.partial`` and renamed when complete)::

    model-symbol.json, model-NNNN.params   the best epoch, softmax output, input "data" (NCHW RGB,
                                           float32, already scaled): SymbolBlock.imports or
                                           mx.mod.Module load them
    model.json                             what prediction needs: classes, colours, tile size,
                                           magnification, normalisation, threshold, architecture
    checkpoints/epoch-NNNN.params/.states  last and best epoch, for --resume
    state.json, log.csv, train.log, accuracy.png

Logs use MXNet's own format (``Epoch[0] Batch [20] Speed: ... samples/sec accuracy=...``,
``Epoch[0] Train-accuracy=...``, ``Epoch[0] Time cost=...``, ``Epoch[0] Validation-accuracy=...``);
like MXNet, ``Epoch[k]`` counts from 0 in log lines and file names count from 1
(``epoch-0001`` is the state after the first epoch).

Determinism: on CPU the same seed gives bit-identical weights, and ``resume`` from epoch k gives the
same weights as an uninterrupted run (the Xavier draw, every epoch's shuffle and augmentation are
seeded from ``seed``, the trainer's momentum is checkpointed).

Shape: :func:`train` validates its arguments into one ``_Config``, prepares the folder, builds the
network and trainer (``_build``, ``_restore``), then per epoch trains (``_train_epoch``), validates
(:func:`prostate_fast.metrics.validation_metrics`), keeps the best epoch by
:func:`prostate_fast.metrics.selection_key` and checkpoints (``_checkpoint``); ``_export`` writes
the best epoch and ``model.json`` with the threshold of
:func:`prostate_fast.metrics.threshold_for_sensitivity` on val.
"""

from __future__ import annotations

import math
import os
import random
import re
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from .._mx import import_mxnet, parse_context
from .._outputs import command_inputs, output_lock
from .._util import write_json as _write_json
from ..errors import DatasetError, ModelError
from ..metrics import (
    screening_score,
    selection_key,
    threshold_for_sensitivity,
    validation_metrics,
)
from ..model import write_model
from ..model.networks import StudyConfig, build_network, initializer, network_spec
from .config import _class_weights, _Config, _finish_dir, _prepare_dir, _settings
from .epoch import _nd_batches, _train_epoch
from .io import (
    _count,
    _dataset,
    _Progress,
    channel_stats,
    load_exported,
    predict_split,
    training_domain,
)
from .logs import fmt_number, write_log_timed
from .reader import BatchReader
from .recipes import RECIPE_DEFAULT, resolve_recipe

__all__ = ["TrainResult", "load_exported", "predict_split", "train"]


@dataclass(frozen=True)
class TrainResult:
    """What :func:`train` did: the model folder, the chosen epoch and the per-epoch history."""

    model_dir: Path
    best_epoch: int
    select: str
    best_score: float
    threshold: float
    history: list[dict[str, float]]
    seconds: float

    @property
    def best(self) -> dict[str, float]:
        """The log row of the best epoch (validation accuracy, sensitivity, ...)."""
        return self.history[self.best_epoch - 1]


# -- one training's shared state -----------------------------------------------------------------
@dataclass
class _Run:
    """What the helpers of one training share: settings, dataset, devices, worker part, folder."""

    cfg: _Config
    info: Any
    ctxs: list[Any]
    weights: list[float]
    steps: list[int]
    parts: int
    rank: int
    work: Path
    say: Callable[[str], None]
    n_train: int
    ran: int = 0  # epochs finished by this call

    def predict_val(self, net: Any) -> tuple[np.ndarray, np.ndarray]:
        return predict_split(
            net,
            self.info.path,
            "val",
            ctx=self.ctxs,
            batch_size=self.cfg.batch_size,
            classes=self.info.classes,
            tile_size=self.info.tile_size,
            scale=self.info.scale,
            n_threads=self.cfg.n_threads,
        )


# -- helpers --------------------------------------------------------------------------------------
def _epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch * 7919) % (2**31 - 1)


def _kvstore(mx: Any, kvstore: str) -> tuple[Any, int, int]:
    """The ``gluon.Trainer`` kvstore, the number of data parts and this worker's part (rank)."""
    if not kvstore.startswith("dist"):
        return kvstore, 1, 0
    kv = mx.kv.create(kvstore)
    return kv, kv.num_workers, kv.rank


def train(
    dataset_dir: str | os.PathLike[str],
    model_dir: str | os.PathLike[str],
    *,
    recipe: str = RECIPE_DEFAULT,
    network: str | None = None,
    study: StudyConfig | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    momentum: float | None = None,
    wd: float | None = None,
    lr_steps: Sequence[int] | str | None = None,
    lr_factor: float | None = None,
    class_weights: str | Sequence[float] | None = None,
    seed: int = 0,
    ctx: Any = "cpu",
    kvstore: str = "local",
    resume: bool = False,
    select: str | None = None,
    select_floor: float | None = None,
    target_sensitivity: float | None = None,
    augment: bool | str | None = None,
    standardise: bool | None = None,
    init: str | None = None,
    warmup: float | None = None,
    optimizer: str | None = None,
    n_threads: int | None = None,
    progress: bool = True,
    log_interval: int = 50,
    overwrite: bool = False,
    log: Callable[[str], None] = print,
) -> TrainResult:
    """Train a network on ``DATASET_DIR``'s train split, select an epoch on val, export the model.

    Parameters
    ----------
    dataset_dir : path
        A dataset folder (``prostate_fast.dataset``: dataset.json, train/val .rec/.idx/.csv).
    model_dir : path
        Output folder (module docstring); must not exist unless ``overwrite`` or ``resume``.
    recipe : {"default", "study"}
        The settings every other None argument takes (:mod:`prostate_fast.train.recipes`):
        ``"default"`` learns on real tissue (ResNet-10, standardised input, class weights,
        augmentation, AUC selection with floors); ``"study"`` is the 2018 study exactly.
    network : {"study", "resnet10", "resnet18"}, optional
        Architecture (:func:`prostate_fast.model.networks.build_network`); output size = the
        dataset's class count.
    study : StudyConfig, optional
        Filter and unit counts of the study's CNN (defaults: 32, 64 filters 5x5; 256-128-64).
    epochs, batch_size, lr, momentum, wd : optional
        Epochs, batch size, SGD learning rate, momentum and weight decay (L2).
    lr_steps, lr_factor : optional
        Multiply the learning rate by ``lr_factor`` at the start of each epoch in ``lr_steps``
        (1-based epoch numbers, or ``"60%,85%"``: shares of the epochs).
    class_weights : "none", "dataset" or sequence of float, optional
        Per-class loss weights: none, the dataset's (or inverse train frequencies), or given.
    seed : int
        Seeds the initialisation, every epoch's shuffle and augmentation.
    ctx : str or list
        ``"cpu"``, ``"gpu(0)"``, ``"gpu(0),gpu(1)"``: batches are split over several devices.
    kvstore : {"local", "device", "dist_sync", "dist_device_sync", "dist_async"}
        Passed to ``gluon.Trainer``. In ``dist_*`` mode each worker reads its part of the data
        and workers other than rank 0 write to ``MODEL_DIR.rankN``.
    resume : bool
        Continue ``MODEL_DIR.partial`` (an interrupted run) or a finished ``MODEL_DIR`` up to
        ``epochs``; the settings must match the saved ones.
    select : str, optional
        Validation metric that picks the exported epoch: ``"auc"``, ``"balanced_accuracy"``,
        ``"accuracy"``, ``"loss"`` or ``"sensitivity@specificity>=F"`` (best sensitivity over
        thresholds keeping specificity >= F).
    select_floor : float, optional
        Only epochs for which some threshold gives validation sensitivity and specificity both
        >= this can be chosen (0: any epoch); ModelError when no epoch qualifies.
    target_sensitivity : float, optional
        The threshold stored in model.json reaches this sensitivity on val (best epoch).
    augment : bool or {"flips", "colour"}, optional
        ``"flips"`` (or True): random mirror and 90-degree turns; ``"colour"``: those and a
        random HED jitter, brightness and contrast per tile (the dataset loader's augmentation,
        :func:`prostate_fast.dataset.record_iter`); False: none.
    standardise : bool, optional
        Standardise the input per channel with the train split's mean and standard deviation
        (the network's first layer, exported with it).
    init : {"xavier", "scaled"}, optional
        Weight initialisation (:func:`prostate_fast.model.networks.initializer`).
    warmup : float, optional
        Epochs over which the learning rate rises linearly from 0, batch by batch (0: none).
    optimizer : {"sgd", "adam"}, optional
        The optimiser (``momentum`` applies to SGD only).
    n_threads : int, optional
        Threads for MXNet and decoding (None: all cores).
    progress : bool
        Draw a progress bar on stderr.
    log_interval : int
        Batches between ``Speed`` log lines.
    overwrite : bool
        Replace an existing ``model_dir``.
    log : callable
        Receives each log line (also written to ``train.log``).

    Returns
    -------
    TrainResult

    Raises
    ------
    DatasetError
        Missing/unreadable dataset.json, missing or empty split, corrupt records, labels outside
        the classes.
    ModelError
        Resume with different classes or settings, unusable context.
    FileExistsError
        ``model_dir`` exists (without ``overwrite``/``resume``).
    ValueError
        Bad argument (named).

    Notes
    -----
    Cost on 2 CPU cores: about 70-110 tiles/s for the study's CNN on 128 px tiles at batch 32
    (13.9 M weights; the machine's load decides where), within a few per cent of the same step on
    batches held in memory (:mod:`.throughput`); about 800 tiles/s on 32 px tiles.
    """
    t_start = time.time()
    r = resolve_recipe(
        recipe,
        network=network,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        momentum=momentum,
        wd=wd,
        lr_steps=lr_steps,
        lr_factor=lr_factor,
        class_weights=class_weights,
        select=select,
        select_floor=select_floor,
        augment=augment,
        standardise=standardise,
        init=init,
        warmup=warmup,
        optimizer=optimizer,
        target_sensitivity=target_sensitivity,
    )
    # the recipe's settings that _Config holds (network, lr_steps, class weights and
    # standardisation are used below, once)
    held = {k: v for k, v in r.items() if k in _Config.__dataclass_fields__}
    cfg = _Config(
        **held,
        seed=seed,
        kvstore=kvstore,
        n_threads=n_threads,
        progress=progress,
        log_interval=log_interval,
    )
    if study is not None and r["network"] != "study":
        raise ValueError(
            f"the study CNN's layer sizes (--conv-filters, --dense-units) apply to network "
            f"'study' only, not {r['network']!r}: add --network study"
        )
    final = Path(model_dir)
    info = _dataset(Path(dataset_dir))
    n_train = _count(info, "train")
    _count(info, "val")
    network_spec(r["network"], len(info.classes), info.tile_size, study)  # checked before reading
    stats = channel_stats(info, n_train) if r["standardise"] else None
    arch = network_spec(
        r["network"], len(info.classes), info.tile_size, study, init=cfg.init, standardise=stats
    )
    weights = _class_weights(r["class_weights"], info)
    steps = r["lr_steps"]
    mx = import_mxnet(n_threads)
    ctxs = parse_context(ctx)
    kv, parts, rank = _kvstore(mx, kvstore)
    final = final.with_name(f"{final.name}.rank{rank}") if rank else final
    settings = _settings(cfg, info, arch, weights, steps, ctxs, mx.__version__)
    final.parent.mkdir(parents=True, exist_ok=True)
    with command_inputs([dataset_dir]), output_lock(final):  # one writer; the data is kept
        work, state, created = _prepare_dir(final, resume, overwrite, settings, epochs)
        (work / "checkpoints").mkdir(exist_ok=True)
        logfile = (work / "train.log").open("a")
        run = _Run(cfg, info, ctxs, weights, steps, parts, rank, work, _tee(logfile, log), n_train)
        try:
            history, best, threshold = _fit(run, study, kv, state, settings, arch)
        except BaseException:
            logfile.close()
            if created and run.ran == 0:  # nothing worth resuming: leave no partial output
                shutil.rmtree(work, ignore_errors=True)
            raise
        logfile.close()
        _finish_dir(work, final)
    best_score = selection_key(cfg.select, history[best - 1])
    seconds = time.time() - t_start
    return TrainResult(final, best, cfg.select, best_score, threshold, history, seconds)


def _tee(logfile: IO[str], log: Callable[[str], None]) -> Callable[[str], None]:
    """A log function that appends each line to ``logfile`` (flushed) and passes it to ``log``."""

    def say(line: str) -> None:
        logfile.write(line + "\n")
        logfile.flush()
        log(line)

    return say


def _fit(
    run: _Run,
    study: StudyConfig | None,
    kv: Any,
    state: dict[str, Any] | None,
    settings: dict[str, Any],
    arch: dict[str, Any],
) -> tuple[list[dict[str, float]], int, float]:
    """Train up to ``epochs`` (continuing a resumed ``state``) and export the best epoch.

    Returns the history (one log row per epoch), the best epoch and the stored threshold.
    """
    cfg = run.cfg
    net, trainer = _build(run, arch, study, kv)
    history, best = _restore(run, net, trainer, state)
    last_plot = time.time()
    net.hybridize(static_alloc=True, static_shape=True)
    for epoch in range(len(history) + 1, cfg.epochs + 1):
        row = _run_epoch(run, net, trainer, epoch)
        history.append(row)
        key = selection_key(cfg.select, row, cfg.select_floor)
        if best == 0 or key > selection_key(cfg.select, history[best - 1], cfg.select_floor):
            best = epoch
        state = {"settings": settings, "history": history, "best_epoch": best}
        _checkpoint(run, net, trainer, epoch, state)
        last_plot = write_log_timed(run.work, history, epoch == cfg.epochs, last_plot)
        run.ran += 1
    if selection_key(cfg.select, history[best - 1], cfg.select_floor) == -math.inf:
        raise ModelError(
            f"{run.work}: no epoch reached validation sensitivity and specificity >= "
            f"{cfg.select_floor:g} at any threshold (the network did not learn to tell the "
            "classes apart); "
            "nothing exported: train longer (--resume --epochs N) or check the labels"
        )
    threshold = _export(run, net, run.work, best, cfg.target_sensitivity, settings, arch)
    run.say(_best_line(cfg.select, best, history[best - 1], cfg.target_sensitivity, threshold))
    return history, best, threshold


def _build(run: _Run, arch: dict[str, Any], study: StudyConfig | None, kv: Any) -> tuple[Any, Any]:
    """Seed every generator, build and initialise the network, and make its trainer."""
    cfg = run.cfg
    mx = import_mxnet()
    random.seed(cfg.seed)
    np.random.seed(cfg.seed % 2**32)  # noqa: NPY002 - seeds libraries that use the global RNG
    mx.random.seed(cfg.seed)
    n_classes, tile = len(run.info.classes), run.info.tile_size
    net = build_network(
        arch["name"], n_classes, tile_size=tile, config=study, standardise=arch.get("standardise")
    )
    net.initialize(initializer(cfg.init), ctx=run.ctxs)
    _bn_momentum(net, run.n_train, cfg.batch_size)
    opt = {"learning_rate": cfg.lr, "wd": cfg.wd}
    if cfg.optimizer == "sgd":
        opt["momentum"] = cfg.momentum
    # dist_sync: workers aggregate gradients on the servers and update locally, so that every
    # worker holds the optimizer state and can checkpoint it (dist_async must update there)
    sync = cfg.kvstore in ("dist_sync", "dist_device_sync")
    local = {"update_on_kvstore": False} if sync else {}
    trainer = mx.gluon.Trainer(net.collect_params(), cfg.optimizer, opt, kvstore=kv, **local)
    return net, trainer


def _bn_momentum(net: Any, n_train: int, batch_size: int) -> None:
    """Batch norm's running statistics follow the last third of an epoch (momentum
    ``1 - 3 / batches``, at most 0.9), so validation does not lag on a small split; it did not
    cure the Known limit of the README. (The model-zoo ResNet takes no batch-norm arguments.)"""
    batches = max(1, math.ceil(n_train / batch_size))
    momentum = min(0.9, max(0.0, 1.0 - 3.0 / batches))
    stack = [net]
    while stack:
        block = stack.pop()
        if type(block).__name__ == "BatchNorm":
            block._kwargs["momentum"] = momentum
        stack.extend(block._children.values())


def _restore(
    run: _Run, net: Any, trainer: Any, state: dict[str, Any] | None
) -> tuple[list[dict[str, float]], int]:
    """Load the last checkpoint of a resumed run; return its history and best epoch (0: none)."""
    if state is None:
        return [], 0
    history, best = state["history"], state["best_epoch"]
    ckpt = run.work / "checkpoints"
    net.load_parameters(str(ckpt / f"epoch-{len(history):04d}.params"), ctx=run.ctxs)
    if run.cfg.kvstore != "dist_async":
        trainer.load_states(str(ckpt / f"epoch-{len(history):04d}.states"))
    run.say(f"Resuming from epoch {len(history)} (best so far: epoch {best})")
    return history, best


def _run_epoch(run: _Run, net: Any, trainer: Any, epoch: int) -> dict[str, float]:
    """Train one epoch (learning rate, shuffle and augmentation of ``epoch``), then validate."""
    cfg = run.cfg
    mx = import_mxnet()
    rate = cfg.lr * cfg.lr_factor ** sum(1 for s in run.steps if s <= epoch)
    trainer.set_learning_rate(rate)
    eseed = _epoch_seed(cfg.seed, epoch)
    mx.random.seed(eseed)
    n_train = run.n_train
    with _reader(run) as reader:
        # ImageRecordIter's parts held ceil(n / parts) records and the last one the rest, as the
        # reader's do: every worker reads as many as the smallest part, so all take the same steps
        n_epoch = n_train - (run.parts - 1) * math.ceil(n_train / run.parts)
        if n_epoch < 1:
            rec = run.info.split("train").rec
            raise DatasetError(f"{rec}: {n_train} records cannot be shared by {run.parts} workers")
        bar = _Progress(cfg.progress, n_epoch, f"epoch {epoch}/{cfg.epochs}")
        batches = _nd_batches(reader.epoch(eseed, n_epoch))
        row = _train_epoch(run, net, trainer, batches, n_epoch, epoch, bar)
    row["lr"] = rate
    t0 = time.time()
    labels, prob = run.predict_val(net)
    row.update(validation_metrics(labels, prob, run.info.classes, cfg.select))
    row["time_s"] += time.time() - t0
    for k in ("accuracy", "sensitivity", "specificity", "auc", "loss"):
        run.say(f"Epoch[{epoch - 1}] Validation-{k}={row['val_' + k]:f}")
    return row


def _reader(run: _Run) -> BatchReader:
    """The training split's :class:`BatchReader` for this worker's part."""
    sp, cfg = run.info.split("train"), run.cfg
    return BatchReader(
        sp.rec,
        sp.idx,
        tile_size=run.info.tile_size,
        n_classes=len(run.info.classes),
        batch_size=cfg.batch_size,
        scale=run.info.scale,
        augment=cfg.augment,
        n_threads=cfg.n_threads,
        num_parts=run.parts,
        part_index=run.rank,
    )


def _checkpoint(run: _Run, net: Any, trainer: Any, epoch: int, state: dict[str, Any]) -> None:
    """Save ``epoch``'s weights (and optimizer state), state.json; keep only last and best."""
    ckpt = run.work / "checkpoints"
    net.save_parameters(str(ckpt / f"epoch-{epoch:04d}.params"))
    if run.cfg.kvstore != "dist_async":  # its optimizer state lives on the servers
        trainer.save_states(str(ckpt / f"epoch-{epoch:04d}.states"))
    _write_json(run.work / "state.json", state)
    for old in ckpt.iterdir():  # keep only the last and the best epoch
        if int(re.sub(r"\D", "", old.stem) or 0) not in (epoch, state["best_epoch"]):
            old.unlink()


def _best_line(
    select: str, best: int, row: dict[str, float], target: float, threshold: float
) -> str:
    """The log line that closes a training: the chosen epoch, its validation rates, threshold."""
    b = {k: fmt_number(v) for k, v in row.items()}
    return (
        f"Best epoch {best} by {select}: validation accuracy {b['val_accuracy']}, "
        f"sensitivity {b['val_sensitivity']}, specificity {b['val_specificity']}, "
        f"AUC {b['val_auc']}; threshold for sensitivity {target:g}: {threshold:.4g}"
    )


def _export(
    run: _Run,
    net: Any,
    work: Path,
    best: int,
    target: float,
    settings: dict[str, Any],
    arch: dict[str, Any],
) -> float:
    """Export the best epoch (softmax output) and write model.json; return the threshold."""
    info, classes = run.info, list(run.info.classes)
    net.load_parameters(str(work / "checkpoints" / f"epoch-{best:04d}.params"), ctx=run.ctxs)
    labels, prob = run.predict_val(net)
    score, pos = screening_score(prob, classes)
    y = pos[labels]
    threshold = threshold_for_sensitivity(y, score, target) if y.any() else 0.5
    positive = "+".join(c for c, p in zip(classes, pos, strict=True) if p)
    source = "validation split" if y.any() else "default"
    write_model(
        work,
        net,
        epoch=best,
        classes=classes,
        colours=info.colours,
        tile_size=info.tile_size,
        scale=info.scale,
        magnification=info.magnification,
        mpp=info.mpp,
        downsample=info.downsample,
        threshold={positive: threshold, "target_sensitivity": target, "source": source},
        architecture=arch,
        training={**settings, "best_epoch": best},
        ctx=run.ctxs[0],
        domain=training_domain(info, run.n_train),
        stain=info.stain,
    )
    return float(threshold)
