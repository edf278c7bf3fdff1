"""Small files that decode to huge images or structures, and a run of prostate-fast on each.

Every generator writes a file of a few megabytes at most (no image is ever held whole here):

* :func:`png_bomb`: a PNG of one colour, any size, 8 or 16 bits, with or without alpha (its
  deflate stream is one compressed block repeated after full flushes, with the right Adler-32);
* :func:`jpeg_bomb`: a grey baseline JPEG of one colour whose Huffman tables have one code of
  one bit, so every 8x8 block costs two bits;
* :func:`tiff_bomb`: a tiled (pyramidal or not) or striped TIFF whose tiles or strips all point at
  a few shared data blocks (white, and tissue pink in a box), with resolution tags;
* :func:`polygon_bomb` (GeoJSON zig-zag whose edges span the slide), :func:`aperio_bomb`
  (Aperio XML with many regions), :func:`npz_bomb` (a label table whose arrays inflate to GBs).

``python tools/bombs.py`` makes them all in a temporary folder, runs each command under
``/usr/bin/time -v`` (``apt-get install -y time`` when it is missing: the script then says so and
falls back to ``resource.getrusage`` of the children) and prints one row per case: command, exit
status, peak RSS, first line of stderr. ``--huge`` adds the 200,000 px square tiled TIFF (minutes).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zipfile
import zlib
from pathlib import Path

import numpy as np

_ADLER = 65521


def _adler_combine(a1: int, a2: int, len2: int) -> int:
    """Adler-32 of A + B from those of A and B (zlib's adler32_combine)."""
    rem = len2 % _ADLER
    s1 = a1 & 0xFFFF
    s2 = (rem * s1) % _ADLER
    s1 = (s1 + (a2 & 0xFFFF) + _ADLER - 1) % _ADLER
    s2 = (s2 + ((a1 >> 16) & 0xFFFF) + ((a2 >> 16) & 0xFFFF) + _ADLER - rem) % _ADLER
    return s1 | (s2 << 16)


def _repeated_zlib(block: bytes, times: int) -> bytes:
    """A zlib stream of ``block`` repeated ``times`` times, compressing ``block`` only once."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    piece = c.compress(block) + c.flush(zlib.Z_FULL_FLUSH)  # resets the history: repeatable
    end = zlib.compressobj(9, zlib.DEFLATED, -15).flush(zlib.Z_FINISH)
    a1, one = 1, zlib.adler32(block)
    for _ in range(times):
        a1 = _adler_combine(a1, one, len(block))
    return b"\x78\xda" + piece * times + end + struct.pack(">I", a1)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(
    path: Path, width: int, height: int, *, colour: int = 200, alpha: bool = False, bits: int = 8
) -> Path:
    """A PNG of ``width`` x ``height`` px of one grey ``colour`` (RGB or RGBA, 8 or 16 bits)."""
    channels = 4 if alpha else 3
    sample = bytes([colour] * (bits // 8))
    row = b"\x00" + (sample * channels) * width
    rows = max(1, min(height, (4 << 20) // len(row)))
    while height % rows:
        rows -= 1
    colour_type = 6 if alpha else 2
    ihdr = struct.pack(">IIBBBBB", width, height, bits, colour_type, 0, 0, 0)
    data = _repeated_zlib(row * rows, height // rows)
    idat = b"".join(_chunk(b"IDAT", data[i : i + (1 << 20)]) for i in range(0, len(data), 1 << 20))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + idat + _chunk(b"IEND", b""))
    return path


def jpeg_bomb(path: Path, width: int, height: int) -> Path:
    """A valid grey JPEG of ``width`` x ``height`` px, mid-grey, two bits per 8x8 block."""
    seg = lambda m, d: b"\xff" + bytes([m]) + struct.pack(">H", len(d) + 2) + d  # noqa: E731
    dqt = seg(0xDB, b"\x00" + b"\x01" * 64)
    sof = seg(0xC0, struct.pack(">BHHB", 8, height, width, 1) + b"\x01\x11\x00")
    one_code = b"\x01" + b"\x00" * 15 + b"\x00"  # one code of length 1: symbol 0
    dht = seg(0xC4, b"\x00" + one_code + b"\x10" + one_code)  # DC 0 (diff 0), AC 0 (EOB)
    sos = seg(0xDA, b"\x01\x01\x00\x00\x3f\x00")
    blocks = -(-width // 8) * -(-height // 8)
    scan = b"\x00" * (blocks // 4) + (b"\x0f" if blocks % 4 else b"")
    path.write_bytes(b"\xff\xd8" + dqt + sof + dht + sos + scan + b"\xff\xd9")
    return path


def tiff_bomb(
    path: Path,
    width: int,
    height: int,
    *,
    tile: int | None = 512,
    rows_per_strip: int = 16,
    downsamples: tuple[int, ...] = (1,),
    tissue_box: tuple[float, float, float, float] | None = None,
    mpp: float | None = 0.5,
    unit: int = 3,
    grey: int | None = None,
) -> Path:
    """A TIFF whose tiles (``tile`` px) or strips all share a few data blocks.

    One page per downsample (a pyramid; reduced pages have tiles of ``tile / d``, at least 32
    px), RGB uint8, deflate-compressed; white, and tissue pink where
    the tile lies in ``tissue_box`` (x0, y0, x1, y1 as shares of the slide). ``grey`` (a code)
    makes a one-sample uint8 page of that value instead (a label mask). Resolution tags give
    ``mpp`` in ``unit`` (3: centimetre, 2: inch).
    """
    spp = 1 if grey is not None else 3
    pages = []
    for d in downsamples:
        w, h = max(1, width // d), max(1, height // d)
        if tile:
            th = tw = tile if d == 1 else max(32, 16 * round(tile / d / 16))  # same tile grid
        else:
            th, tw = min(rows_per_strip, h), w
        across, down = -(-w // tw), -(-h // th)
        pages.append((w, h, th, tw, across, down))
    out = bytearray(b"II*\x00\x00\x00\x00\x00")
    blocks: dict[tuple[int, int, bool], tuple[int, int]] = {}

    def block(th: int, tw: int, pink: bool) -> tuple[int, int]:
        key = (th, tw, pink)
        if key not in blocks:
            px = (grey,) if grey is not None else ((230, 150, 200) if pink else (255, 255, 255))
            data = zlib.compress(bytes(px) * (th * tw), 9)
            blocks[key] = (len(out), len(data))
            out.extend(data)
        return blocks[key]

    ifd_pos = []
    for w, h, th, tw, across, down in pages:
        offs = np.empty(across * down, np.uint32)
        counts = np.empty(across * down, np.uint32)
        for r in range(down):
            for c in range(across):
                pink = tissue_box is not None and (
                    tissue_box[0] * w <= c * tw < tissue_box[2] * w
                    and tissue_box[1] * h <= r * th < tissue_box[3] * h
                )
                rows = th if tile or r < down - 1 else h - r * th  # a last strip is shorter
                offs[r * across + c], counts[r * across + c] = block(rows, tw, pink)
        geometry = (w, h, th, tw, tile is not None, spp, len(ifd_pos) > 0)
        ifd_pos.append(_write_ifd(out, geometry, offs, counts, mpp, unit))
    struct.pack_into("<I", out, 4, ifd_pos[0])
    for i in range(len(ifd_pos) - 1):  # chain the IFDs
        n = struct.unpack_from("<H", out, ifd_pos[i])[0]
        struct.pack_into("<I", out, ifd_pos[i] + 2 + 12 * n, ifd_pos[i + 1])
    path.write_bytes(bytes(out))
    return path


def _write_ifd(out, geometry, offs, counts, mpp, unit) -> int:  # noqa: ANN001
    """Append one IFD (and its arrays) to ``out``; return its position."""
    w, h, th, tw, tiled, spp, reduced = geometry

    def array(values: bytes) -> int:
        out.extend(bytes(-len(out) % 8))
        pos = len(out)
        out.extend(values)
        return pos

    entries = [
        (254, 4, 1, int(reduced)),
        (256, 4, 1, w),
        (257, 4, 1, h),
        (259, 3, 1, 8),
        (262, 3, 1, 2 if spp == 3 else 1),
    ]
    if spp == 3:
        entries.append((258, 3, 3, array(struct.pack("<3H", 8, 8, 8))))
    else:
        entries.append((258, 3, 1, 8))
    entries += [(277, 3, 1, spp), (284, 3, 1, 1)]
    n = len(offs)
    o = int(offs[0]) if n == 1 else array(offs.tobytes())  # one value lives in the entry
    c = int(counts[0]) if n == 1 else array(counts.tobytes())
    if tiled:
        entries += [(322, 3, 1, tw), (323, 3, 1, th), (324, 4, n, o), (325, 4, n, c)]
    else:
        entries += [(278, 4, 1, th), (273, 4, n, o), (279, 4, n, c)]
    if mpp:
        per = (10000.0 if unit == 3 else 25400.0) / mpp
        res = array(struct.pack("<II", round(per * 1000), 1000))
        entries += [(282, 5, 1, res), (283, 5, 1, res), (296, 3, 1, unit)]
    entries.sort()
    if len(out) % 2:
        out.append(0)
    pos = len(out)
    out.extend(struct.pack("<H", len(entries)))
    for tag, kind, count, value in entries:
        packed = struct.pack("<HI", value, 0)[:4] if kind == 3 and count == 1 else None
        out.extend(struct.pack("<HHI", tag, kind, count) + (packed or struct.pack("<I", value)))
    out.extend(b"\x00\x00\x00\x00")
    return pos


def polygon_bomb(path: Path, width: int, height: int, vertices: int) -> Path:
    """A GeoJSON polygon of ``vertices`` vertices zig-zagging from the top to the bottom."""
    xs = np.linspace(0, width, max(3, vertices - 2))
    ring = [[round(float(x), 1), 0.0 if i % 2 else float(height)] for i, x in enumerate(xs)]
    ring += [[float(width), float(height) + 10], [0.0, float(height) + 10]]
    ring.append(ring[0])
    feat = {
        "type": "Feature",
        "properties": {"classification": {"name": "cancer"}},
        "geometry": {"type": "Polygon", "coordinates": [ring]},
    }
    path.write_text(json.dumps(feat, separators=(",", ":")))
    return path


def aperio_bomb(path: Path, regions: int) -> Path:
    """An Aperio ImageScope XML with ``regions`` small triangles."""
    region = (
        '<Region><Vertices><Vertex X="{0}" Y="9"/><Vertex X="9" Y="{0}"/>'
        '<Vertex X="1" Y="1"/></Vertices></Region>'
    )
    with open(path, "w") as fh:
        fh.write('<Annotations MicronsPerPixel="0.5"><Annotation Name="cancer"><Regions>')
        for i in range(0, regions, 1000):
            fh.write("".join(region.format(j % 90 + 10) for j in range(i, min(regions, i + 1000))))
        fh.write("</Regions></Annotation></Annotations>")
    return path


def npz_bomb(path: Path, gigabytes: float = 5.8) -> Path:
    """A ``.npz`` whose ``coverage`` member inflates to ``gigabytes`` of zeros."""
    n = int(gigabytes * 2**30) // 4
    head = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        head, {"descr": "<f4", "fortran_order": False, "shape": (n,)}
    )
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, allowZip64=True) as z:
        meta = io.BytesIO()
        np.save(meta, np.array('{"classes": ["benign", "cancer"]}'))
        z.writestr("meta.npy", meta.getvalue())
        with z.open("coverage.npy", "w", force_zip64=True) as fh:
            fh.write(head.getvalue())
            left = n * 4
            zero = bytes(64 << 20)
            while left > 0:
                fh.write(zero[: min(left, len(zero))])
                left -= len(zero)
    return path


def cases(folder: Path, huge: bool = False) -> list[tuple[str, list[str]]]:
    """Make every bomb in ``folder``; return (name, prostate-fast arguments) per case."""
    f = folder
    tiff_bomb(f / "tiled50k.tif", 50000, 50000, tissue_box=(0.1, 0.1, 0.12, 0.12))
    tiff_bomb(f / "striped40k.tif", 40000, 30000, tile=None, mpp=0.5)
    pyramid = {"tile": 256, "downsamples": (1, 32), "tissue_box": (0.1, 0.1, 0.13, 0.13)}
    tiff_bomb(f / "slide32k.tif", 32768, 32768, **pyramid)  # type: ignore[arg-type]
    tiff_bomb(f / "slide40k.tif", 40000, 30000, **pyramid)  # type: ignore[arg-type]
    tiff_bomb(f / "mask40k.tif", 40000, 30000, tile=None, rows_per_strip=64, grey=1, mpp=None)
    png_bomb(f / "mask40k.png", 40000, 30000, colour=1)
    png_bomb(f / "painted32k.png", 32768, 32768)
    png_bomb(f / "painted32k-rgba16.png", 32768, 32768, alpha=True, bits=16)
    jpeg_bomb(f / "jpeg30k.jpg", 30000, 30000)
    polygon_bomb(f / "zigzag20k.geojson", 40000, 30000, 20000)
    polygon_bomb(f / "zigzag200k.geojson", 40000, 30000, 200000)
    aperio_bomb(f / "regions1m.xml", 1_000_000)
    aperio_bomb(f / "regions150k.xml", 150_000)
    npz_bomb(f / "bomb.npz", 5.8)
    s40 = str(f / "slide40k.tif")
    out = [
        ("tiled TIFF 50k px square, one level", ["tiles", str(f / "tiled50k.tif"), "-o", str(f / "t.csv")]),
        ("striped TIFF 40k x 30k (info)", ["info", str(f / "striped40k.tif")]),
        ("striped TIFF 40k x 30k (tiles)", ["tiles", str(f / "striped40k.tif"), "-o", str(f / "s.csv")]),
        ("JPEG 30k px square (info)", ["info", str(f / "jpeg30k.jpg")]),
        ("PNG 32k px square (info)", ["info", str(f / "painted32k.png")]),
        ("painted copy PNG 32k px", ["label", str(f / "slide32k.tif"), "--painted", str(f / "painted32k.png"), "-o", str(f / "p.csv")]),
        ("painted copy PNG 32k RGBA16", ["label", str(f / "slide32k.tif"), "--painted", str(f / "painted32k-rgba16.png"), "-o", str(f / "p16.csv")]),
        ("label mask TIFF 40k x 30k", ["label", s40, "--mask", str(f / "mask40k.tif"), "-o", str(f / "m.csv")]),
        ("label mask PNG 40k x 30k", ["label", s40, "--mask", str(f / "mask40k.png"), "-o", str(f / "mp.csv")]),
        ("GeoJSON zig-zag 20k vertices", ["label", s40, "--geojson", str(f / "zigzag20k.geojson"), "-o", str(f / "g.csv")]),
        ("GeoJSON zig-zag 20k, all tiles", ["label", s40, "--all-tiles", "--geojson", str(f / "zigzag20k.geojson"), "-o", str(f / "ga.csv")]),
        ("GeoJSON zig-zag 200k vertices", ["label", s40, "--geojson", str(f / "zigzag200k.geojson"), "-o", str(f / "g2.csv")]),
        ("Aperio XML 1M regions", ["label", s40, "--xml", str(f / "regions1m.xml"), "-o", str(f / "x.csv")]),
        ("Aperio XML 150k regions", ["label", s40, "--xml", str(f / "regions150k.xml"), "-o", str(f / "x2.csv")]),
        ("npz zip bomb as label table", ["dataset", str(f / "bomb.npz"), "-o", str(f / "ds")]),
    ]  # fmt: skip
    if huge:
        tiff_bomb(f / "tiled200k.tif", 200000, 200000, tissue_box=(0.1, 0.1, 0.101, 0.101))
        argv = ["tiles", str(f / "tiled200k.tif"), "-o", str(f / "h.csv")]
        out.append(("tiled TIFF 200k px square", argv))
    return out


def run_case(argv: list[str], timer: bool, as_bytes: int | None = None) -> tuple[int, int, str]:
    """(exit status, peak RSS in bytes, first stderr line) of ``prostate-fast ARGV``.

    With ``timer`` under ``/usr/bin/time -v``; otherwise the peak comes from the child's own
    resource usage (``os.wait4``, what ``getrusage(RUSAGE_CHILDREN)`` sums).
    """
    cmd = [sys.executable, "-m", "prostate_fast.cli", *argv]
    if as_bytes:
        cmd = ["prlimit", f"--as={as_bytes}", *cmd]
    if timer:
        cmd = ["/usr/bin/time", "-v", *cmd]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    lines = err.splitlines()
    rss = usage.ru_maxrss * 1024
    if timer:
        rss = next((int(x.split(":")[1]) * 1024 for x in lines if "Maximum resident" in x), rss)
        lines = [x for x in lines if not x.startswith("\t") and "Command exited" not in x]
    return proc.returncode, rss, lines[0] if lines else ""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--huge", action="store_true", help="add the 200,000 px square TIFF")
    ap.add_argument("--as-limit", type=float, default=3.0, help="RLIMIT_AS in GiB (3; 0: none)")
    args = ap.parse_args()
    timer = Path("/usr/bin/time").exists()
    if not timer:
        print(
            "/usr/bin/time is missing (apt-get install -y time): peak RSS from the children's "
            "resource usage instead",
            file=sys.stderr,
        )
    as_bytes = int(args.as_limit * 2**30) or None
    folder = Path(tempfile.mkdtemp(prefix="prostate-fast-bombs-"))
    try:
        print(f"{'case':34} {'exit':>4} {'peak RSS':>9}  first stderr line")
        for name, argv in cases(folder, args.huge):
            rc, rss, first = run_case(argv, timer, as_bytes)
            print(f"{name:34} {rc:>4} {rss / 2**20:>6.0f} MB  {first[:160]}", flush=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
