"""One training epoch: the step (forward, backward, update) over a stream of batches.

Internal to :mod:`prostate_fast.train`. :func:`_train_epoch` takes any iterable of
``(data, label, valid)`` batches: the training loop feeds it :class:`~.reader.BatchReader`'s
batches (:func:`_nd_batches`), and :mod:`.throughput` feeds it the same batches held in memory,
so that the compute limit is measured with exactly the step training runs.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from .._mx import import_mxnet
from .io import _Progress


def _nd_batches(
    batches: Iterable[tuple[np.ndarray, np.ndarray, int]],
) -> Iterator[tuple[Any, Any, int]]:
    """NumPy ``(data, label, valid)`` batches as CPU NDArrays; the data is borrowed, not copied
    (``mx.nd.array`` copied 6 MB in 10 ms, a tenth of the study CNN's step at batch 32)."""
    mx = import_mxnet()
    for data, label, valid in batches:
        yield mx.nd.from_numpy(data, zero_copy=True), mx.nd.array(label), valid


def _train_epoch(
    run: Any, net: Any, trainer: Any, batches: Iterable[Any], n: int, epoch: int, bar: _Progress
) -> dict[str, float]:
    """One pass over ``batches`` (``n`` real samples): the training step per batch, padded
    samples weighted 0; return the epoch's training log row."""
    mx = import_mxnet()
    loss_fn = mx.gluon.loss.SoftmaxCrossEntropyLoss()
    w_nd, ctxs, e0 = mx.nd.array(run.weights), run.ctxs, epoch - 1
    rate = trainer.learning_rate
    t0 = tic = time.time()
    seen = correct = 0
    loss_sum = 0.0
    for b, (data, label, valid) in enumerate(batches, 1):
        if epoch <= run.cfg.warmup:  # linear warm-up of the learning rate, batch by batch
            done = (e0 * n + seen + valid) / (run.cfg.warmup * n)
            trainer.set_learning_rate(rate * min(1.0, done))
        sw = w_nd.take(label) * (mx.nd.arange(data.shape[0]) < valid)
        split = mx.gluon.utils.split_and_load
        xs, ys, ws = (split(a, ctxs, even_split=False) for a in (data, label, sw))
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
        if b % run.cfg.log_interval == 0:
            bar.close()
            speed = run.cfg.log_interval * run.cfg.batch_size / max(time.time() - tic, 1e-9)
            accuracy = correct / seen
            run.say(
                f"Epoch[{e0}] Batch [{b}]\tSpeed: {speed:.2f} samples/sec\taccuracy={accuracy:f}"
            )
            tic = time.time()
    bar.close()
    cost = time.time() - t0
    row = {
        "epoch": epoch,
        "train_loss": loss_sum / seen,
        "train_accuracy": correct / seen,
        "time_s": cost,
        "samples_per_s": seen / cost,
    }
    run.say(f"Epoch[{e0}] Train-accuracy={row['train_accuracy']:f}")
    run.say(f"Epoch[{e0}] Train-loss={row['train_loss']:f}")
    run.say(f"Epoch[{e0}] Time cost={cost:.3f}")
    return row
