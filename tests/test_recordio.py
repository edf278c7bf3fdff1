"""The Python RecordIO writer gives MXNet's bytes, magic numbers in the data included."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from prostate_fast.dataset.recordio import MAGIC, RecordFile, frame

mx = pytest.importorskip("mxnet")

M = struct.pack("<I", MAGIC)


def _payloads() -> list[bytes]:
    rng = np.random.default_rng(0)
    out = [b"", b"a", b"ab", b"abc", b"abcd", M, M + M, b"x" + M, b"xy" + M + b"z"]
    out += [M + b"tail", b"head" + M, b"ab" + M + b"cd" + M, b"abcd" + M + M + b"e" + M]
    out += [rng.integers(0, 256, int(n), dtype=np.uint8).tobytes() for n in rng.integers(0, 90, 30)]
    for n in (17, 64, 1001):  # magics at aligned and unaligned offsets of random data
        b = bytearray(rng.integers(0, 256, n, dtype=np.uint8).tobytes())
        for at in rng.integers(0, n - 4, 5):
            b[at : at + 4] = M
        out.append(bytes(b))
    return out


def test_same_bytes_as_mxnet(tmp_path) -> None:
    payloads = _payloads()
    ref = mx.recordio.MXIndexedRecordIO(str(tmp_path / "a.idx"), str(tmp_path / "a.rec"), "w")
    with RecordFile(tmp_path / "b.idx", tmp_path / "b.rec") as ours:
        for i, data in enumerate(payloads):
            label = float(i % 3) - 0.5
            ref.write_idx(i, mx.recordio.pack(mx.recordio.IRHeader(0, label, i, 0), data))
            ours.write(i, label, data)
    ref.close()
    assert (tmp_path / "b.rec").read_bytes() == (tmp_path / "a.rec").read_bytes()
    assert (tmp_path / "b.idx").read_text() == (tmp_path / "a.idx").read_text()
    back = mx.recordio.MXIndexedRecordIO(str(tmp_path / "b.idx"), str(tmp_path / "b.rec"), "r")
    for i, data in enumerate(payloads):
        header, got = mx.recordio.unpack(back.read_idx(i))
        assert got == data and header.id == i
    back.close()


def test_split_records_are_flagged() -> None:
    parts = frame(b"abcd" + M + b"xy")
    lrecs = [struct.unpack("<I", parts[k])[0] for k in (1, 4)]
    assert [v >> 29 for v in lrecs] == [1, 3] and [v & (2**29 - 1) for v in lrecs] == [4, 2]
    assert len(frame(b"ab" + M)) == 4  # unaligned: one part (magic, lrecord, data, padding)
    with pytest.raises(ValueError, match="2\\^29"):
        frame(bytes(2**29))


def test_write_errors_name_the_record_file(tmp_path, monkeypatch) -> None:
    f = RecordFile(tmp_path / "c.idx", tmp_path / "c.rec")

    def full(data):  # noqa: ANN001, ANN202 - a buffered write on a full disk names no file
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(f._rec, "write", full)
    with pytest.raises(OSError, match="is the disk full") as err:
        f.write(0, 0.0, b"abc")
    assert err.value.filename == str(tmp_path / "c.rec") and err.value.errno == 28
    monkeypatch.undo()
    f.close()
