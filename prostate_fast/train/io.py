"""Reading side of :mod:`prostate_fast.train`: dataset checks, batches, running a model on a split.

:func:`predict_split` runs a network over one split of a packed dataset in record order (training
uses it on the validation split every epoch, :mod:`prostate_fast.evaluate` on an exported model);
:func:`load_exported` gets an exported model ready for it, through the model folder's own reader
and loader (:mod:`prostate_fast.model`). Also the small helpers the training loop shares: the
dataset checks, the record iterator that names the file on a read error, and the progress bar.
MXNet is imported lazily, inside the functions.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._mx import import_mxnet, parse_context
from ..errors import DatasetError, ModelError
from ..model import ModelInfo, load_network, read_model_info

__all__ = ["channel_stats", "load_exported", "predict_split", "training_domain"]

#: Train-split tiles measured for the model's stain domain (spread evenly over the split).
DOMAIN_SAMPLE = 512
#: Train-split tiles measured for the input standardisation (spread evenly over the split).
STATS_SAMPLE = 2048


# -- data ------------------------------------------------------------------------------------------
def _dataset(dataset_dir: Path) -> Any:
    """The dataset's validated description (prostate_fast.dataset.DatasetInfo)."""
    from ..dataset import load_dataset_info

    info = load_dataset_info(dataset_dir)  # per_class of every split checked against classes
    if len(info.classes) < 2:
        raise DatasetError(
            f"{info.path / 'dataset.json'}: needs two classes, has {list(info.classes)}"
        )
    return info


def training_domain(info: Any, n_records: int) -> Any:
    """The stain domain of the train split (:func:`prostate_fast.model.domain.measure_domain`).

    Measured on at most :data:`DOMAIN_SAMPLE` records spread evenly over the split (about 0.1 s
    for 512 tiles of 128 px); None when none of them has tissue.
    """
    from ..dataset import read_records
    from ..model.domain import measure_domain, sample_indices

    ids = list(sample_indices(n_records, DOMAIN_SAMPLE))
    tiles = [rgb for _, rgb, _ in read_records(info.path, "train", ids)]
    return measure_domain(np.stack(tiles)) if tiles else None


def channel_stats(info: Any, n_records: int) -> dict[str, list[float]]:
    """Per-channel mean and standard deviation (RGB) of the train split, in the units the network
    sees (pixels times the dataset's scale), over at most :data:`STATS_SAMPLE` records spread
    evenly over the split (the split's order is random by slide, so this is a fair sample).

    A channel whose deviation is below 1e-3 of the scale (a flat colour) gets the scale itself,
    so that standardising never divides by almost nothing.
    """
    from ..dataset import read_records
    from ..model.domain import sample_indices

    ids = list(sample_indices(n_records, STATS_SAMPLE))
    total = np.zeros(3)
    square = np.zeros(3)
    count = 0
    for _, rgb, _ in read_records(info.path, "train", ids):
        px = rgb.reshape(-1, 3).astype(np.float64)
        total += px.sum(axis=0)
        square += (px * px).sum(axis=0)
        count += px.shape[0]
    mean = total / max(count, 1)
    std = np.sqrt(np.maximum(square / max(count, 1) - mean * mean, 0.0))
    std = np.where(std < 1e-3 * 255, 255.0, std)
    return {
        "mean": [float(v) for v in mean * info.scale],
        "std": [float(v) for v in std * info.scale],
    }


def _count(info: Any, split: str) -> int:
    """Number of records of a split, its records checked (DatasetError when missing or empty)."""
    try:
        sp = info.split(split)
    except ValueError as exc:
        raise DatasetError(str(exc)) from None
    n = _check_rec(sp.rec, sp.idx)
    if n == 0:
        raise DatasetError(f"{sp.rec}: split {split!r} has no records")
    return n


def _check_rec(rec: Path, idx: Path) -> int:
    """Check every index entry points at a RecordIO record header (cheap: one seek per record);
    return the number of entries (``prostate_fast.dataset.count_records``: non-blank lines)."""
    size = rec.stat().st_size
    magic = (0xCED7230A).to_bytes(4, "little")
    n = 0
    with rec.open("rb") as fh:
        for line in idx.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            n += 1
            try:
                offset = int(line.split("\t")[1])
            except (IndexError, ValueError):
                raise DatasetError(f"{idx}: malformed index line {line[:40]!r}") from None
            fh.seek(offset)
            head = fh.read(8)
            length = int.from_bytes(head[4:], "little") & ((1 << 29) - 1) if len(head) == 8 else 0
            if head[:4] != magic or offset + 8 + length > size:
                raise DatasetError(f"{rec}: corrupt or truncated record at byte {offset}")
    return n


def _mx_error(rec: Path, exc: BaseException) -> DatasetError:
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[-1][:200]
    return DatasetError(f"{rec}: unreadable record ({first})")


def _open_records(info: Any, split: str, **kwargs: Any) -> Any:
    """prostate_fast.dataset.record_iter; MXNet read errors (it prefetches) become DatasetError."""
    from ..dataset import record_iter

    mx = import_mxnet()
    try:
        return record_iter(info.path, split, **kwargs)
    except mx.base.MXNetError as exc:
        raise _mx_error(info.split(split).rec, exc) from None


def _batches(it: Any, n: int, rec: Path, n_classes: int) -> Iterator[tuple[Any, Any, int]]:
    """Yield ``(data, label, valid)`` until ``n`` samples; MXNet read errors become DatasetError."""
    mx = import_mxnet()
    seen = 0
    while seen < n:
        try:
            batch = it.next()
            valid = min(batch.data[0].shape[0], n - seen)
            label = batch.label[0].asnumpy()  # the padded tail may hold garbage: mask it
        except StopIteration:
            raise DatasetError(f"{rec}: ended after {seen} of {n} records") from None
        except mx.base.MXNetError as exc:
            raise _mx_error(rec, exc) from None
        label[valid:] = 0
        if label.max() >= n_classes or label.min() < 0:
            raise DatasetError(f"{rec}: label {label.max():g} outside the {n_classes} classes")
        seen += valid
        yield batch.data[0], mx.nd.array(label), valid


def predict_split(
    net: Any,
    dataset_dir: str | os.PathLike[str],
    split: str,
    *,
    ctx: Any,
    batch_size: int,
    classes: Sequence[str],
    tile_size: int,
    scale: float,
    n_threads: int | None = None,
    softmax: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Run ``net`` over a split in record order; return (labels int64 (n,), probabilities (n, C)).

    ``softmax`` applies a softmax to ``net``'s output (a logit network); an exported model already
    outputs probabilities (``softmax=False``).

    Raises
    ------
    DatasetError
        Missing or empty split, corrupt records, labels outside the classes.
    ModelError
        The dataset's tile size or class count does not match the model.
    """
    mx = import_mxnet(n_threads)
    info = _dataset(Path(dataset_dir))
    where = info.path / "dataset.json"
    if list(info.classes) != list(classes):
        raise ModelError(
            f"{where}: classes {list(info.classes)} do not match the model's {list(classes)}"
        )
    if info.tile_size != int(tile_size):
        raise ModelError(
            f"{where}: tile size {info.tile_size} does not match the model's {tile_size}"
        )
    n = _count(info, split)
    ctx0 = ctx[0] if isinstance(ctx, list | tuple) else ctx
    it = _open_records(
        info, split, batch_size=batch_size, shuffle=False, scale=scale, n_threads=n_threads
    )
    rec = info.split(split).rec
    labels, probs = [], []
    for data, label, valid in _batches(it, n, rec, len(classes)):
        out = net(data.as_in_context(ctx0))
        if out.shape[-1] != len(classes):
            raise ModelError(f"the network has {out.shape[-1]} outputs for {len(classes)} classes")
        out = mx.nd.softmax(out, axis=-1) if softmax else out
        probs.append(out.asnumpy()[:valid].astype(np.float64))
        labels.append(label.asnumpy()[:valid].astype(np.int64))
    return np.concatenate(labels), np.concatenate(probs)


def load_exported(
    model_dir: str | os.PathLike[str], info: ModelInfo | None = None, *, ctx: Any = "cpu"
) -> tuple[Any, list[Any]]:
    """An exported model ready for :func:`predict_split`: (hybridized SymbolBlock, contexts).

    Parameters
    ----------
    model_dir : path
        A model folder.
    info : ModelInfo, optional
        Its description, when already read (anything else is read again from ``model_dir``).
    ctx : str or mxnet.Context
        Where to run it (``"cpu"``, ``"gpu(0)"``, ...); the network lives on the first device.

    Returns
    -------
    (mxnet.gluon.SymbolBlock, list of mxnet.Context)
        The network (probabilities out) with a static graph, and the parsed contexts.

    Raises
    ------
    ModelError
        A bad model folder, or MXNet cannot load it.
    """
    if not isinstance(info, ModelInfo):
        info = read_model_info(model_dir)
    ctxs = parse_context(ctx)
    net = load_network(info, ctxs[0])
    net.hybridize(static_alloc=True, static_shape=True)
    return net, ctxs


class _Progress:
    """A one-line progress bar on stderr."""

    def __init__(self, enabled: bool, total: int, label: str) -> None:
        self.enabled, self.total, self.label, self.t0 = enabled, max(total, 1), label, time.time()

    def update(self, done: int, extra: str = "") -> None:
        if not self.enabled:
            return
        frac = min(done / self.total, 1.0)
        bar = "#" * int(30 * frac) + "." * (30 - int(30 * frac))
        rate = done / max(time.time() - self.t0, 1e-9)
        sys.stderr.write(f"\r{self.label} [{bar}] {done}/{self.total} {rate:.0f}/s {extra}")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")
            sys.stderr.flush()
