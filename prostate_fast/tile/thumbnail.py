"""The ``tiles`` command's picture: a slide thumbnail with its tissue mask and kept tiles drawn."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..slide import Slide
from .grid import TileGrid

if TYPE_CHECKING:
    from ..tissue import TissueMask

__all__ = ["render_grid_thumbnail"]


def render_grid_thumbnail(
    slide: Slide, grid: TileGrid, tissue: TissueMask | None = None, *, max_size: int = 1600
) -> np.ndarray:
    """A thumbnail with the tissue mask outlined, the kept tiles tinted and outlined, region ids.

    Tissue outline: green; kept tiles: orange tint and outline of their union (and of every tile
    when tiles are at least 6 thumbnail pixels wide); region ids: black numbers at each region's
    top-left corner. Returns RGB uint8 no larger than ``max_size`` on either side.
    """
    import cv2

    thumb = slide.get_thumbnail((max_size, max_size)).copy()
    th, tw = thumb.shape[:2]
    w0, h0 = slide.dimensions
    fx, fy = tw / w0, th / h0
    kept = np.zeros((th, tw), np.uint8)
    side = grid.l0_tile_size
    boxes = np.empty((len(grid), 4), np.int64)
    boxes[:, 0] = np.floor(grid.l0_xy[:, 0] * fx)
    boxes[:, 1] = np.floor(grid.l0_xy[:, 1] * fy)
    boxes[:, 2] = np.ceil((grid.l0_xy[:, 0] + side) * fx) - 1
    boxes[:, 3] = np.ceil((grid.l0_xy[:, 1] + side) * fy) - 1
    for x0, y0, x1, y1 in boxes.tolist():
        kept[y0 : y1 + 1, x0 : x1 + 1] = 1
    tint = np.array((255, 140, 0), np.float32)
    on = kept.astype(bool)
    thumb[on] = (0.7 * thumb[on] + 0.3 * tint).astype(np.uint8)
    if side * fx >= 6:
        for x0, y0, x1, y1 in boxes.tolist():
            cv2.rectangle(thumb, (x0, y0), (x1, y1), (230, 120, 0), 1)
    contours, _ = cv2.findContours(kept, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(thumb, contours, -1, (255, 120, 0), 2)
    if tissue is not None:
        ds = tissue.downsample
        m = cv2.resize(
            tissue.mask.view(np.uint8),
            None,
            fx=ds * fx,
            fy=ds * fy,
            interpolation=cv2.INTER_NEAREST,
        )
        contours, _ = cv2.findContours(m[:th, :tw].copy(), cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(thumb, contours, -1, (0, 190, 0), 2)
        scale = max(0.5, min(tw, th) / 600)
        for reg in tissue.regions:
            org = (int(reg.bbox_l0[0] * fx) + 2, int(reg.bbox_l0[1] * fy) + int(22 * scale))
            for colour, width in (((255, 255, 255), 4), ((0, 0, 0), 2)):
                font = cv2.FONT_HERSHEY_SIMPLEX
                cv2.putText(thumb, str(reg.id), org, font, scale, colour, width, cv2.LINE_AA)
    return thumb
