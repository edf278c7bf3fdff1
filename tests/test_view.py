"""The viewer's server: worklist, Deep Zoom descriptor and tiles, prediction tiles, traversal, review."""

from __future__ import annotations

import csv
import http.client
import json
import os
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
from _view_fixture import make_output_folder, running

from prostate_fast.cli.main import main
from prostate_fast.overlay import blend_tables, blend_tiles
from prostate_fast.predict.scoregrid import load_score_grid
from prostate_fast.slide import open_slide
from prostate_fast.view import ViewError, open_catalog
from prostate_fast.view.tiles import TILE, TileCache, deep_zoom_levels


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_output_folder(tmp_path_factory.mktemp("view"))


@pytest.fixture(scope="module")
def server(out: Path):
    with running(out) as s:
        yield s


def get(server, path: str, method: str = "GET", body: bytes | None = None):
    conn = http.client.HTTPConnection(*server.server_address[:2], timeout=30)
    headers = {"Content-Type": "application/json"} if body is not None else {}
    conn.request(method, path, body=body, headers=headers)
    r = conn.getresponse()
    data = r.read()
    conn.close()
    return r.status, data


def image(data: bytes, flags: int = cv2.IMREAD_COLOR) -> np.ndarray:
    img = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    code = cv2.COLOR_BGRA2RGBA if img.ndim == 3 and img.shape[2] == 4 else cv2.COLOR_BGR2RGB
    return cv2.cvtColor(img, code)


def rows(server) -> list[dict]:
    status, data = get(server, "/api/worklist")
    assert status == 200
    return json.loads(data)["rows"]


def index_of(server, stem: str) -> int:
    return next(r["index"] for r in rows(server) if r["name"].startswith(stem))


def test_worklist_in_rank_order_with_failures(server, out) -> None:
    got = rows(server)
    with open(out / "worklist.csv", newline="") as fh:
        want = list(csv.DictReader(fh))
    assert [r["name"] for r in got] == [w["slide"] for w in want]
    assert [r["rank"] for r in got] == [1, 2, 3]
    assert got[0]["status"].startswith("error") and not got[0]["viewable"]
    assert got[1]["name"] == "cancer1.tif" and got[1]["thumbnail"] and got[1]["scores"]
    status, png = get(server, f"/api/thumb/{got[1]['index']}.png")
    assert status == 200 and png[:8] == b"\x89PNG\r\n\x1a\n"


def test_page_and_vendored_openseadragon(server) -> None:
    status, html = get(server, "/")
    assert (
        status == 200 and b"openseadragon.min.js" in html and b"http" not in html.split(b"<body")[1]
    )
    status, js = get(server, "/static/vendor/openseadragon/openseadragon.min.js")
    assert status == 200 and js.startswith(b"//! openseadragon 5.0.1")
    assert get(server, "/static/vendor/openseadragon/LICENSE.txt")[0] == 200


def test_deep_zoom_descriptor(server, out) -> None:
    i = index_of(server, "cancer1")
    status, xml = get(server, f"/api/slide/{i}.dzi")
    assert status == 200
    root = ET.fromstring(xml)
    size = root.find("{http://schemas.microsoft.com/deepzoom/2008}Size")
    assert root.get("TileSize") == str(TILE) and root.get("Overlap") == "0"
    assert root.get("Format") == "jpeg"
    assert (int(size.get("Width")), int(size.get("Height"))) == (2048, 1024)
    assert deep_zoom_levels(2048, 1024) == 11


def test_slide_tile_equals_the_package_read(server, out) -> None:
    i = index_of(server, "cancer1")
    with open_slide(out.parent / "slides" / "cancer1.tif") as sl:
        for col, row in [(0, 0), (3, 1), (7, 3)]:
            status, data = get(server, f"/api/slide/{i}_files/11/{col}_{row}.png")
            assert status == 200
            want = sl.read_region((col * TILE, row * TILE), 0, (TILE, TILE))
            np.testing.assert_array_equal(image(data), want)
        status, data = get(server, f"/api/slide/{i}_files/10/1_0.png")  # a coarser level
        want = cv2.resize(
            sl.read_region((512, 0), 0, (512, 512)), (256, 256), interpolation=cv2.INTER_AREA
        )
        assert status == 200 and np.abs(image(data).astype(int) - want).max() <= 1
    status, data = get(server, f"/api/slide/{i}_files/0/0_0.jpeg")
    assert status == 200 and image(data).shape == (1, 1, 3)
    assert get(server, f"/api/slide/{i}_files/11/8_0.png")[0] == 404  # past the edge
    assert get(server, f"/api/slide/{i}_files/12/0_0.png")[0] == 404


@pytest.mark.parametrize("mode", ["class", "graded"])
def test_overlay_tile_is_the_blend_kernel(server, out, mode) -> None:
    i = index_of(server, "cancer1")
    scores = load_score_grid(out / "cancer1" / "cancer1-scores.npz")
    assert scores.downsample == 1.0
    tables = blend_tables(scores, alpha=1.0, mode=mode)
    white = replace(tables, colours=np.full_like(tables.colours, 255))
    tinted = 0
    with open_slide(out.parent / "slides" / "cancer1.tif") as sl:
        for col, row in [(1, 1), (0, 0), (3, 1), (7, 3), (4, 2)]:
            xy = (col * TILE, row * TILE)
            px = sl.read_region(xy, 0, (TILE, TILE))
            status, data = get(server, f"/api/overlay/{i}_files/11/{col}_{row}.png?mode={mode}")
            assert status == 200
            rgba = image(data, cv2.IMREAD_UNCHANGED)
            assert rgba.shape == (TILE, TILE, 4)
            # the alpha channel is the kernel's weight (white over black), exactly
            weight = blend_tiles(np.zeros_like(px), white, origin=xy)[..., 0]
            np.testing.assert_array_equal(rgba[..., 3], weight)
            # the browser's "source over" at full opacity is the kernel's blend, up to rounding
            a = rgba[..., 3:].astype(np.int32)
            shown = (
                px.astype(np.int32) * (255 - a) + rgba[..., :3].astype(np.int32) * a + 127
            ) // 255
            assert np.abs(shown - blend_tiles(px, tables, origin=xy)).max() <= 1
            tinted += int((a > 0).any())
    assert 0 < tinted < 5  # both kinds of tile: tinted, and transparent (no tinted cell near)


def test_overlay_coarse_levels_and_descriptor(server) -> None:
    i = index_of(server, "cancer1")
    status, xml = get(server, f"/api/overlay/{i}.dzi")
    assert status == 200 and b'Format="png"' in xml
    for level in (10, 6, 3, 0):
        status, data = get(server, f"/api/overlay/{i}_files/{level}/0_0.png?mode=class")
        assert status == 200, level
    assert get(server, f"/api/overlay/{i}_files/11/0_0.png?mode=bogus")[0] == 404


def test_probe_gives_the_tile_probabilities(server, out) -> None:
    i = index_of(server, "cancer1")
    scores = load_score_grid(out / "cancer1" / "cancer1-scores.npz")
    r, c = scores.tile_rc[0]
    status, data = get(server, f"/api/probe/{i}?x={c * 64 + 10}&y={r * 64 + 60}")
    got = json.loads(data)
    assert status == 200 and got["tile"] == [int(r), int(c)]
    assert got["prob"]["cancer"] == pytest.approx(float(scores.prob[0, 1]), abs=1e-4)
    status, data = get(server, f"/api/info/{i}")
    assert json.loads(data)["classes"] == ["benign", "cancer"]


@pytest.mark.parametrize(
    "path",
    [
        "/static/../catalog.py",
        "/static/%2e%2e/catalog.py",
        "/static/..%2fserver.py",
        "/api/thumb/..%2F..%2Fslides%2Fcancer1.tif",
        "/../../etc/passwd",
        "/static/vendor\\..\\..\\server.py",
    ],
)
def test_traversal_is_refused(server, path) -> None:
    status, data = get(server, path)
    assert status in (403, 404)
    assert b"import" not in data and b"root:" not in data


def test_unknown_paths_are_404(server) -> None:
    for path in (
        "/static/nothing.js",
        "/api/slide/99.dzi",
        "/api/thumb/99.png",
        "/worklist.csv",
        "/api/x",
    ):
        assert get(server, path)[0] == 404, path
    assert get(server, "/api/worklist", "POST", b"{}")[0] == 404  # read-only except review


def test_review_marks_written_atomically(server, out, monkeypatch) -> None:
    body = json.dumps({"slide": "cancer1.tif", "reviewed": True, "note": "=SUM(A1) glands"})
    status, data = get(server, "/api/review", "POST", body.encode())
    assert status == 200 and json.loads(data)["review"]["note"] == "=SUM(A1) glands"
    with open(out / "review.csv", newline="") as fh:
        marks = list(csv.DictReader(fh))
    assert [m["slide"] for m in marks] == ["cancer1.tif"] and marks[0]["note"] == "'=SUM(A1) glands"
    assert marks[0]["time"].endswith("+00:00")
    assert rows(server)[1]["review"]["note"] == "=SUM(A1) glands"
    # a failing write leaves the old file whole and no temporary behind
    before = (out / "review.csv").read_bytes()
    real_replace = os.replace
    monkeypatch.setattr(
        os, "replace", lambda *a: (_ for _ in ()).throw(OSError(28, "No space left"))
    )
    body = json.dumps({"slide": "benign1.tif", "reviewed": True}).encode()
    assert get(server, "/api/review", "POST", body)[0] == 409
    monkeypatch.setattr(os, "replace", real_replace)
    assert (out / "review.csv").read_bytes() == before
    assert not [p for p in os.listdir(out) if p.startswith(".review.csv")]
    assert "benign1.tif" not in {r["name"] for r in rows(server) if r["review"]}
    # unmark, and refuse slides outside the worklist
    body = json.dumps({"slide": "cancer1.tif", "reviewed": False}).encode()
    assert get(server, "/api/review", "POST", body)[0] == 200
    assert (out / "review.csv").read_text().splitlines() == ["slide,note,time"]
    body = json.dumps({"slide": "../x.tif", "reviewed": True}).encode()
    assert get(server, "/api/review", "POST", body)[0] == 400
    assert get(server, "/api/review", "POST", b"not json")[0] == 400


def test_one_slide_with_scores(out) -> None:
    slide = out.parent / "slides" / "benign1.tif"
    with running(slide, out / "benign1" / "benign1-scores.npz") as s:
        got = rows(s)
        assert [r["name"] for r in got] == ["benign1.tif"] and got[0]["scores"]
        assert get(s, "/api/overlay/0_files/11/0_0.png")[0] == 200
        assert get(s, "/api/review", "POST", b'{"slide": "benign1.tif"}')[0] == 409
    with running(slide) as s:
        assert get(s, "/api/slide/0.dzi")[0] == 200
        assert json.loads(get(s, "/api/info/0")[1])["classes"] == []


def test_tile_cache_is_bounded() -> None:
    cache = TileCache(max_bytes=1000)
    for i in range(50):
        assert cache.get(("t", i), lambda: b"x" * 100) == b"x" * 100
    assert cache.size <= 1000 and len(cache) == 10
    calls = []
    cache.get(("t", 49), lambda: calls.append(1) or b"y")
    assert not calls  # a hit


def test_not_an_output_folder(tmp_path, capsys) -> None:
    with pytest.raises(ViewError, match="not a prostate-fast output folder"):
        open_catalog(tmp_path)
    assert main(["view", str(tmp_path), "--port", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(tmp_path) in err and "worklist.csv" in err
    (tmp_path / "worklist.csv").write_text("a,b\n1,2\n")
    assert main(["view", str(tmp_path), "--port", "0"]) == 2
    assert "not a prostate-fast worklist" in capsys.readouterr().err
    bad = tmp_path / "notes.txt"
    bad.write_text("hello")
    assert main(["view", str(bad), "--port", "0"]) == 2
    assert str(bad) in capsys.readouterr().err
    assert main(["view", str(tmp_path / "missing"), "--port", "0"]) == 2


def test_cli_prints_url_and_serves(out, monkeypatch, capsys) -> None:
    from prostate_fast.view import server as srv

    seen = {}

    def fake_forever(self, poll_interval=0.5):
        seen["url"] = self.url
        seen["host"] = self.server_address[0]
        raise KeyboardInterrupt

    monkeypatch.setattr(srv.ViewServer, "serve_forever", fake_forever)
    opened = []
    monkeypatch.setattr("webbrowser.open", opened.append)
    assert main(["view", str(out), "--port", "0"]) == 0
    printed = capsys.readouterr().out
    assert seen["host"] == "127.0.0.1" and seen["url"] in printed and not opened
    assert main(["view", str(out), "--port", "0", "--open"]) == 0
    assert opened == [seen["url"]]


def test_static_files_ship_in_the_wheel() -> None:
    """Every file of the page is matched by pyproject's package-data (a non-editable install)."""
    import fnmatch
    import tomllib

    root = Path(__file__).resolve().parents[1]
    globs = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]
    view = root / "prostate_fast" / "view"
    files = [p.relative_to(view).as_posix() for p in (view / "static").rglob("*") if p.is_file()]
    assert "static/vendor/openseadragon/LICENSE.txt" in files
    for f in files:
        assert any(fnmatch.fnmatch(f, g) for g in globs["prostate_fast.view"]), f
