"""The overlay's PNG thumbnail: the blended slide, small, with a legend panel below it."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

__all__ = ["legend_thumbnail", "write_png"]

_FONT = 0  # cv2.FONT_HERSHEY_SIMPLEX


def write_png(path: str | os.PathLike[str], rgb: np.ndarray) -> None:
    """Write an RGB uint8 image as PNG (to ``path`` exactly, whatever its suffix), marked as ours.

    The PNG carries the tEXt chunk ``Software: prostate-fast`` (:func:`~.._outputs.mark_png`), so
    ``--overwrite`` may replace it later.
    """
    import cv2

    from .._outputs import mark_png

    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:  # pragma: no cover - OpenCV without PNG
        raise RuntimeError("OpenCV cannot encode PNG")
    with open(path, "wb") as f:
        f.write(mark_png(buf.tobytes()))


def legend_thumbnail(
    image: np.ndarray | None,
    grid: Any,
    tables: Any,
    *,
    alpha: float,
    mode: str,
    size: int,
    title: str,
    mpp: float | None,
) -> np.ndarray:
    """Shrink ``image`` to ``size`` px on its longer side and append a legend panel below it.

    The legend lists each non-negative class (colour swatch, name, threshold, tile count and share
    of scored tiles; several classes sharing one threshold, the screening test on their summed
    probability, get one line saying so), then the mode, alpha, tile size and mpp, so the picture explains itself.
    """
    import cv2

    if image is None:
        raise ValueError("no image to make a thumbnail of")
    h, w = image.shape[:2]
    f = min(1.0, size / max(h, w))
    if f < 1.0:
        image = cv2.resize(
            image, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA
        )
    h, w = image.shape[:2]
    pred = np.asarray(grid.predicted)
    n = max(1, len(pred))
    thresholds = dict(getattr(grid, "thresholds", {}) or {})
    lines: list[tuple[tuple[int, int, int] | None, str]] = [(None, title)]
    positive = list(tables.classes[1:])
    shared = {thresholds.get(c) for c in positive}
    if len(positive) > 1 and len(shared) == 1 and None not in shared:  # one screening threshold
        lines.append((None, f"positive when p({'+'.join(positive)}) >= {float(shared.pop()):.2f}"))
        thresholds = {}
    for i, name in enumerate(tables.classes):
        if i == 0:
            continue
        k = int(np.count_nonzero(pred == i))
        thr = thresholds.get(name)
        thr_text = f"p >= {float(thr):.2f}, " if thr is not None else ""
        rgb = tuple(int(v) for v in tables.colours[i])
        lines.append((rgb, f"{name}: {thr_text}{k} of {len(pred)} tiles ({100.0 * k / n:.1f}%)"))
    if mode == "class":
        how = f"predicted tiles tinted in their class colour, opacity {float(alpha):.2f}"
    else:
        how = f"every tile tinted, opacity {float(alpha):.2f} x its class probability"
    lines.append((None, how))
    if tables.outline_width:
        lines.append((None, f"predicted tiles outlined ({tables.outline_width} px)"))
    scale_text = f", {tables.tile_size * mpp:.0f} um" if mpp else ""
    lines.append((None, f"tiles {tables.tile_size} px{scale_text}"))

    fs = max(0.4, min(1.0, w / 1400.0))
    th = max(1, round(fs * 2))
    (_, ch), base = cv2.getTextSize("Ag", _FONT, fs, th)
    line_h = ch + base + max(6, round(10 * fs))
    pad = max(6, round(12 * fs))
    sw = ch + base
    need_w = max(cv2.getTextSize(t, _FONT, fs, th)[0][0] for _, t in lines) + 3 * pad + sw
    panel_h = pad * 2 + line_h * len(lines)
    cw = max(w, need_w)
    canvas = np.full((h + panel_h, cw, 3), 255, np.uint8)
    canvas[:h, :w] = image
    canvas[h : h + 1] = 0
    y = h + pad
    for rgb, text in lines:
        x = pad
        if rgb is not None:
            cv2.rectangle(canvas, (x, y + 2), (x + sw, y + 2 + sw), rgb, -1)
            cv2.rectangle(canvas, (x, y + 2), (x + sw, y + 2 + sw), (0, 0, 0), 1)
        x += sw + pad
        cv2.putText(canvas, text, (x, y + ch + 2), _FONT, fs, (0, 0, 0), th, cv2.LINE_AA)
        y += line_h
    return canvas
