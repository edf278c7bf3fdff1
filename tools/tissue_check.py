"""Tissue share of every real image in ``$PROSTATE_FAST_DATA``, and which rule removed pixels.

Usage::

    PROSTATE_FAST_DATA=../shared/data python tools/tissue_check.py [--overlays DIR] [--quiet]

For each image (the 13 tissue/background tiles, ``labelled/ucsb_breast``, the stain images, and
the thumbnails of the H&E slides through :func:`prostate_fast.tissue.detect_tissue`) it prints the
tissue share of :func:`prostate_fast.tissue.tissue_mask_from_rgb` at full resolution, the
threshold, and the share of pixels each rule took out: ``dark`` (black border or marker), ``ink``
(pen-ink pixels), ``glass`` (below the stain threshold). A summary per group follows (min,
median, count under 0.5). ``--overlays DIR`` writes, for each image, the image beside the image
with the mask outline tinted (PNG), to look at the masks by eye.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np


def _read(path: Path) -> np.ndarray:
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    code = cv2.COLOR_BGRA2RGBA if img.shape[2] == 4 else cv2.COLOR_BGR2RGB
    return cv2.cvtColor(img, code)


def _breakdown(rgb: np.ndarray) -> dict:
    """Share removed by each rule, and the final share."""
    from prostate_fast import tissue
    from prostate_fast.slide.pixels import to_rgb

    rgb3 = np.ascontiguousarray(to_rgb(rgb, 1))
    cand, pen, dark, t = tissue._score_bright(rgb3, "otsu", None, True, 1)
    tm = tissue.tissue_mask_from_rgb(rgb, n_threads=1)
    return {
        "share": tm.fraction,
        "t": t,
        "dark": float(dark.mean()),
        "ink": float((pen & ~dark).mean()),
        "glass": float((~cand & ~pen & ~dark).mean()),
        "mask": tm.mask,
    }


def _overlay(rgb: np.ndarray, mask: np.ndarray, out: Path) -> None:
    import cv2

    from prostate_fast.slide.pixels import to_rgb

    img = np.ascontiguousarray(to_rgb(rgb, 1))
    tint = img.copy()
    tint[~mask] = (tint[~mask] * 0.35).astype(np.uint8)
    edge = cv2.morphologyEx(mask.view(np.uint8), cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8))
    tint[edge > 0] = (0, 255, 0)
    both = np.concatenate([img, tint], axis=1)
    cv2.imwrite(str(out), cv2.cvtColor(both, cv2.COLOR_RGB2BGR))


def _images(data: Path) -> list[tuple[str, Path]]:
    groups = [
        ("tiles", sorted((data / "tiles" / "tissue_vs_background").glob("*.png"))),
        ("ucsb", sorted((data / "labelled" / "ucsb_breast").glob("*.png"))),
        ("stain", sorted((data / "tiles" / "stain").glob("*.*"))),
    ]
    return [(g, p) for g, paths in groups for p in paths]


def _slides(data: Path) -> list[tuple[str, float, np.ndarray]]:
    from prostate_fast.slide import open_slide
    from prostate_fast.tissue import detect_tissue

    rows = []
    for name in (
        "CMU-1-Small-Region.svs",
        "tcga-cr-7395-01a-01-ts1.svs",
        "camelyon-multiframe.dcm",
    ):
        path = data / "wsi" / name
        if path.exists():
            with open_slide(path) as slide:
                tm = detect_tissue(slide, n_threads=1)
            rows.append((name, tm.fraction, tm.mask))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--overlays", type=Path, help="write image | mask overlays here")
    parser.add_argument("--quiet", action="store_true", help="summary only")
    args = parser.parse_args(argv)
    data = Path(os.environ.get("PROSTATE_FAST_DATA", ""))
    if not (data / "tiles").is_dir():
        print("set PROSTATE_FAST_DATA to the shared data folder", file=sys.stderr)
        return 2
    if args.overlays:
        args.overlays.mkdir(parents=True, exist_ok=True)
    shares: dict[str, list[float]] = {}
    for group, path in _images(data):
        rgb = _read(path)
        b = _breakdown(rgb)
        shares.setdefault(group, []).append(b["share"])
        if not args.quiet:
            print(
                f"{group:6s} {path.name:48s} share {b['share']:.3f}  t {b['t']:5.1f}  "
                f"dark {b['dark']:.3f}  ink {b['ink']:.3f}  glass {b['glass']:.3f}"
            )
        if args.overlays:
            _overlay(rgb, b["mask"], args.overlays / f"{group}-{path.stem}.png")
    for name, share, _mask in _slides(data):
        print(f"slide  {name:48s} share {share:.3f}")
    for group, vals in shares.items():
        v = np.array(vals)
        print(
            f"{group:6s} n {v.size:3d}  min {v.min():.3f}  median {np.median(v):.3f}  "
            f"< 0.5: {int((v < 0.5).sum())}  < 0.1: {int((v < 0.1).sum())}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
