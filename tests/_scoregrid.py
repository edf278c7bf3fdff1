"""ScoreGrids for overlay/screen tests without a model: probabilities from a synthetic slide's truth."""

from __future__ import annotations

import numpy as np

from prostate_fast.predict.scoregrid import ScoreGrid


def make_scores(
    syn,
    *,
    tile: int = 128,
    stride: int | None = None,
    downsample: float = 1.0,
    level: int = 0,
    scale: float = 1.0,
    seed: int = 0,
    tissue_only: bool = True,
    slide_name: str | None = None,
    grid_shape: tuple | None = None,
) -> ScoreGrid:
    """Scores of a synthetic slide: p(cancer) in [0.6, 1) on cancer tiles, [0, 0.45) elsewhere."""
    stride = stride or tile
    wt, ht = syn.width / downsample, syn.height / downsample
    cols, rows = int((wt - tile) // stride) + 1, int((ht - tile) // stride) + 1
    rr, cc = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    rc = np.stack([rr.ravel(), cc.ravel()], 1).astype(np.int32)
    xy = np.rint(rc[:, ::-1] * stride * downsample).astype(np.int64)
    m, d = syn.truth_mask(), syn.mask_downsample
    half = tile * downsample / 2
    cx = ((xy[:, 0] + half) / d).astype(int).clip(0, m.shape[1] - 1)
    cy = ((xy[:, 1] + half) / d).astype(int).clip(0, m.shape[0] - 1)
    code = m[cy, cx]
    rng = np.random.default_rng(seed)
    pc = np.where(code == 2, rng.uniform(0.6, 1, len(code)), rng.uniform(0, 0.45, len(code)))
    keep = code > 0 if tissue_only else np.ones(len(code), bool)
    prob = np.stack([1 - pc, pc], 1).astype(np.float32)[keep]
    values = dict(
        slide_path=str(syn.slide),
        slide_name=slide_name or syn.slide.name,
        classes=("benign", "cancer"),
        colours={"benign": (128, 128, 128), "cancer": (0, 255, 0)},
        tile_size=tile,
        stride=stride,
        level=level,
        downsample=float(downsample),
        scale=float(scale),
        mpp=syn.mpp * downsample,
        grid_shape=grid_shape or (rows, cols),
        tile_rc=rc[keep],
        l0_xy=xy[keep],
        prob=prob,
        thresholds={"cancer": 0.5},
        model="truth",
        engine="none",
    )
    return ScoreGrid(**values)
