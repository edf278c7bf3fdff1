"""MXNet's indexed RecordIO (``.rec`` + ``.idx``), written in Python, byte for byte as MXNet does.

``mx.recordio.MXIndexedRecordIO.write_idx`` costs about 27 µs a record through ctypes (a quarter
of packing a tile once its JPEG is a copied crop); this writer frames the same bytes with one
buffered ``write`` per part. The format (dmlc-core's ``RecordIOWriter``): each record is
``magic, lrecord, data, padding to 4 bytes`` with ``magic = 0xced7230a`` and ``lrecord = cflag <<
29 | length``. Where the data holds the magic number at a 4-byte aligned offset, the record is
split there (the magic itself dropped) into parts flagged 1 (first), 2 (middle) and 3 (last), so
that a reader can find record starts by the magic; a whole record is flagged 0. The ``.idx`` has
a line ``id<TAB>offset`` per record. The payload is ``mx.recordio.pack``'s: the ``IfQQ`` header
(flag 0, label, id, 0) then the encoded tile.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import BinaryIO, TextIO

__all__ = ["MAGIC", "RecordFile", "frame"]

MAGIC = 0xCED7230A
_MAGIC = struct.pack("<I", MAGIC)
_LREC = struct.Struct("<I")
_HEADER = struct.Struct("<IfQQ")  # mx.recordio.IRHeader: flag, label, id, id2
_MAX = 1 << 29


def frame(payload: bytes) -> list[bytes]:
    """The bytes dmlc's RecordIO writes for one record ``payload``, part by part."""
    n = len(payload)
    if n >= _MAX:
        raise ValueError(f"a record holds less than 2^29 bytes, got {n}")
    out: list[bytes] = []
    start, i = 0, payload.find(_MAGIC)
    aligned_end = n & ~3
    while i != -1 and i < aligned_end:
        if i % 4:  # dmlc looks at aligned words only
            i = payload.find(_MAGIC, i + 1)
            continue
        out += [_MAGIC, _LREC.pack((1 if start == 0 else 2) << 29 | (i - start))]
        out.append(payload[start:i])
        start = i + 4
        i = payload.find(_MAGIC, start)
    out += [_MAGIC, _LREC.pack((3 if start else 0) << 29 | (n - start)), payload[start:]]
    out.append(b"\0" * (-n % 4))
    return out


class RecordFile:
    """``.rec`` and ``.idx`` of one split, appended in order (a context manager; closing flushes).

    :meth:`write` appends a record with its id, label and encoded tile. Write errors (a full
    disk) come out as OSError naming the ``.rec``.
    """

    def __init__(self, idx_path: Path, rec_path: Path) -> None:
        self.rec_path = Path(rec_path)
        self._rec: BinaryIO = open(self.rec_path, "wb")  # noqa: SIM115 - closed by close()
        try:
            self._idx: TextIO = open(idx_path, "w", encoding="ascii", newline="\n")  # noqa: SIM115
        except BaseException:
            self._rec.close()
            raise
        self._pos = 0

    def write(self, rid: int, label: float, data: bytes) -> None:
        """Append record ``rid`` (label, encoded tile) as ``mx.recordio.pack`` + ``write_idx``."""
        parts = frame(_HEADER.pack(0, label, rid, 0) + data)
        try:
            self._idx.write(f"{rid}\t{self._pos}\n")
            for p in parts:
                self._rec.write(p)
        except OSError as exc:
            raise self._named(exc) from exc
        self._pos += sum(len(p) for p in parts)

    def close(self) -> None:
        """Flush and close both files (OSError naming the ``.rec`` when the flush fails)."""
        try:
            try:
                self._rec.close()
            finally:
                self._idx.close()
        except OSError as exc:
            raise self._named(exc) from exc

    def _named(self, exc: OSError) -> OSError:
        if exc.filename is not None:
            return exc
        why = exc.strerror or type(exc).__name__
        msg = f"cannot write the record file ({why}); is the disk full?"
        return OSError(exc.errno, msg, str(self.rec_path))

    def __enter__(self) -> RecordFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
