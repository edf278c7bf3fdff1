"""Viewer: tile latency over HTTP, as a browser sees it (issue 17's targets: first tile under
200 ms, p95 under 50 ms with 8 concurrent clients on 2 cores).

Run: ``pytest bench/bench_view.py --benchmark-only -s`` (``--bench-scale`` picks the slide).

Input: the shared synthetic slide (``bench_slide``, a pyramidal JPEG TIFF at 20x) screened into an
output folder with truth scores of 128 px tiles, served by ``prostate-fast view OUT --port 0``
(its own process) on a free loopback port; clients are ``http.client`` connections (keep-alive, one per client).

* ``first tile``: a fresh server (slide not open, cache empty): the slide's descriptor, then one
  full-resolution tile of the slide and one of the prediction layer, what the page asks first;
* ``8 clients``: 8 threads, each "looking at" its own viewport (5 x 3 Deep Zoom tiles of the slide
  and of the prediction layer, at the full-resolution level and one level coarser), all cache
  misses (a fresh server per round), at once. ``extra_info`` records every request's latency: ``p50_ms``,
  ``p95_ms``, ``max_ms``.

Each tile's bytes are checked (decodable, the right size), so a fast wrong answer fails.
"""

from __future__ import annotations

import http.client
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from _scoregrid import make_scores  # noqa: E402

from prostate_fast.screen import rank_worklist, screen_scored, write_worklist  # noqa: E402
from prostate_fast.view.tiles import deep_zoom_levels  # noqa: E402

CLIENTS = 8
VIEW = (5, 3)  # Deep Zoom tiles per viewport (columns, rows)
RESULTS: dict[str, dict] = {}


@pytest.fixture(scope="module")
def out_dir(bench_slide, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bench_view") / "out"
    row = screen_scored(bench_slide.slide, make_scores(bench_slide, tile=128), out)
    write_worklist(rank_worklist([row]), out / "worklist.csv")
    return out


class _Server:
    """``prostate-fast view OUT --port 0`` in its own process (as a user runs it: the clients'
    threads do not share its GIL); the URL is read from its first line of output."""

    def __init__(self, out: Path, cache_mb: int) -> None:
        cmd = [sys.executable, "-m", "prostate_fast.cli", "view", str(out), "--port", "0"]
        cmd += ["--cache-mb", str(cache_mb)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        m = re.search(r"http://([0-9.]+):(\d+)/", line)
        assert m, f"no URL in {line!r}"
        self.address = (m[1], int(m[2]))

    def client(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(*self.address, timeout=60)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self.proc.stdout.close()


def _get(conn: http.client.HTTPConnection, path: str) -> bytes:
    conn.request("GET", path)
    r = conn.getresponse()
    body = r.read()
    assert r.status == 200, (path, r.status, body[:200])
    return body


def _check_tile(body: bytes, channels: int) -> None:
    img = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_UNCHANGED)
    assert (
        img is not None
        and img.shape[:2] == (256, 256)
        and (img.ndim == 2 or img.shape[2] == channels)
    )


@pytest.fixture(scope="module", autouse=True)
def report():
    yield
    for name, info in RESULTS.items():
        print(f"\nview {name}: " + ", ".join(f"{k} {v}" for k, v in info.items()))


def test_first_tile(benchmark, out_dir, bench_slide) -> None:
    top = deep_zoom_levels(bench_slide.width, bench_slide.height)
    col, row = bench_slide.width // 512, bench_slide.height // 512  # the middle of the slide
    held: list[_Server] = []

    def setup():
        while held:
            held.pop().stop()
        held.append(_Server(out_dir, 64))
        return (held[0].client(),), {}

    def first(conn):
        _get(conn, "/api/slide/0.dzi")
        slide = _get(conn, f"/api/slide/0_files/{top}/{col}_{row}.jpeg")
        overlay = _get(conn, f"/api/overlay/0_files/{top}/{col}_{row}.png")
        return slide, overlay

    slide, overlay = benchmark.pedantic(first, setup=setup, rounds=3, iterations=1)
    held.pop().stop()
    _check_tile(slide, 3)
    _check_tile(overlay, 4)
    RESULTS["first tile"] = {"ms": round(benchmark.stats.stats.min * 1e3, 1)}


def _viewports(width: int, height: int) -> list[list[str]]:
    top = deep_zoom_levels(width, height)
    paths = []
    for k in range(CLIENTS):
        level = top - (k % 2)  # half the clients one level coarser
        f = 1 << (top - level)
        cols, rows = -(-width // f) // 256, -(-height // f) // 256
        c0 = (k * 3) % max(1, cols - VIEW[0] + 1)
        r0 = (k * 2) % max(1, rows - VIEW[1] + 1)
        view = []
        for r in range(r0, min(rows, r0 + VIEW[1])):
            for c in range(c0, min(cols, c0 + VIEW[0])):
                view += [
                    f"/api/slide/0_files/{level}/{c}_{r}.jpeg",
                    f"/api/overlay/0_files/{level}/{c}_{r}.png",
                ]
        paths.append(view)
    return paths


def test_eight_clients(benchmark, out_dir, bench_slide) -> None:
    views = _viewports(bench_slide.width, bench_slide.height)
    latencies: list[float] = []
    last: dict[str, bytes] = {}
    held: list[_Server] = []

    def setup():  # a fresh server per round: every tile is a cache miss
        while held:
            held.pop().stop()
        held.append(_Server(out_dir, 64))
        conns = [held[0].client() for _ in views]
        _get(conns[0], "/api/info/0")  # the slide open and the scores loaded, as after a click
        return (conns,), {}

    def client(conn, paths):
        for p in paths:
            t0 = time.perf_counter()
            last[p] = _get(conn, p)
            latencies.append(time.perf_counter() - t0)

    def burst(conns):
        threads = [
            threading.Thread(target=client, args=(c, v)) for c, v in zip(conns, views, strict=True)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    try:
        benchmark.pedantic(burst, setup=setup, rounds=3, iterations=1)
    finally:
        while held:
            held.pop().stop()
    n = sum(len(v) for v in views)
    assert len(latencies) == 3 * n and len(last) == len({p for v in views for p in v})
    for p, body in list(last.items())[:6]:
        _check_tile(body, 4 if "/overlay/" in p else 3)
    ms = np.asarray(latencies) * 1e3
    info = {
        "requests": len(ms),
        "p50_ms": round(float(np.percentile(ms, 50)), 1),
        "p95_ms": round(float(np.percentile(ms, 95)), 1),
        "max_ms": round(float(ms.max()), 1),
    }
    benchmark.extra_info.update(info)
    RESULTS["8 clients"] = info
