"""The viewer's HTTP server: the page, the worklist, Deep Zoom tiles, probabilities, review marks.

Why the standard library's :class:`~http.server.ThreadingHTTPServer` (not Starlette/uvicorn): the
viewer serves one pathologist on one workstation; a tile costs a slide read, a resize and a JPEG
encode, all in native code that releases the GIL, so threads overlap them on every core, and the
benchmark (``bench/bench_view.py``: 8 concurrent HTTP clients) meets the targets (first tile
under 200 ms, p95 under 50 ms on 2 cores) without an ASGI stack. No new dependency, nothing to
install on a screening workstation.

Routes (GET unless said; ``I`` is a row index of the worklist, never a path):

* ``/`` and ``/static/NAME``: the page and its vendored assets (a fixed list read at start);
* ``/api/worklist``: JSON rows in rank order with their review marks;
* ``/api/thumb/I.png``: the row's thumbnail (a file inside the output folder);
* ``/api/slide/I.dzi``, ``/api/slide/I_files/L/C_R.jpeg`` (or ``.png``): slide tiles;
* ``/api/overlay/I.dzi``, ``/api/overlay/I_files/L/C_R.png?mode=class|graded``: prediction tiles;
* ``/api/info/I``: classes, colours, dimensions; ``/api/probe/I?x=&y=``: class probabilities of
  the tile under level-0 pixel (x, y);
* ``/api/geojson/I``: the row's GeoJSON (a file inside the output folder);
* POST ``/api/review``: ``{"slide", "reviewed", "note"}``; the only write (``review.csv``).

Anything else is 404; a path with ``..``, a backslash or an encoded separator is 403.
"""

from __future__ import annotations

import json
import re
import threading
import urllib.parse
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from .catalog import Catalog, Entry
from .tiles import TileCache, dzi_xml, overlay_tile, slide_tile

__all__ = ["ViewServer", "make_server"]

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript",
    ".css": "text/css",
    ".png": "image/png",
    ".txt": "text/plain; charset=utf-8",
    ".md": "text/plain; charset=utf-8",
}
_TILE = re.compile(r"^/api/(slide|overlay)/(\d+)_files/(\d+)/(\d+)_(\d+)\.(jpeg|png)$")
_DZI = re.compile(r"^/api/(slide|overlay)/(\d+)\.dzi$")
_ONE = re.compile(r"^/api/(info|probe|geojson|thumb)/(\d+)(?:\.png)?$")
_BAD = re.compile(r"(^|/)\.\.?(/|$)|\\|%2f|%5c|%2e", re.IGNORECASE)
MAX_OPEN = 4  # slides kept open at once


def _static_files() -> dict[str, bytes]:
    """Every file under the package's ``static/`` folder, by its relative name."""
    root = resources.files("prostate_fast.view") / "static"
    found: dict[str, bytes] = {}

    def walk(node: Any, prefix: str) -> None:
        for child in node.iterdir():
            name = f"{prefix}{child.name}"
            if child.is_dir():
                walk(child, name + "/")
            elif Path(name).suffix in _TYPES:
                found[name] = child.read_bytes()

    walk(root, "")
    return found


class _Source:
    """One entry's open slide, ScoreGrid and blend tables (made on first use, thread-safe)."""

    def __init__(self, entry: Entry) -> None:
        self.entry = entry
        self.lock = threading.Lock()
        self.slide: Any = None
        self.scores: Any = None
        self.size: tuple[int, int] | None = None  # the slide at the tiling level
        self.tables: dict[str, Any] = {}

    def open(self) -> Any:
        from ..slide import open_slide

        with self.lock:
            if self.slide is None:
                if self.entry.slide is None:
                    raise FileNotFoundError(f"{self.entry.name}: the slide file is not available")
                self.slide = open_slide(self.entry.slide, n_threads=1)
            return self.slide

    def grid(self, mode: str) -> tuple[Any, tuple[int, int]]:
        from ..overlay import blend_tables, overlay_geometry
        from ..predict.scoregrid import load_score_grid

        slide = self.open()
        with self.lock:
            if self.scores is None:
                if self.entry.scores is None:
                    raise FileNotFoundError(f"{self.entry.name}: no scores for this slide")
                self.scores = load_score_grid(self.entry.scores)
                _, w, h = overlay_geometry(slide, self.scores, check_name=False)
                self.size = (w, h)
            if mode not in self.tables:
                self.tables[mode] = blend_tables(self.scores, alpha=1.0, mode=mode)
            return self.tables[mode], self.size

    def close(self) -> None:
        with self.lock:
            if self.slide is not None:
                self.slide.close()
                self.slide = None


class ViewServer(ThreadingHTTPServer):
    """ThreadingHTTPServer holding the catalog, the open slides and the tile cache."""

    daemon_threads = True
    request_queue_size = 64  # the base's 5 drops the SYNs of a browser's burst: 1 s retries

    def __init__(self, address: tuple[str, int], catalog: Catalog, cache_bytes: int) -> None:
        super().__init__(address, _Handler)
        self.catalog = catalog
        self.cache = TileCache(cache_bytes)
        self.static = _static_files()
        self._sources: dict[int, _Source] = {}
        self._empty: dict[tuple[int, int], bytes] = {}
        self._lock = threading.Lock()

    def empty_png(self, width: int, height: int) -> bytes:
        """A transparent PNG of that size (encoded once)."""
        key = (int(width), int(height))
        if key not in self._empty:
            self._empty[key] = _encode(np.zeros((height, width, 4), np.uint8), "png")
        return self._empty[key]

    @property
    def url(self) -> str:
        """``http://HOST:PORT/`` of the listening socket."""
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"

    def source(self, index: int) -> _Source | None:
        """The entry's source (None for a bad index); keeps at most ``MAX_OPEN`` slides open."""
        if not 0 <= index < len(self.catalog.entries):
            return None
        with self._lock:
            src = self._sources.pop(index, None) or _Source(self.catalog.entries[index])
            self._sources[index] = src  # most recent last
            while len(self._sources) > MAX_OPEN:
                old = self._sources.pop(next(iter(self._sources)))
                old.close()
            return src

    def server_close(self) -> None:
        super().server_close()
        for src in self._sources.values():
            src.close()


def make_server(
    catalog: Catalog, host: str = "127.0.0.1", port: int = 0, *, cache_bytes: int = 64 << 20
) -> ViewServer:
    """A :class:`ViewServer` bound to ``host``:``port`` (0: any free port), not yet serving."""
    return ViewServer((host, int(port)), catalog, cache_bytes)


def _encode(img: np.ndarray, fmt: str) -> bytes:
    import cv2

    if img.shape[2] == 4:
        bgr = cv2.cvtColor(img, cv2.COLOR_RGBA2BGRA)
    else:
        bgr = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    params = [cv2.IMWRITE_JPEG_QUALITY, 85] if fmt == "jpeg" else [cv2.IMWRITE_PNG_COMPRESSION, 1]
    ok, buf = cv2.imencode(".jpg" if fmt == "jpeg" else ".png", bgr, params)
    if not ok:
        raise ValueError(f"cannot encode a {fmt} tile")
    return buf.tobytes()


class _Handler(BaseHTTPRequestHandler):
    server: ViewServer
    protocol_version = "HTTP/1.1"  # keep-alive: a browser reuses its connections for tiles
    # One send per response, at once: headers and body are buffered and flushed together after
    # the request (the base writes them unbuffered, in two sends, and Nagle + delayed ACK then
    # cost 40 ms per tile on a keep-alive connection).
    wbufsize = 1 << 20
    disable_nagle_algorithm = True
    server_version = "prostate-fast-view"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        pass  # quiet: one line per tile would flood the terminal

    # -- responses -------------------------------------------------------------------------
    def _send(self, status: int, body: bytes, ctype: str, cache: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "max-age=3600" if cache else "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, obj: Any, status: int = 200) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json")

    def _error(self, status: HTTPStatus, text: str = "") -> None:
        self._send(status, (text or status.phrase).encode() + b"\n", "text/plain; charset=utf-8")

    # -- GET -------------------------------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802 - the base's name
        raw = self.path.split("?", 1)[0]
        if _BAD.search(raw):
            return self._error(HTTPStatus.FORBIDDEN)
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
        try:
            self._route(raw, query)
        except (FileNotFoundError, KeyError) as exc:
            self._error(HTTPStatus.NOT_FOUND, str(exc))
        except (OSError, ValueError, RuntimeError) as exc:
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, " ".join(str(exc).split()))
        except Exception as exc:  # noqa: BLE001 - a domain error of one slide: say it, serve on
            self._error(HTTPStatus.UNPROCESSABLE_ENTITY, " ".join(str(exc).split()))

    do_HEAD = do_GET

    def _route(self, path: str, query: dict[str, list[str]]) -> None:
        if path == "/":
            path = "/static/index.html"
        if path.startswith("/static/"):
            body = self.server.static.get(path[len("/static/") :])
            if body is None:
                return self._error(HTTPStatus.NOT_FOUND)
            return self._send(200, body, _TYPES[Path(path).suffix], cache=True)
        if path == "/api/worklist":
            return self._worklist()
        if m := _TILE.match(path):
            kind, i, level, col, row, fmt = m.groups()
            mode = (query.get("mode") or ["class"])[0]
            return self._tile(kind, int(i), int(level), int(col), int(row), fmt, mode)
        if m := _DZI.match(path):
            return self._dzi(m[1], int(m[2]))
        if m := _ONE.match(path):
            src = self.server.source(int(m[2]))
            if src is not None:
                return getattr(self, f"_{m[1]}")(src, query)
        self._error(HTTPStatus.NOT_FOUND)

    def _worklist(self) -> None:
        marks = self.server.catalog.marks()
        rows = [
            {
                **e.row,
                "index": e.index,
                "name": e.name,
                "status": e.status,
                "thumbnail": e.thumbnail is not None,
                "viewable": e.slide is not None,
                "scores": e.scores is not None,
                "geojson": e.geojson is not None,
                "review": marks.get(e.name),
            }
            for e in self.server.catalog.entries
        ]
        self._json({"rows": rows, "review": self.server.catalog.review is not None})

    def _thumb(self, src: _Source, query: dict) -> None:
        if src.entry.thumbnail is None:
            return self._error(HTTPStatus.NOT_FOUND)
        self._send(200, src.entry.thumbnail.read_bytes(), "image/png", cache=True)

    def _geojson(self, src: _Source, query: dict) -> None:
        if src.entry.geojson is None:
            return self._error(HTTPStatus.NOT_FOUND)
        self._send(200, src.entry.geojson.read_bytes(), "application/geo+json")

    def _info(self, src: _Source, query: dict) -> None:
        w, h = src.open().dimensions
        info: dict[str, Any] = {"name": src.entry.name, "width": w, "height": h, "classes": []}
        if src.entry.scores is not None:
            tables, (tw, th) = src.grid("class")
            info.update(
                classes=list(tables.classes),
                colours=tables.colours.tolist(),
                overlay_width=tw,
                overlay_height=th,
            )
        self._json(info)

    def _probe(self, src: _Source, query: dict) -> None:
        x, y = float(query["x"][0]), float(query["y"][0])
        tables, _ = src.grid("class")
        s, ds = src.scores, float(src.scores.downsample)
        t, st = int(tables.tile_size), int(tables.stride)
        tx, ty = int(x // ds), int(y // ds)
        c, r = (2 * tx + 1 - t + st) // (2 * st), (2 * ty + 1 - t + st) // (2 * st)
        hit = np.flatnonzero((s.tile_rc[:, 0] == r) & (s.tile_rc[:, 1] == c))
        if not hit.size:
            return self._json({"tile": None})
        p = s.prob[hit[0]]
        probs = {k: round(float(v), 4) for k, v in zip(s.classes, p, strict=True)}
        self._json({"tile": [int(r), int(c)], "prob": probs})

    def _dzi(self, kind: str, index: int) -> None:
        src = self.server.source(index)
        if src is None:
            return self._error(HTTPStatus.NOT_FOUND)
        if kind == "slide":
            w, h = src.open().dimensions
        else:
            _, (w, h) = src.grid("class")
        self._send(
            200, dzi_xml(w, h, "jpeg" if kind == "slide" else "png").encode(), "application/xml"
        )

    def _tile(
        self, kind: str, index: int, level: int, col: int, row: int, fmt: str, mode: str
    ) -> None:
        src = self.server.source(index)
        if src is None or mode not in ("class", "graded") or (kind == "overlay" and fmt != "png"):
            return self._error(HTTPStatus.NOT_FOUND)

        def make() -> bytes | None:
            if kind == "slide":
                img = slide_tile(src.open(), level, col, row)
            else:
                tables, (w, h) = src.grid(mode)
                img = overlay_tile(tables, w, h, level, col, row)
            if img is None:
                return None
            if kind == "overlay" and not img[..., 3].any():
                return self.server.empty_png(img.shape[1], img.shape[0])
            return _encode(img, fmt)

        key = (kind, index, level, col, row, fmt, mode if kind == "overlay" else "")
        body = self.server.cache.get(key, make)
        if body is None:
            return self._error(HTTPStatus.NOT_FOUND)
        self._send(200, body, f"image/{fmt}", cache=True)

    # -- POST ------------------------------------------------------------------------------
    def do_POST(self) -> None:  # noqa: N802 - the base's name
        if self.path != "/api/review":
            return self._error(HTTPStatus.NOT_FOUND)
        try:
            n = int(self.headers.get("Content-Length", "0"))
            if not 0 < n <= 65536:
                raise ValueError("a review mark is a small JSON object")
            body = json.loads(self.rfile.read(n))
            mark = self.server.catalog.set_mark(
                str(body["slide"]), bool(body.get("reviewed", True)), str(body.get("note", ""))
            )
        except (ValueError, KeyError, TypeError) as exc:
            return self._error(HTTPStatus.BAD_REQUEST, " ".join(str(exc).split()))
        except Exception as exc:  # noqa: BLE001 - e.g. a read-only folder: say it
            return self._error(HTTPStatus.CONFLICT, " ".join(str(exc).split()))
        self._json({"slide": body["slide"], "review": mark})
