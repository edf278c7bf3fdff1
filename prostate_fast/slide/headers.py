"""Image sizes from file headers, before any pixel is decoded; the limit on whole-image decoding.

A JPEG, PNG or BMP file (and a TIFF OpenCV decodes) cannot be read by regions: OpenCV decodes it
whole. A few megabytes of PNG of one colour decode to gigabytes, so :func:`image_header` reads the
size from the header (PNG ``IHDR``, JPEG ``SOFn``, BMP ``BITMAPINFOHEADER``, TIFF tags through
tifffile without reading data) and :func:`check_decode` refuses an image whose whole decoding would
need more than :data:`MAX_DECODE_BYTES` (1 GiB): about 358 megapixels of 8-bit RGB (18,900 px
square), 268 of 8-bit grey, 153 of 8-bit RGBA, 97 of 16-bit RGBA. Large images belong in a tiled
(or striped) TIFF, which is read by tiles or strips whatever its size. :func:`sniff` tells the kind
of a file from its first bytes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from ..errors import SlideError

__all__ = [
    "MAX_DECODE_BYTES",
    "TIFF_MAGICS",
    "ImageHeader",
    "check_decode",
    "image_header",
    "sniff",
]

#: Most bytes decoding one flat image whole (decoded samples plus the RGB copy) may take.
MAX_DECODE_BYTES = 1 << 30

#: First four bytes of a TIFF (little- or big-endian, classic or BigTIFF).
TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_IMAGE_MAGICS = {b"\xff\xd8\xff": "jpeg", b"\x89PNG\r\n\x1a\n": "png", b"BM": "bmp"}

#: JPEG start-of-frame markers (baseline, progressive, lossless, arithmetic ...).
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


@dataclass(frozen=True)
class ImageHeader:
    """What a header says: ``width`` and ``height`` in pixels, decoded ``channels`` (alpha
    included, an upper bound where the header cannot tell), ``sample_bytes`` (1, 2, ...)."""

    width: int
    height: int
    channels: int
    sample_bytes: int

    @property
    def pixels(self) -> int:
        """Width times height."""
        return self.width * self.height

    @property
    def decode_bytes(self) -> int:
        """Bytes of decoding it whole: the decoded samples, plus the RGB copy unless 8-bit RGB."""
        plain = self.channels == 3 and self.sample_bytes == 1
        return self.pixels * (self.channels * self.sample_bytes + (0 if plain else 3))


def sniff(path: Path) -> tuple[str | None, bytes]:
    """(kind, first bytes): kind is tiff, jpeg, png, bmp, dicom, or None when unknown."""
    with open(path, "rb") as fh:
        head = fh.read(136)
    if head[:4] in TIFF_MAGICS:
        return "tiff", head
    for magic, kind in _IMAGE_MAGICS.items():
        if head.startswith(magic):
            return kind, head
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "dicom", head
    return None, head


def image_header(path: Path, kind: str) -> ImageHeader:
    """The header of a ``kind`` (jpeg, png, bmp, tiff) image; SlideError naming the file."""
    try:
        with open(path, "rb") as fh:
            if kind == "tiff":
                return _tiff_header(path)
            if kind == "jpeg":
                return _jpeg_header(fh)
            head = fh.read(64)
            if kind == "png":
                return _png_header(head)
            if kind == "bmp":
                return _bmp_header(head)
    except (struct.error, ValueError, IndexError) as exc:
        raise SlideError(f"{path}: damaged {kind.upper()} header ({exc})") from None
    raise ValueError(f"unknown image kind {kind!r}")


def check_decode(path: Path, kind: str, header: ImageHeader, what: str = "image") -> None:
    """SlideError when decoding ``header``'s image whole would exceed :data:`MAX_DECODE_BYTES`."""
    if header.width <= 0 or header.height <= 0:
        raise SlideError(f"{path}: {kind.upper()} header gives no size")
    need = header.decode_bytes
    if need > MAX_DECODE_BYTES:
        raise SlideError(
            f"{path}: {kind.upper()} {what} of {header.width} x {header.height} px would be "
            f"decoded whole ({need / 2**30:.1f} GiB, limit {MAX_DECODE_BYTES / 2**30:g} GiB); "
            "save it as a tiled TIFF"
        )


def _png_header(head: bytes) -> ImageHeader:
    if head[12:16] != b"IHDR":
        raise ValueError("no IHDR chunk first")
    w, h, depth, colour = struct.unpack(">IIBB", head[16:26])
    channels = {0: 1, 2: 3, 3: 4, 4: 4, 6: 4}.get(colour)  # palette/grey+alpha: up to BGRA
    if channels is None:
        raise ValueError(f"colour type {colour}")
    return ImageHeader(w, h, channels, 2 if depth == 16 else 1)


def _bmp_header(head: bytes) -> ImageHeader:
    (dib,) = struct.unpack("<I", head[14:18])
    if dib == 12:  # OS/2 BITMAPCOREHEADER
        w, h, _, bpp = struct.unpack("<HHHH", head[18:26])
    else:
        w, h, _, bpp = struct.unpack("<iiHH", head[18:30])
    return ImageHeader(abs(w), abs(h), 4 if bpp == 32 else 3, 1)


def _jpeg_header(fh: object) -> ImageHeader:
    """Walk the JPEG markers to the first SOFn segment (reads headers only)."""
    read = fh.read  # type: ignore[attr-defined]
    if read(2) != b"\xff\xd8":
        raise ValueError("no SOI marker")
    while True:
        byte = read(1)
        if not byte:
            raise ValueError("no SOF marker before the end of the file")
        if byte != b"\xff":
            continue
        marker = read(1)
        while marker == b"\xff":  # fill bytes
            marker = read(1)
        if not marker:
            raise ValueError("no SOF marker before the end of the file")
        m = marker[0]
        if m in (0x01, 0x00) or 0xD0 <= m <= 0xD8:
            continue  # standalone markers
        (length,) = struct.unpack(">H", read(2))
        if m in _SOF:
            _, h, w, comps = struct.unpack(">BHHB", read(6))
            return ImageHeader(w, h, 1 if comps == 1 else 3, 1)
        if m == 0xD9 or length < 2:
            raise ValueError("no SOF marker")
        fh.seek(length - 2, 1)  # type: ignore[attr-defined]


def _tiff_header(path: Path) -> ImageHeader:
    import tifffile

    try:
        with tifffile.TiffFile(str(path)) as tf:
            page = tf.pages.first
            spp = int(page.samplesperpixel)
            bits = int(page.bitspersample)
            channels = 3 if page.photometric == 3 else spp  # palette → colour
            return ImageHeader(
                int(page.imagewidth), int(page.imagelength), max(channels, 1), max(1, -(-bits // 8))
            )
    except (tifffile.TiffFileError, OSError, IndexError) as exc:
        raise ValueError(str(exc)) from None
