"""Training batches read ahead: records decoded and augmented by threads while the network trains.

:class:`BatchReader` reads one split's RecordIO records (the format of
:mod:`prostate_fast.dataset.records`) for :func:`prostate_fast.train.train`. The main thread reads
each batch's encoded records (a seek and a read per record, microseconds) and hands them to a pool
of ``n_threads`` threads, which decode them with OpenCV (``cv2.imdecode`` releases the GIL), apply
the random mirror and quarter turns and the colour jitter
(:func:`prostate_fast.stain.augment_colour`), and scale them; up to ``n_threads + 1`` batches are
in flight, so while MXNet computes one batch the next ones are being prepared. MXNet's
``ImageRecordIter`` decodes with one thread on 2 cores whatever it is asked, and the colour jitter
ran on the training thread. On 2 cores at batch 32 that older path still kept up with the network
(both within noise of the compute limit, ``bench/bench_train.py``); where the network is faster
(small tiles, a GPU) one decoding thread would not.

Determinism: an epoch's order is a permutation drawn from the epoch's seed, and batch ``b``'s
augmentation draws from generators seeded with ``(seed, b)``, so the batches depend on the seed
only, never on the thread count or on timing.

Epoch: ``ceil(n / batch_size)`` batches of ``batch_size`` samples (a static shape); the last
batch's tail is filled with the epoch's first samples, and ``valid`` says how many are real.
Distributed training reads part ``part_index`` of ``num_parts``: records
``[k c, (k + 1) c)`` with ``c = ceil(n / num_parts)`` (the last part holds the rest), as
ImageRecordIter splits them.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from .._mx import import_mxnet
from .._util import resolve_threads
from ..dataset.records import check_augment, record_label
from ..errors import DatasetError

__all__ = ["BatchReader"]


class BatchReader:
    """Shuffled, augmented training batches of one split, prepared ahead by a thread pool.

    Parameters
    ----------
    rec, idx : path
        The split's ``.rec`` and ``.idx`` (checked beforehand: :func:`_check_rec` of ``io``).
    tile_size : int
        Side of every tile; a record of another size is an error.
    n_classes : int
        Labels must lie in ``[0, n_classes)``.
    batch_size : int
    scale : float
        Pixel scale (the dataset's normalisation, 1/255 for the study).
    augment : bool or {"flips", "colour"}
        As :func:`prostate_fast.dataset.record_iter`: random mirror and quarter turn per sample;
        ``"colour"`` also the HED, brightness and contrast jitter on the 0-255 values.
    n_threads : int, optional
        Decoding threads (None: all cores).
    num_parts, part_index : int
        Read part ``part_index`` of ``num_parts`` (one part per distributed worker).

    Notes
    -----
    A context manager; :meth:`close` stops the threads. Memory: ``n_threads + 1`` batches in
    flight (6.3 MB each for 32 tiles of 128 px).
    """

    def __init__(
        self,
        rec: Path,
        idx: Path,
        *,
        tile_size: int,
        n_classes: int,
        batch_size: int,
        scale: float,
        augment: bool | str,
        n_threads: int | None,
        num_parts: int = 1,
        part_index: int = 0,
    ) -> None:
        if not 0 <= part_index < num_parts:
            raise ValueError(f"part_index must be in [0, num_parts), got {part_index}/{num_parts}")
        mx = import_mxnet(n_threads)
        self.rec, self.tile_size, self.n_classes = Path(rec), int(tile_size), int(n_classes)
        self.batch_size, self.scale = int(batch_size), np.float32(scale)
        self.augment = check_augment(augment)
        self._threads = resolve_threads(n_threads)
        self._unpack = mx.recordio.unpack
        try:
            self._reader = mx.recordio.MXIndexedRecordIO(str(idx), str(rec), "r")
        except mx.base.MXNetError as exc:
            raise DatasetError(f"{rec}: unreadable record file ({_last_line(exc)})") from None
        keys = list(self._reader.keys)
        chunk = math.ceil(len(keys) / num_parts)
        self.keys = keys[part_index * chunk : (part_index + 1) * chunk]
        self._pool = ThreadPoolExecutor(self._threads, thread_name_prefix="pf-train-read")

    def __len__(self) -> int:
        return len(self.keys)

    def epoch(
        self, seed: int, n: int | None = None, *, shuffle: bool = True
    ) -> Iterator[tuple[np.ndarray, np.ndarray, int]]:
        """Yield ``(data, label, valid)`` batches of one epoch of ``n`` samples (all by default).

        ``data`` is float32 (batch, 3, tile, tile) RGB times ``scale``; ``label`` float32
        (batch,) class indices (0 in the filled tail); ``valid`` the real samples. The order is a
        permutation drawn from ``seed`` (``shuffle``), else record order.

        Raises
        ------
        DatasetError
            A record does not decode as a ``tile_size`` image, or has a label outside the
            classes (named by the ``.rec`` file).
        """
        total = len(self.keys)
        n = total if n is None else min(int(n), total)
        if n < 1:
            raise DatasetError(f"{self.rec}: no records to read")
        order = np.random.default_rng(seed).permutation(total) if shuffle else np.arange(total)
        order = order[:n]
        bs, n_batches = self.batch_size, math.ceil(n / self.batch_size)
        pending: collections.deque[tuple[Future[np.ndarray], np.ndarray, int]] = collections.deque()
        try:
            for b in range(n_batches):
                pos = np.arange(b * bs, b * bs + bs) % n  # the last batch wraps round
                pending.append(self._submit(order[pos], seed, b) + (min(bs, n - b * bs),))
                if len(pending) > self._threads:
                    fut, label, valid = pending.popleft()
                    yield fut.result(), label, valid
            while pending:
                fut, label, valid = pending.popleft()
                yield fut.result(), label, valid
        finally:
            for fut, _, _ in pending:
                fut.cancel()

    def _submit(self, rows: np.ndarray, seed: int, b: int) -> tuple[Future[np.ndarray], np.ndarray]:
        """Read the records of ``rows`` (main thread) and queue their decoding; return the future
        and the labels."""
        blobs, labels = [], np.empty(len(rows), np.float32)
        for i, r in enumerate(rows):
            header, data = self._unpack(self._reader.read_idx(self.keys[r]))
            labels[i] = record_label(header)
            blobs.append(data)
        if labels.min() < 0 or labels.max() >= self.n_classes or not np.all(labels % 1 == 0):
            bad = labels[(labels < 0) | (labels >= self.n_classes) | (labels % 1 != 0)][0]
            raise DatasetError(f"{self.rec}: label {bad:g} outside the {self.n_classes} classes")
        fut = self._pool.submit(_prepare, blobs, self, [int(seed), int(b)])
        return fut, labels

    def close(self) -> None:
        """Stop the threads (batches in flight are dropped) and close the record file."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._reader.close()

    def __enter__(self) -> BatchReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _prepare(blobs: list[bytes], reader: BatchReader, key: list[int]) -> np.ndarray:
    """Decode, augment and scale one batch (a pool thread): float32 (n, 3, tile, tile)."""
    import cv2

    t = reader.tile_size
    tiles = np.empty((len(blobs), t, t, 3), np.uint8)
    for i, blob in enumerate(blobs):
        bgr = cv2.imdecode(np.frombuffer(blob, np.uint8), cv2.IMREAD_COLOR)
        if bgr is None or bgr.shape != (t, t, 3):
            what = "does not decode as an image" if bgr is None else f"is not {t} x {t}"
            raise DatasetError(f"{reader.rec}: unreadable record (a tile {what})")
        cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB, dst=tiles[i])
    if reader.augment:
        rng = np.random.default_rng(key)
        for i, (mirror, turns) in enumerate(rng.integers(0, (2, 4), (len(blobs), 2))):
            tile = tiles[i, :, ::-1] if mirror else tiles[i]
            if mirror or turns:
                tiles[i] = np.rot90(tile, turns, axes=(0, 1))
    x = tiles.transpose(0, 3, 1, 2).astype(np.float32, order="C")  # C order: borrowed by MXNet
    if reader.augment == "colour":
        from ..stain import augment_colour

        augment_colour(x, np.random.default_rng([*key, 1]))
    x *= reader.scale
    return x


def _last_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    return lines[-1][:200] if lines else type(exc).__name__
