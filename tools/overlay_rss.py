"""Peak memory of ``prostate-fast overlay`` on a gigapixel slide (issue 7: must stay under 1.5 GiB).

Usage::

    python tools/overlay_rss.py [--slide SLIDE --scores SCORES.npz] [--work DIR]
                                [--width 45056 --height 23552] [--threads N] [--keep]

Without ``--slide``, a synthetic slide of ``--width`` x ``--height`` (default 1.06 gigapixels,
20x, 0.5 µm/px) is generated in ``--work`` (reused when it is already there) together with scores
from its truth mask (128 px tiles at level 0, tissue only, p(cancer) >= 0.6 on cancer). Then
``python -m prostate_fast.cli overlay`` runs in a child process; its peak resident memory is
``getrusage(RUSAGE_CHILDREN).ru_maxrss`` (kernel-measured, the whole life of the child), and a
psutil sampler records the RSS over time for the report. Prints one summary; exit status 1 when
the peak exceeds ``--limit-gib`` (default 1.5).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np


def _scores_from_truth(made, out: Path, tile: int = 128) -> Path:
    from prostate_fast.predict import ScoreGrid

    cols, rows = made.width // tile, made.height // tile
    rr, cc = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    rc = np.stack([rr.ravel(), cc.ravel()], 1).astype(np.int32)
    xy = (rc[:, ::-1].astype(np.int64) * tile).astype(np.int64)
    mask, d = made.truth_mask(), made.mask_downsample
    cy = ((xy[:, 1] + tile // 2) // d).clip(0, mask.shape[0] - 1)
    cx = ((xy[:, 0] + tile // 2) // d).clip(0, mask.shape[1] - 1)
    code = mask[cy, cx]
    rng = np.random.default_rng(0)
    p = np.where(code == 2, rng.uniform(0.6, 1, len(code)), rng.uniform(0, 0.45, len(code)))
    keep = code > 0
    grid = ScoreGrid(
        slide_path=str(made.slide),
        slide_name=made.slide.name,
        classes=("benign", "cancer"),
        colours={"cancer": (0, 255, 0)},
        tile_size=tile,
        stride=tile,
        level=0,
        downsample=1.0,
        scale=1.0,
        mpp=made.mpp,
        grid_shape=(rows, cols),
        tile_rc=rc[keep],
        l0_xy=xy[keep],
        prob=np.stack([1 - p, p], 1).astype(np.float32)[keep],
        thresholds={"cancer": 0.5},
        model="truth",
        engine="none",
    )
    return grid.save(out, overwrite=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slide", type=Path)
    ap.add_argument("--scores", type=Path)
    ap.add_argument("--work", type=Path, default=Path("/tmp/pf-overlay-rss"))
    ap.add_argument("--width", type=int, default=45056)
    ap.add_argument("--height", type=int, default=23552)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--limit-gib", type=float, default=1.5)
    ap.add_argument("--keep", action="store_true", help="keep the overlay output")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    if args.slide is None:
        from prostate_fast.synthetic import make_synthetic

        name = f"rss-{args.width}x{args.height}"
        t0 = time.perf_counter()
        if (args.work / f"{name}.tif").exists() and (args.work / f"{name}.json").exists():
            from prostate_fast.synthetic import SyntheticSlide

            meta = json.loads((args.work / f"{name}.json").read_text())
            made = SyntheticSlide(
                slide=args.work / f"{name}.tif",
                painted=args.work / f"{name}-painted.tif",
                geojson=args.work / f"{name}.geojson",
                mask=args.work / f"{name}-mask.png",
                meta=args.work / f"{name}.json",
                width=meta["width"],
                height=meta["height"],
                mpp=meta["mpp"],
                objective_power=meta["objective_power"],
                mask_downsample=meta["mask_downsample"],
                seed=meta["seed"],
                cancer_polygons=(),
                core_polygons=(),
            )
        else:
            made = make_synthetic(
                args.work, name=name, width=args.width, height=args.height, seed=1, overwrite=True
            )
            print(f"generated {made.slide} in {time.perf_counter() - t0:.0f} s")
        args.slide = made.slide
        args.scores = _scores_from_truth(made, args.work / f"{name}-scores.npz")
    elif args.scores is None:
        ap.error("--scores is required with --slide")
    out = args.work / "overlay.tif"
    cmd = [
        sys.executable,
        "-m",
        "prostate_fast.cli",
        "overlay",
        str(args.slide),
        str(args.scores),
        "-o",
        str(out),
        "--overwrite",
    ]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    samples: list[tuple[float, int]] = []
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd)

    def sample() -> None:
        import psutil

        try:
            p = psutil.Process(proc.pid)
            while proc.poll() is None:
                samples.append((time.perf_counter() - t0, p.memory_info().rss))
                time.sleep(0.2)
        except psutil.Error:
            pass

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    rc = proc.wait()
    wall = time.perf_counter() - t0
    sampler.join()
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    import openslide

    w, h = openslide.OpenSlide(str(args.slide)).dimensions
    osr = openslide.OpenSlide(str(out)) if rc == 0 else None
    print(f"slide:      {args.slide} ({w} x {h} = {w * h / 1e9:.2f} gigapixels)")
    print(
        f"overlay:    exit {rc}, {wall:.1f} s wall, {out.stat().st_size / 2**20:.0f} MiB"
        if rc == 0
        else f"overlay:    exit {rc}"
    )
    if osr is not None:
        print(
            f"openslide:  {osr.level_count} levels {osr.level_dimensions[0]}, "
            f"mpp {osr.properties.get('openslide.mpp-x')}"
        )
    if samples:
        mids = [s for s in samples if wall * 0.25 <= s[0] <= wall * 0.75] or samples
        print(
            f"rss (psutil, every 0.2 s): max {max(r for _, r in samples) / 2**20:.0f} MiB, "
            f"middle half of the run {min(r for _, r in mids) / 2**20:.0f}-"
            f"{max(r for _, r in mids) / 2**20:.0f} MiB"
        )
    print(
        f"peak RSS:   {peak / 2**20:.0f} MiB (ru_maxrss of the child; limit {args.limit_gib:g} GiB)"
    )
    if not args.keep and out.exists():
        out.unlink()
        out.with_name(out.stem + "-thumb.png").unlink(missing_ok=True)
    return 0 if rc == 0 and peak < args.limit_gib * 2**30 else 1


if __name__ == "__main__":
    sys.exit(main())
