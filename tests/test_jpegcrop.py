"""Lossless DCT-domain JPEG crops (prostate_fast.slide.jpegcrop, csrc/jpegcrop.cpp)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from prostate_fast.slide.jpegcrop import jpeg_crop

# Chroma upsampling (libjpeg's "fancy" triangle filter, 4:2:0) mixes each chroma sample 3:1 with
# its neighbour; at a crop's outer 1-pixel ring the neighbour outside the crop is replaced by the
# edge sample, so those pixels differ by at most a quarter of one chroma step times the largest
# YCbCr -> RGB coefficient (1.772). On these smooth images a step stays under 32 levels: 16 bounds
# the ring. Inside the ring, and everywhere without subsampling, pixels are equal.
BORDER = 16


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth BGR image (blurred noise over a gradient), like stained tissue at 20x."""
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 256, (h, w, 3), np.uint8)
    img = cv2.GaussianBlur(noise, (0, 0), 3).astype(np.float32)
    img = (img - img.mean()) * 4 + np.linspace(60, 200, w, dtype=np.float32)[None, :, None]
    return np.clip(img, 0, 255).astype(np.uint8)


def _encode(img: np.ndarray, **params: int) -> bytes:
    flags = []
    for k, v in params.items():
        flags += [getattr(cv2, f"IMWRITE_JPEG_{k.upper()}"), v]
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90, *flags])
    assert ok
    return buf.tobytes()


def _decode(data: bytes) -> np.ndarray:
    out = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert out is not None
    return out.astype(np.int32)


def _check(data: bytes, rects, tables: bytes | None = None, *, exact: bool = False) -> None:
    """Each crop decodes to the full image's pixels: exactly, or but for the ring (BORDER)."""
    crops = jpeg_crop(data, tables, rects)
    assert crops is not None and len(crops) == len(rects)
    full = _decode(data if tables is None else _merge(tables, data))
    for crop, (x, y, w, h) in zip(crops, rects, strict=True):
        got, ref = _decode(crop), full[y : y + h, x : x + w]
        assert got.shape == ref.shape
        diff = np.abs(got - ref)
        if exact:
            assert diff.max() == 0
        else:
            assert diff[1:-1, 1:-1].max() == 0
            assert diff.max() <= BORDER


def _segments(data: bytes) -> list[tuple[int, bytes]]:
    """(marker, whole segment) up to SOS; the scan and EOI as one last (0xDA, rest)."""
    out, p = [], 2
    while data[p + 1] != 0xDA:
        n = int.from_bytes(data[p + 2 : p + 4], "big")
        out.append((data[p + 1], data[p : p + 2 + n]))
        p += 2 + n
    out.append((0xDA, data[p:]))
    return out


def _abbreviate(data: bytes) -> tuple[bytes, bytes]:
    """Split a JPEG into (tables-only stream, abbreviated image): the TIFF JPEGTables layout."""
    segs = _segments(data)
    tables = b"".join(s for m, s in segs if m in (0xDB, 0xC4))
    image = b"".join(s for m, s in segs if m not in (0xDB, 0xC4))
    return b"\xff\xd8" + tables + b"\xff\xd9", b"\xff\xd8" + image


def _merge(tables: bytes, image: bytes) -> bytes:
    return image[:2] + tables[2:-2] + image[2:]


@pytest.mark.parametrize("sampling", ["420", "444"])
def test_crops_decode_to_the_same_pixels(sampling: str) -> None:
    factor = getattr(cv2, f"IMWRITE_JPEG_SAMPLING_FACTOR_{sampling}")
    data = _encode(_image(256, 256), sampling_factor=factor)
    rects = [(0, 0, 128, 128), (128, 128, 128, 128), (64, 32, 128, 128), (16, 240, 32, 16)]
    _check(data, rects, exact=sampling == "444")


def test_restart_intervals() -> None:
    data = _encode(_image(256, 256, 1), rst_interval=3)
    assert b"\xff\xd0" in data and b"\xff\xdd" in data
    _check(data, [(0, 0, 128, 128), (128, 64, 128, 128), (240, 240, 16, 16)])


def test_abbreviated_stream_with_jpeg_tables() -> None:
    tables, image = _abbreviate(_encode(_image(256, 256, 2)))
    assert b"\xff\xdb" not in image and b"\xff\xc4" not in image
    assert jpeg_crop(image, None, [(0, 0, 128, 128)]) is None  # no tables: refused
    _check(image, [(0, 0, 128, 128), (128, 128, 128, 128)], tables)


def test_rect_reaching_the_edge_of_a_partial_tile() -> None:
    data = _encode(_image(136, 200, 3))  # 4:2:0: MCUs of 16, the last column and row partial
    _check(data, [(192, 128, 8, 8), (160, 96, 40, 40), (0, 0, 200, 136)])
    assert jpeg_crop(data, None, [(192, 128, 16, 8)]) is None  # past the right edge


def test_grey_image() -> None:
    img = cv2.cvtColor(_image(64, 72, 4), cv2.COLOR_BGR2GRAY)
    _check(_encode(img), [(8, 16, 32, 24), (64, 56, 8, 8)], exact=True)


def test_refused_streams_and_rects() -> None:
    img = _image(64, 64, 5)
    data = _encode(img)
    assert jpeg_crop(_encode(img, progressive=1), None, [(0, 0, 32, 32)]) is None
    assert jpeg_crop(data, None, [(8, 0, 32, 32)]) is None  # not on an MCU boundary (16)
    assert jpeg_crop(data, None, [(0, 0, 24, 32)]) is None  # width not a multiple of 16
    assert jpeg_crop(data, None, [(48, 48, 32, 32)]) is None  # leaves the image
    assert jpeg_crop(b"", None, [(0, 0, 16, 16)]) is None
    with pytest.raises(ValueError, match="rects"):
        jpeg_crop(data, None, [(-16, 0, 16, 16)])


def test_dc_difference_the_optimised_table_cannot_code() -> None:
    # Black | white halves at quality 100: the source's luma DC differences are of size 11 and
    # 0 only; the crop of the white half starts with a difference of size 10, absent from the
    # optimised table: refused. The black half's crop needs only sizes 11 and 0: copied.
    img = np.zeros((16, 32, 3), np.uint8)
    img[:, 16:] = 255
    data = _encode(img, optimize=1, quality=100)
    assert jpeg_crop(data, None, [(16, 0, 16, 16)]) is None
    _check(data, [(0, 0, 16, 16)], exact=True)


def test_truncated_and_random_bytes_never_crash() -> None:
    data = _encode(_image(64, 64, 6), rst_interval=2)
    rects = [(0, 0, 32, 32), (32, 32, 32, 32)]
    for n in range(0, len(data) - 2, 37):
        assert jpeg_crop(data[:n], None, rects) is None
    rng = np.random.default_rng(0)
    for _ in range(300):
        assert jpeg_crop(rng.bytes(int(rng.integers(0, 600))), None, rects) is None
    for _ in range(300):  # flipped bytes: refused, or crops that are still JPEGs
        bad = bytearray(data)
        for i in rng.integers(2, len(bad), int(rng.integers(1, 8))):
            bad[i] = int(rng.integers(0, 256))
        got = jpeg_crop(bytes(bad), rng.bytes(40) if rng.random() < 0.1 else None, rects)
        assert got is None or all(c[:2] == b"\xff\xd8" and c[-2:] == b"\xff\xd9" for c in got)
