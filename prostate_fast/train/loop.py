"""Train the study's CNN (or another network) on a packed dataset with MXNet Gluon, and export it.

The defaults are the 2018 study's: its CNN (:mod:`prostate_fast.networks`), SGD with learning rate
0.001 and momentum 0.8, batch 32, 100 epochs, Xavier initialisation. Its "input / 255" is the
dataset's ``normalisation`` (applied by the record iterator here and by prediction from
``model.json``), never a layer inside the network.

Data: ``train``/``val`` RecordIO files streamed through ``mx.io.ImageRecordIter``
(:func:`prostate_fast.dataset.record_iter`), a fresh iterator per epoch seeded with
``(seed, epoch)``, samples counted here (the iterator's ``pad`` is unreliable), padded samples
masked out of the loss and the metrics.

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
"""

from __future__ import annotations

import csv
import json
import math
import os
import random
import re
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._mx import import_mxnet, parse_context
from .._util import write_json as _write_json
from ..errors import DatasetError, ModelError
from ..model import write_model
from ..model.networks import StudyConfig, build_network, network_spec
from .io import (
    _batches,
    _count,
    _dataset,
    _open_records,
    _Progress,
    load_exported,
    predict_split,
)

__all__ = ["SELECT_DEFAULT", "TrainResult", "load_exported", "predict_split", "train"]

SELECT_DEFAULT = "sensitivity@specificity>=0.5"
_SELECT_RE = re.compile(r"sensitivity@specificity>=(0(?:\.\d+)?|1(?:\.0*)?)$")
_KVSTORES = ("local", "device", "dist_sync", "dist_device_sync", "dist_async")
# settings that must not change when resuming (epochs, ctx, kvstore, threads may)
_RESUME_KEYS = (
    "architecture", "batch_size", "lr", "momentum", "wd", "lr_steps", "lr_factor",
    "class_weights", "seed", "select", "augment", "classes",
)  # fmt: skip


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


# -- helpers --------------------------------------------------------------------------------------
def _epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch * 7919) % (2**31 - 1)


def _select_key(select: str, row: dict[str, Any]) -> float:
    """The value to maximise for ``select`` (NaN/None, e.g. AUC of a one-class split: -inf)."""
    key = {"accuracy": "val_accuracy", "auc": "val_auc", "loss": "val_loss"}.get(
        select, "val_select"
    )
    value = row.get(key)
    if value is None or math.isnan(value):
        return -math.inf
    return -float(value) if key == "val_loss" else float(value)


def _class_weights(spec: Any, info: Any) -> list[float]:
    n_classes = len(info.classes)
    if spec is None:
        return [1.0] * n_classes
    if isinstance(spec, str):
        if spec != "dataset":
            raise ValueError(f"class_weights must be None, 'dataset' or numbers, got {spec!r}")
        if info.class_weights:
            return [float(w) for w in info.class_weights]
        counts = np.maximum(np.asarray(info.split("train").per_class, float), 1)
        return [float(w) for w in counts.sum() / (n_classes * counts)]
    weights = [float(w) for w in spec]
    if len(weights) != n_classes or any(not w > 0 for w in weights):
        raise ValueError(f"class_weights must be {n_classes} positive numbers, got {spec!r}")
    return weights


def _validate(
    epochs: int, batch_size: int, lr: float, momentum: float, wd: float, select: str, kv: str,
    lr_factor: float, target: float, log_interval: int,
) -> None:  # fmt: skip
    for name, v in (("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr!r}")
    if not 0 <= momentum < 1:
        raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
    if not wd >= 0:
        raise ValueError(f"wd must be >= 0, got {wd!r}")
    if select not in ("accuracy", "auc", "loss") and not _SELECT_RE.fullmatch(select):
        raise ValueError(
            "select must be accuracy, auc, loss or sensitivity@specificity>=F, got " + repr(select)
        )
    for name, v, lo in (("lr_factor", lr_factor, 0.0), ("target_sensitivity", target, 0.0)):
        if not (lo < v <= (1.0 if name == "target_sensitivity" else math.inf)):
            raise ValueError(f"{name} out of range, got {v!r}")
    if isinstance(log_interval, bool) or not isinstance(log_interval, int) or log_interval <= 0:
        raise ValueError(f"log_interval must be a positive integer, got {log_interval!r}")
    if kv not in _KVSTORES:
        raise ValueError(f"kvstore must be one of {', '.join(_KVSTORES)}, got {kv!r}")


def _prepare_dir(
    final: Path, resume: bool, overwrite: bool, settings: dict[str, Any], epochs: int
) -> tuple[Path, dict[str, Any] | None, bool]:
    """Return the working folder ``final.partial``, the saved state (resume) and whether the
    folder was made by this call (so that a failure before the first epoch can remove it)."""
    part = final.with_name(final.name + ".partial")
    if resume:
        source = next((d for d in (part, final) if (d / "state.json").is_file()), None)
        if source is None:
            if part.is_dir():
                return part, None, False  # interrupted before the first checkpoint
            raise ModelError(f"{final}: nothing to resume (no {part.name} and no finished model)")
        try:
            state = json.loads((source / "state.json").read_text())
            saved, done = state["settings"], len(state["history"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ModelError(
                f"{source / 'state.json'}: unreadable training state ({exc})"
            ) from None
        now = json.loads(json.dumps(settings, default=str))  # tuples -> lists, as saved
        changed = [k for k in _RESUME_KEYS if saved.get(k) != now[k]]
        if changed:
            raise ModelError(
                f"{source / 'state.json'}: cannot resume with different {', '.join(changed)} "
                f"(saved {[saved.get(k) for k in changed]})"
            )
        if done >= epochs:
            raise ModelError(f"{source}: already trained for {done} epochs; ask for more")
        if source == final:
            shutil.copytree(final, part)  # continue a finished run for more epochs
        return part, state, source == final
    if final.exists() and not overwrite:
        raise FileExistsError(f"{final}: already exists; use --overwrite or --resume")
    if part.exists():
        if not overwrite:
            raise FileExistsError(
                f"{part}: an interrupted training is there; use --resume or --overwrite"
            )
        shutil.rmtree(part)
    part.mkdir(parents=True)
    return part, None, True


def _finish_dir(part: Path, final: Path) -> None:
    old = final.with_name(final.name + ".old")
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    os.replace(part, final)
    shutil.rmtree(old, ignore_errors=True)


def train(
    dataset_dir: str | os.PathLike[str],
    model_dir: str | os.PathLike[str],
    *,
    network: str = "study",
    study: StudyConfig | None = None,
    epochs: int = 100,
    batch_size: int = 32,
    lr: float = 0.001,
    momentum: float = 0.8,
    wd: float = 0.0,
    lr_steps: Sequence[int] | None = None,
    lr_factor: float = 0.1,
    class_weights: str | Sequence[float] | None = None,
    seed: int = 0,
    ctx: Any = "cpu",
    kvstore: str = "local",
    resume: bool = False,
    select: str = SELECT_DEFAULT,
    target_sensitivity: float = 0.99,
    augment: bool = False,
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
    network : {"study", "resnet10", "resnet18"}
        Architecture (:func:`prostate_fast.networks.build_network`); output size = the dataset's
        class count.
    study : StudyConfig, optional
        Filter and unit counts of the study's CNN (defaults: 32, 64 filters 5x5; 256-128-64).
    epochs, batch_size, lr, momentum : optional
        The study's defaults: 100 epochs, batch 32, SGD learning rate 0.001, momentum 0.8.
    wd : float
        Weight decay (L2), 0 in the study.
    lr_steps, lr_factor : optional
        Multiply the learning rate by ``lr_factor`` at the start of each epoch in ``lr_steps``
        (1-based epoch numbers).
    class_weights : None, "dataset" or sequence of float
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
    select : str
        Validation metric that picks the exported epoch: ``"sensitivity@specificity>=F"``
        (default F = 0.5: best sensitivity over thresholds keeping specificity >= F),
        ``"accuracy"``, ``"auc"`` or ``"loss"``.
    target_sensitivity : float
        The threshold stored in model.json reaches this sensitivity on val (best epoch).
    augment : bool
        Random mirror and 90-degree turns (the dataset loader's augmentation).
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
    Cost on 2 CPU cores: about 30 tiles/s for the study's CNN on 128 px tiles (13.9 M weights),
    about 800 tiles/s on 32 px tiles.
    """
    t_start = time.time()
    _validate(epochs, batch_size, lr, momentum, wd, select, kvstore, lr_factor,
              target_sensitivity, log_interval)  # fmt: skip
    final = Path(model_dir)
    info = _dataset(Path(dataset_dir))
    classes, tile = list(info.classes), info.tile_size
    arch = network_spec(network, len(classes), tile, study)
    weights = _class_weights(class_weights, info)
    steps = sorted(int(s) for s in (lr_steps or []))
    n_train = _count(info, "train")
    _count(info, "val")
    mx = import_mxnet(n_threads)
    ctxs = parse_context(ctx)
    kv: Any = kvstore
    parts, rank = 1, 0
    if kvstore.startswith("dist"):
        kv = mx.kv.create(kvstore)
        parts, rank = kv.num_workers, kv.rank
        final = final.with_name(f"{final.name}.rank{rank}") if rank else final
    settings = {
        "dataset": str(info.path.resolve()), "architecture": arch, "classes": classes,
        "batch_size": batch_size, "lr": lr, "momentum": momentum, "wd": wd, "lr_steps": steps,
        "lr_factor": lr_factor, "class_weights": weights, "seed": seed, "select": select,
        "augment": augment, "optimizer": "sgd", "initializer": "xavier", "epochs": epochs,
        "ctx": [str(c) for c in ctxs], "kvstore": kvstore, "mxnet": mx.__version__,
        "target_sensitivity": target_sensitivity,
    }  # fmt: skip
    work, state, created = _prepare_dir(final, resume, overwrite, settings, epochs)
    ran = 0
    ckpt = work / "checkpoints"
    ckpt.mkdir(exist_ok=True)
    logfile = (work / "train.log").open("a")

    def say(line: str) -> None:
        logfile.write(line + "\n")
        logfile.flush()
        log(line)

    run = _Run(info, ctxs, batch_size, n_threads, select, say)
    try:
        random.seed(seed)
        np.random.seed(seed % 2**32)  # noqa: NPY002 - seeds libraries that use the global RNG
        mx.random.seed(seed)
        net = build_network(network, len(classes), tile_size=tile, config=study)
        net.initialize(mx.init.Xavier(), ctx=ctxs)
        opt = {"learning_rate": lr, "momentum": momentum, "wd": wd}
        # dist_sync: workers aggregate gradients on the servers and update locally, so that every
        # worker holds the optimizer state and can checkpoint it (dist_async must update there)
        local = {"update_on_kvstore": False} if kvstore in ("dist_sync", "dist_device_sync") else {}
        trainer = mx.gluon.Trainer(net.collect_params(), "sgd", opt, kvstore=kv, **local)
        history: list[dict[str, float]] = []
        best, last_plot = 0, time.time()
        if state is not None:
            history, best = state["history"], state["best_epoch"]
            net.load_parameters(str(ckpt / f"epoch-{len(history):04d}.params"), ctx=ctxs)
            if kvstore != "dist_async":
                trainer.load_states(str(ckpt / f"epoch-{len(history):04d}.states"))
            say(f"Resuming from epoch {len(history)} (best so far: epoch {best})")
        net.hybridize(static_alloc=True, static_shape=True)
        for epoch in range(len(history) + 1, epochs + 1):
            rate = lr * lr_factor ** sum(1 for s in steps if s <= epoch)
            trainer.set_learning_rate(rate)
            eseed = _epoch_seed(seed, epoch)
            mx.random.seed(eseed)
            it = _train_iter(info, batch_size, augment, eseed, n_threads, parts, rank)
            # ImageRecordIter's parts hold ceil(n / parts) records and the last one the rest:
            # every worker reads as many as the smallest part, so all take the same steps
            n_epoch = n_train - (parts - 1) * math.ceil(n_train / parts)
            if n_epoch < 1:
                raise DatasetError(f"{info.split('train').rec}: {n_train} records cannot be "
                                   f"shared by {parts} workers")  # fmt: skip
            bar = _Progress(progress, n_epoch, f"epoch {epoch}/{epochs}")
            row = _train_epoch(run, net, trainer, it, n_epoch, weights, epoch, log_interval, bar)
            row["lr"] = rate
            t0 = time.time()
            row.update(_val_metrics(run, net))
            row["time_s"] += time.time() - t0
            for k in ("accuracy", "sensitivity", "specificity", "auc", "loss"):
                say(f"Epoch[{epoch - 1}] Validation-{k}={row['val_' + k]:f}")
            history.append(row)
            if best == 0 or _select_key(select, row) > _select_key(select, history[best - 1]):
                best = epoch
            net.save_parameters(str(ckpt / f"epoch-{epoch:04d}.params"))
            if kvstore != "dist_async":  # its optimizer state lives on the servers
                trainer.save_states(str(ckpt / f"epoch-{epoch:04d}.states"))
            state = {"settings": settings, "history": history, "best_epoch": best}
            _write_json(work / "state.json", state)
            for old in ckpt.iterdir():  # keep only the last and the best epoch
                if int(re.sub(r"\D", "", old.stem) or 0) not in (epoch, best):
                    old.unlink()
            last_plot = _write_log_timed(work, history, epoch == epochs, last_plot)
            ran += 1
        threshold = _export(run, net, work, best, target_sensitivity, settings, arch)
        b = {k: _fmt(v) for k, v in history[best - 1].items()}
        say(f"Best epoch {best} by {select}: validation accuracy {b['val_accuracy']}, "
            f"sensitivity {b['val_sensitivity']}, specificity {b['val_specificity']}, "
            f"AUC {b['val_auc']}; threshold for sensitivity {target_sensitivity:g}: "
            f"{threshold:.4g}")  # fmt: skip
    except BaseException:
        logfile.close()
        if created and ran == 0:  # nothing worth resuming: leave no partial output
            shutil.rmtree(work, ignore_errors=True)
        raise
    logfile.close()
    _finish_dir(work, final)
    return TrainResult(final, best, select, _select_key(select, history[best - 1]), threshold,
                       history, time.time() - t_start)  # fmt: skip


@dataclass
class _Run:
    """What the per-epoch helpers share."""

    info: Any
    ctxs: list[Any]
    batch_size: int
    n_threads: int | None
    select: str
    say: Callable[[str], None]

    def predict_val(self, net: Any) -> tuple[np.ndarray, np.ndarray]:
        return predict_split(net, self.info.path, "val", ctx=self.ctxs, batch_size=self.batch_size,
                             classes=self.info.classes, tile_size=self.info.tile_size,
                             scale=self.info.scale, n_threads=self.n_threads)  # fmt: skip


def _train_iter(
    info: Any, batch_size: int, augment: bool, seed: int, n_threads: int | None, parts: int,
    rank: int,
) -> Any:  # fmt: skip
    return _open_records(info, "train", batch_size=batch_size, shuffle=True, augment=augment,
                         seed=seed, n_threads=n_threads, num_parts=parts, part_index=rank)  # fmt: skip


def _train_epoch(
    run: _Run, net: Any, trainer: Any, it: Any, n: int, weights: list[float], epoch: int,
    log_interval: int, bar: _Progress,
) -> dict[str, float]:  # fmt: skip
    """One pass over the training split; return the epoch's training log row."""
    mx = import_mxnet()
    loss_fn = mx.gluon.loss.SoftmaxCrossEntropyLoss()
    w_nd, ctxs, e0 = mx.nd.array(weights), run.ctxs, epoch - 1
    t0 = tic = time.time()
    seen = correct = 0
    loss_sum = 0.0
    rec = run.info.split("train").rec
    for b, (data, label, valid) in enumerate(_batches(it, n, rec, len(run.info.classes)), 1):
        sw = w_nd.take(label) * (mx.nd.arange(data.shape[0]) < valid)
        xs, ys, ws = (mx.gluon.utils.split_and_load(a, ctxs, even_split=False)
                      for a in (data, label, sw))  # fmt: skip
        with mx.autograd.record():
            outs = [net(x) for x in xs]
            losses = [
                loss_fn(o, y, w.reshape((-1, 1))) for o, y, w in zip(outs, ys, ws, strict=True)
            ]
        mx.autograd.backward(losses)
        trainer.step(valid)
        for o, y, w, lo in zip(outs, ys, ws, losses, strict=True):
            correct += int(((o.argmax(axis=1) == y) * (w > 0)).sum().asscalar())
            loss_sum += float(lo.sum().asscalar())
        seen += valid
        bar.update(seen, f"accuracy {correct / seen:.3f}")
        if b % log_interval == 0:
            bar.close()
            speed = log_interval * run.batch_size / max(time.time() - tic, 1e-9)
            run.say(f"Epoch[{e0}] Batch [{b}]\tSpeed: {speed:.2f} samples/sec\t"
                    f"accuracy={correct / seen:f}")  # fmt: skip
            tic = time.time()
    bar.close()
    cost = time.time() - t0
    row = {"epoch": epoch, "train_loss": loss_sum / seen, "train_accuracy": correct / seen,
           "time_s": cost, "samples_per_s": seen / cost}  # fmt: skip
    run.say(f"Epoch[{e0}] Train-accuracy={row['train_accuracy']:f}")
    run.say(f"Epoch[{e0}] Train-loss={row['train_loss']:f}")
    run.say(f"Epoch[{e0}] Time cost={cost:.3f}")
    return row


def _val_metrics(run: _Run, net: Any) -> dict[str, float]:
    from ..evaluate import evaluate_predictions, screening_score, sensitivity_at_specificity

    labels, prob = run.predict_val(net)
    ev = evaluate_predictions(labels, prob, classes=run.info.classes)
    score, pos = screening_score(prob, run.info.classes)
    m = _SELECT_RE.fullmatch(run.select)
    floor = float(m.group(1)) if m else 0.5
    loss = -np.log(np.clip(prob[np.arange(labels.size), labels], 1e-12, None)).mean()
    return {
        "val_loss": float(loss),
        "val_accuracy": float((prob.argmax(axis=1) == labels).mean()),
        "val_sensitivity": ev.pooled.sensitivity,
        "val_specificity": ev.pooled.specificity,
        "val_auc": ev.auc,
        "val_select": sensitivity_at_specificity(pos[labels], score, floor),
    }


_LOG_COLUMNS = (
    "epoch", "lr", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_sensitivity",
    "val_specificity", "val_auc", "val_select", "time_s", "samples_per_s",
)  # fmt: skip


def _write_log_timed(work: Path, history: list[dict[str, float]], last: bool, t: float) -> float:
    """Write log.csv; redraw accuracy.png (0.5 s with matplotlib) at the end and once a minute."""
    tmp = work / ".log.csv.part"
    with tmp.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(_LOG_COLUMNS)
        for row in history:
            w.writerow([row["epoch"]] + [_fmt(row[k]) for k in _LOG_COLUMNS[1:]])
    os.replace(tmp, work / "log.csv")
    if not (last or time.time() - t > 60):
        return t
    from .._plot import line_chart_png

    def col(k: str) -> list[float]:
        return [math.nan if r[k] is None else r[k] for r in history]

    series = {
        "train accuracy": col("train_accuracy"),
        "validation accuracy": col("val_accuracy"),
        "validation sensitivity": col("val_sensitivity"),
        "validation specificity": col("val_specificity"),
    }
    line_chart_png(work / "accuracy.png", col("epoch"), series, title="accuracy per epoch")
    return time.time()


def _fmt(v: float | None) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.6g}"


def _export(
    run: _Run, net: Any, work: Path, best: int, target: float, settings: dict[str, Any],
    arch: dict[str, Any],
) -> float:  # fmt: skip
    """Export the best epoch (softmax output) and write model.json; return the threshold."""
    from ..evaluate import screening_score, threshold_for_sensitivity

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
    )
    return float(threshold)
