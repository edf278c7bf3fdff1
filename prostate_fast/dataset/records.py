"""RecordIO I/O for :mod:`prostate_fast.dataset`: pack tiles read from slides, read them back.

Record layout (what ``mx.io.ImageRecordIter`` expects): each record is
``mx.recordio.pack(IRHeader(flag=0, label=class index, id=record id, id2=0), encoded image)``,
where the image is a PNG or JPEG of the tile in **BGR** byte order (OpenCV's, which MXNet decodes
and turns back into RGB). Record ids run 0..n-1 in the order written; the ``.idx`` maps id to
byte offset. Beside them, ``.lst`` holds ``id<TAB>label<TAB>slide:x:y`` (MXNet's list format) and
``.csv`` the side-car table ``record,slide,patient,l0_x,l0_y,level,downsample,label,white_fraction``.
:class:`RecordWriter` is the one place that writes these four files (:func:`pack_split` and the
test fixtures use it).

Threads: tiles are read and encoded by a thread pool (OpenSlide reads and OpenCV encodes release
the GIL); the main thread writes records strictly in order, so the files do not depend on the
thread count.
"""

from __future__ import annotations

import collections
import contextlib
import csv
import functools
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._mx import import_mxnet
from .._util import resolve_threads
from ..errors import DatasetError
from ..slide import LevelChoice, Slide, open_slide
from ..slide.jpegcrop import JpegTileCrops, jpeg_tile_crops
from .recordio import RecordFile

__all__ = [
    "AUGMENTS",
    "SIDE_CAR_COLUMNS",
    "PackedSlide",
    "RecordWriter",
    "TileJob",
    "check_augment",
    "epoch_batches",
    "make_encoder",
    "make_record_iter",
    "pack_split",
    "read_records",
    "record_label",
]

SIDE_CAR_COLUMNS = (
    "record",
    "slide",
    "patient",
    "l0_x",
    "l0_y",
    "level",
    "downsample",
    "label",
    "white_fraction",
)
_CHUNK = 32  # tiles read and encoded per task


@dataclass(frozen=True, eq=False)
class TileJob:
    """The tiles of one slide that go into one split, in record order.

    ``choice`` may be None: it is then rebuilt from ``level`` and ``downsample`` when the slide
    is opened (scale = downsample / the level's downsample).
    """

    slide_path: Path
    slide_name: str
    patient: str
    tile_size: int
    level: int
    downsample: float
    choice: LevelChoice | None
    l0_xy: np.ndarray  # (k, 2) int64
    label: np.ndarray  # (k,) int64
    white_fraction: np.ndarray  # (k,) float32


@dataclass(frozen=True)
class PackedSlide:
    """What packing learnt about one slide: the scale its tiles were read at, and how many of
    its records were copied (lossless JPEG crops) rather than re-encoded."""

    slide_name: str
    choice: LevelChoice
    records: int
    copied: int = 0  # records that are lossless crops of the slide's JPEG tiles


def make_encoder(
    encoding: str, quality: int, png_compression: int
) -> Callable[[np.ndarray], bytes]:
    """Return a function RGB uint8 tile → encoded bytes (BGR inside, as MXNet decodes)."""
    import cv2

    if encoding == "png":
        ext, params = ".png", [cv2.IMWRITE_PNG_COMPRESSION, int(png_compression)]
    elif encoding == "jpeg":
        ext, params = ".jpg", [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
    else:  # pragma: no cover - validated by the caller
        raise ValueError(f"encoding must be 'png' or 'jpeg', got {encoding!r}")

    def encode(rgb: np.ndarray) -> bytes:
        ok, buf = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
        if not ok:  # pragma: no cover - OpenCV fails only on invalid input
            raise DatasetError(f"OpenCV could not encode a tile as {encoding}")
        return buf.tobytes()

    return encode


def _choice_for(slide: Slide, job: TileJob) -> LevelChoice:
    """The table's scale: its LevelChoice, or one rebuilt from level and downsample."""
    if not 0 <= job.level < slide.level_count:
        raise DatasetError(
            f"{job.slide_path}: the label table reads level {job.level}, "
            f"but the slide has {slide.level_count} level(s)"
        )
    if job.choice is not None:
        return job.choice
    choice = slide.choice_for_downsample(job.downsample, job.level)
    if choice.scale < 1.0:
        raise DatasetError(
            f"{job.slide_path}: downsample {job.downsample:g} is finer than level {job.level} "
            f"({slide.level_downsamples[job.level]:g}); the label table does not match this slide"
        )
    return choice


def _read_chunk(
    slide: Slide,
    choice: LevelChoice,
    xy: np.ndarray,
    size: int,
    encode: Callable[[np.ndarray], bytes],
    crops: JpegTileCrops | None = None,
) -> tuple[list[bytes], int]:
    """The encoded tiles at ``xy``: lossless crops of the slide's JPEG tiles where ``crops``
    gives one, else read (decoded) and encoded; and how many were crops."""
    copied = crops.crops(xy)[0] if crops is not None else [None] * len(xy)
    out = [
        data
        if data is not None
        else encode(slide.read_scaled((int(x), int(y)), (size, size), choice))
        for data, (x, y) in zip(copied, xy, strict=True)
    ]
    return out, sum(data is not None for data in copied)


def _chunks(l0_xy: np.ndarray, crops: JpegTileCrops | None) -> list[np.ndarray]:
    """The tasks of one job: ``_CHUNK`` tiles each; with ``crops``, cut only between TIFF tile
    rows (at most ``8 * _CHUNK`` tiles), so that the grid tiles of one TIFF tile, when they
    follow each other in record order, are cropped by one kernel call."""
    n = len(l0_xy)
    if crops is None:
        return [l0_xy[i : i + _CHUNK] for i in range(0, n, _CHUNK)]
    rows = crops.tile_rows(l0_xy)
    out, start = [], 0
    for i in range(1, n + 1):
        if i == n or i - start >= 8 * _CHUNK or (i - start >= _CHUNK and rows[i] != rows[i - 1]):
            out.append(l0_xy[start:i])
            start = i
    return out


def _is_identity(norm: Callable[[np.ndarray], np.ndarray] | None) -> bool:
    """Whether a stain transform gives back every pixel (None, or an exact identity map)."""
    return norm is None or bool(getattr(norm, "is_identity", False))


class RecordWriter:
    """The one writer of the record format: ``prefix``.rec/.idx/.lst/.csv of one split, in order.

    :meth:`add` appends an encoded tile (the bytes :func:`make_encoder` gives) with its record
    id (0, 1, ... in the order added), its ``.lst`` line and its side-car row. A context manager:
    leaving it closes the four files. The ``.rec``/``.idx`` are MXNet's indexed RecordIO, written
    byte for byte as MXNet writes them (:mod:`prostate_fast.dataset.recordio`).
    """

    def __init__(self, prefix: Path) -> None:
        self.count = 0
        with contextlib.ExitStack() as stack:
            rec = stack.enter_context(
                RecordFile(prefix.with_suffix(".idx"), prefix.with_suffix(".rec"))
            )
            lst = stack.enter_context(
                open(prefix.with_suffix(".lst"), "w", encoding="utf-8", newline="\n")
            )
            side = stack.enter_context(
                open(prefix.with_suffix(".csv"), "w", encoding="utf-8", newline="")
            )
            self._rec, self._lst, self._side = rec, lst, csv.writer(side, lineterminator="\n")
            self._side.writerow(SIDE_CAR_COLUMNS)
            self._files = stack.pop_all()

    def add(
        self,
        data: bytes,
        label: int,
        slide: str,
        patient: str,
        l0_xy: tuple[int, int],
        level: int,
        downsample: float,
        white_fraction: float,
    ) -> int:
        """Append one record; return its id."""
        rid = self.count
        x, y = l0_xy
        self._rec.write(rid, float(label), data)
        self._lst.write(f"{rid}\t{label}\t{slide}:{x}:{y}\n")
        self._side.writerow(
            (
                rid,
                slide,
                patient,
                x,
                y,
                level,
                repr(float(downsample)),
                label,
                f"{float(white_fraction):.6g}",
            )
        )
        self.count += 1
        return rid

    def close(self) -> None:
        """Close the four files (side car, list, then the record file)."""
        self._files.close()

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def pack_split(
    prefix: Path,
    jobs: Sequence[TileJob],
    *,
    encoding: str,
    quality: int,
    png_compression: int,
    n_threads: int | None,
    stain: Mapping[str, Callable[[np.ndarray], np.ndarray] | None] | None = None,
) -> tuple[list[PackedSlide], float]:
    """Write ``prefix``.rec/.idx/.lst/.csv with every tile of ``jobs``, in order.

    ``stain`` maps a slide name to the stain normalisation of its tiles (a
    :class:`~prostate_fast.stain.StainTransform`, applied before encoding); a slide it does not
    name (or maps to None) is packed as read.

    JPEG records: a tile read at a pyramid level as it is (scale 1), from a JPEG-tiled TIFF
    level, inside one TIFF tile at MCU-aligned offsets, of a slide with no stain change (or an
    exact identity), is a lossless crop of the slide's own JPEG tile (no decode, no re-encode,
    no second JPEG loss; see :mod:`prostate_fast.slide.jpegcrop`): ``quality`` applies to
    re-encoded tiles only. ``PackedSlide.copied`` counts the crops.

    Returns the per-slide facts and the seconds spent. Raises DatasetError or SlideError, and
    OSError naming the ``.rec`` when it cannot be written; the caller owns (and removes) the
    folder on failure.
    """
    encode = make_encoder(encoding, quality, png_compression)
    threads = resolve_threads(n_threads)
    packed: list[PackedSlide] = []
    start = time.perf_counter()
    writer = RecordWriter(prefix)
    pool = ThreadPoolExecutor(threads, thread_name_prefix="pf-pack") if threads > 1 else None
    try:
        with writer:
            for job in jobs:
                norm = (stain or {}).get(job.slide_name)
                same = _is_identity(norm)  # pixels as read: no map to apply
                enc = encode if same else _normalised(encode, norm)
                copy = encoding == "jpeg" and same
                packed.append(_pack_job(writer, job, pool, 2 * threads, enc, copy))
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    return packed, time.perf_counter() - start


def _normalised(
    encode: Callable[[np.ndarray], bytes], norm: Callable[[np.ndarray], np.ndarray]
) -> Callable[[np.ndarray], bytes]:
    """``encode`` of the stain-normalised tile."""
    return lambda rgb: encode(norm(rgb))


def _pack_job(
    writer: RecordWriter,
    job: TileJob,
    pool: ThreadPoolExecutor | None,
    window: int,
    encode: Callable[[np.ndarray], bytes],
    copy: bool = False,
) -> PackedSlide:
    """Read, encode and write the tiles of one job (one slide), in order.

    ``copy`` (JPEG records, no stain change): a tile read at a level as it is, lying inside one
    JPEG tile of the TIFF at MCU-aligned offsets, is written as the lossless crop of that tile
    (:mod:`prostate_fast.slide.jpegcrop`); the others are read and encoded as always.
    """
    with open_slide(job.slide_path) as slide:
        choice = _choice_for(slide, job)
        crops = jpeg_tile_crops(slide, choice, job.tile_size) if copy else None
        chunks = _chunks(job.l0_xy, crops)
        # closing(): on an error, reads in flight end before the slide is closed
        with contextlib.closing(
            _ordered(pool, chunks, window, slide, choice, job, encode, crops)
        ) as encoded:
            k = copied = 0
            for chunk, n_copied in encoded:
                copied += n_copied
                for data in chunk:
                    x, y = (int(v) for v in job.l0_xy[k])
                    writer.add(
                        data,
                        int(job.label[k]),
                        job.slide_name,
                        job.patient,
                        (x, y),
                        choice.level,
                        choice.downsample,
                        job.white_fraction[k],
                    )
                    k += 1
    return PackedSlide(job.slide_name, choice, k, copied)


def _ordered(
    pool: ThreadPoolExecutor | None,
    chunks: list[np.ndarray],
    window: int,
    slide: Slide,
    choice: LevelChoice,
    job: TileJob,
    encode: Callable[[np.ndarray], bytes],
    crops: JpegTileCrops | None,
) -> Iterator[tuple[list[bytes], int]]:
    """Encoded chunks (and how many of each were copied) in order, at most ``window`` in flight
    (bounded memory)."""
    read = functools.partial(_read_chunk, slide, choice, size=job.tile_size, encode=encode)
    if pool is None:
        for xy in chunks:
            yield read(xy, crops=crops)
        return
    pending: collections.deque[Future[tuple[list[bytes], int]]] = collections.deque()
    try:
        for xy in chunks:
            pending.append(pool.submit(read, xy, crops=crops))
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for fut in pending:
            fut.cancel()
        for fut in pending:  # the slide is closed after this generator: let reads finish first
            if not fut.cancelled():
                fut.exception()


def record_label(header: Any) -> float:
    """The class label of a record's header (a number, or the first of an array)."""
    label = header.label
    return float(label if np.isscalar(label) else np.asarray(label).ravel()[0])


def read_records(
    rec: Path, idx: Path, records: Sequence[int] | None = None
) -> Iterator[tuple[int, np.ndarray, float]]:
    """Yield ``(record id, RGB uint8 tile, label)`` for ``records`` (all when None), decoded."""
    import cv2

    mx = import_mxnet()
    reader = mx.recordio.MXIndexedRecordIO(str(idx), str(rec), "r")
    try:
        keys = list(reader.keys) if records is None else [int(r) for r in records]
        for key in keys:
            if key not in reader.idx:
                raise DatasetError(f"{rec}: no record {key} (the split has {len(reader.keys)})")
            header, data = mx.recordio.unpack(reader.read_idx(key))
            bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
            if bgr is None:
                raise DatasetError(f"{rec}: record {key} does not decode as an image")
            yield key, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), record_label(header)
    finally:
        reader.close()


AUGMENTS = (False, "flips", "colour")
"""What ``augment`` may ask for: nothing, flips and 90° turns, or those plus colour jitter."""


def check_augment(augment: Any) -> bool | str:
    """``augment`` as one of :data:`AUGMENTS` (True: ``"flips"``, None: False); ValueError else."""
    if augment is None or augment is False:
        return False
    if augment is True:
        return "flips"
    if augment not in AUGMENTS:
        raise ValueError(f"augment must be False, True, 'flips' or 'colour', got {augment!r}")
    return str(augment)


@functools.cache
def _augment_class(mx: Any) -> type:
    """A DataIter that turns every sample of the wrapped iterator by a random multiple of 90°
    and, for ``"colour"``, jitters its colours (:func:`prostate_fast.stain.augment_colour`)."""

    class AugmentIter(mx.io.DataIter):  # type: ignore[name-defined,misc]
        """Random exact 90° rotations (label-preserving for histology) around another iterator,
        and colour jitter on the 0-255 values (the inner iterator then reads at scale 1, and the
        jittered batch is multiplied by ``scale`` here).

        ImageRecordIter's ``max_rotate_angle``/``rotate`` rotate by arbitrary angles with
        interpolation and fill the corners, so exact quarter turns are done here, per sample, on
        the decoded batch (square tiles only). The turns draw from ``seed``'s generator and the
        colours from their own (``[seed, 1]``), so ``"flips"`` turns exactly as before.
        """

        def __init__(self, inner: Any, seed: int, colour: bool = False, scale: float = 1.0):
            super().__init__(inner.batch_size)
            self.inner = inner
            self._rng = np.random.default_rng(seed)
            self._colour = np.random.default_rng([seed, 1]) if colour else None
            self._scale = np.float32(scale)

        @property
        def provide_data(self) -> Any:
            return self.inner.provide_data

        @property
        def provide_label(self) -> Any:
            return self.inner.provide_label

        def reset(self) -> None:
            self.inner.reset()

        def next(self) -> Any:
            batch = self.inner.next()
            nd = batch.data[0]
            x = nd.asnumpy()
            for i, k in enumerate(self._rng.integers(0, 4, len(x))):
                if k:
                    x[i] = np.rot90(x[i], k, axes=(1, 2)).copy()
            if self._colour is not None:
                from ..stain import augment_colour

                augment_colour(x, self._colour)
                x *= self._scale
            nd[:] = x  # back into the batch's own buffer
            return batch

    return AugmentIter


def make_record_iter(
    rec: Path,
    idx: Path,
    tile_size: int,
    *,
    batch_size: int,
    shuffle: bool,
    augment: bool | str,
    seed: int,
    scale: float,
    n_threads: int | None,
    round_batch: bool,
    num_parts: int,
    part_index: int,
) -> Any:
    """An ``mx.io.ImageRecordIter`` (wrapped for 90° turns and colours when ``augment``); see
    record_iter."""
    mx = import_mxnet(n_threads)
    threads = resolve_threads(n_threads)
    augment = check_augment(augment)
    colour = augment == "colour"
    kwargs: dict[str, Any] = {
        "path_imgrec": str(rec),
        "path_imgidx": str(idx),
        "data_shape": (3, tile_size, tile_size),
        "label_width": 1,
        "batch_size": batch_size,
        "shuffle": shuffle,
        "seed": seed,
        "scale": 1.0 if colour else scale,  # colours are jittered on 0-255, then scaled
        "round_batch": round_batch,
        "preprocess_threads": threads,
        "num_parts": num_parts,
        "part_index": part_index,
    }
    if augment:
        kwargs.update(rand_mirror=True, seed_aug=seed)
    try:  # the constructor already decodes the first batch
        it = mx.io.ImageRecordIter(**kwargs)
    except mx.base.MXNetError as exc:
        lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
        why = lines[-1][:200] if lines else type(exc).__name__
        raise DatasetError(f"{rec}: unreadable record ({why})") from None
    return _augment_class(mx)(it, seed, colour, scale) if augment else it


def epoch_batches(it: Any, n_records: int) -> Iterator[Any]:
    """Yield one exact epoch of ``it``: batches until ``n_records`` samples, ``pad`` corrected.

    ImageRecordIter with ``round_batch=False`` fills the tail of the last batch with stale samples
    and reports ``pad=0``; here the last batch gets ``pad = batch_size - valid`` so that
    ``batch.data[0][: batch_size - batch.pad]`` are exactly the remaining records. Call
    ``it.reset()`` between epochs yourself.
    """
    seen = 0
    while seen < n_records:
        try:
            batch = it.next()
        except StopIteration:
            return
        size = batch.data[0].shape[0]
        valid = min(size, n_records - seen)
        batch.pad = size - valid
        seen += valid
        yield batch
