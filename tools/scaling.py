"""Scaling: the per-slide pipeline on synthetic slides of 0.25 to 2 (or 5) gigapixels: time, RSS.

Usage::

    python tools/scaling.py [--cache DIR] [--out DIR] [--sizes 0.25,0.5,1,2] [--max-gp 5]
                            [--series fixed,grow] [--threads N] [--engine native]

Two series of synthetic slides (20x, 0.5 µm/px), generated once and cached in ``--cache``
(default ``$PF_BENCH_CACHE`` or ``/tmp/pf_bench_cache``; 2 gigapixels take one to two minutes and
about 300 MB of disk for the slide and its painted copy):

* ``fixed``: the same tissue on every size: width 16384 px and six biopsy cores whose length and
  thickness follow the width, the height growing with the size (``synthetic_params`` stacks the
  cores vertically). The slide area grows 8x (20x with 5 gigapixels), the tissue does not.
* ``grow``: 2:1 slides with four cores that scale with the slide: tissue grows with the area.

Each slide runs in a fresh child process (``python tools/scaling.py --child ...``): load the
model (the study's CNN at 128 px, seeded weights), ``detect_tissue`` + ``build_grid``,
``label_tiles`` from the painted copy (white fraction fused), ``predict_slide`` (native engine),
``write_overlay`` (pyramidal TIFF + thumbnail; 20 % of tissue tiles flagged). The child reports
each stage's seconds and its peak resident memory (``getrusage(RUSAGE_SELF).ru_maxrss``, measured
by the kernel over the whole process) after each stage.

Writes ``scaling.csv``, ``scaling.json`` (rows + machine) and ``scaling.png`` (time against
slide size and against tissue, peak RSS against slide size) into ``--out``. Expectation: the tile
stages (tissue, label, predict) grow with the tissue, not with the slide; the overlay, which
writes the full-resolution pyramid, grows with the slide (only through copying, on slides whose
untouched tiles it copies at every level); peak memory stays flat.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SIZES = (0.25, 0.5, 1.0, 2.0, 5.0)
FIXED_WIDTH = 16384
SERIES = {
    "fixed": {"n_cores": 6, "n_cancer": 6, "seed": 21},
    "grow": {"n_cores": 4, "n_cancer": 4, "seed": 21},
}
DISK_PER_GP = 1.6e9  # slide + painted copy (0.3 GB), overlay (0.2 GB), temporary level (0.75 GB)
POSITIVE_SHARE = 0.2
STAGES = ("load", "tissue", "label", "predict", "overlay")


def slide_size(series: str, gp: float) -> tuple[int, int]:
    """Level-0 (width, height) of the series' slide of ``gp`` gigapixels (multiples of 256)."""
    if series == "fixed":
        return FIXED_WIDTH, max(1024, round(gp * 1e9 / FIXED_WIDTH / 256) * 256)
    w = max(2048, round(math.sqrt(2 * gp * 1e9) / 256) * 256)
    return w, max(1024, w // 2)


# -- child: one slide, one process ---------------------------------------------------------------
def child(args: argparse.Namespace) -> int:
    """Run the pipeline on one slide and print one JSON line: stage seconds, peak RSS, tiles."""
    import numpy as np

    def peak() -> int:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    out: dict[str, Any] = {"seconds": {}, "peak_rss": {}}
    t0 = time.perf_counter()

    def done(stage: str) -> None:
        nonlocal t0
        now = time.perf_counter()
        out["seconds"][stage] = round(now - t0, 3)
        out["peak_rss"][stage] = peak()
        t0 = now

    from prostate_fast.label import label_tiles
    from prostate_fast.overlay import write_overlay
    from prostate_fast.predict import load_model, predict_slide
    from prostate_fast.slide import open_slide
    from prostate_fast.tile import build_grid
    from prostate_fast.tissue import detect_tissue

    predictor = load_model(args.model, engine=args.engine, n_threads=args.threads)
    done("load")
    with open_slide(args.slide, n_threads=args.threads) as sl:
        tissue = detect_tissue(sl, n_threads=args.threads)
        grid = build_grid(sl, tissue)
        done("tissue")
        label_tiles(sl, args.painted, grid, n_threads=args.threads)
        done("label")
        scores = predict_slide(predictor, sl, tissue=tissue, n_threads=args.threads)
        done("predict")
        p = np.asarray(scores.prob)[:, 1]
        if len(p):
            q = float(np.quantile(p, 1 - POSITIVE_SHARE))
            scores = scores.with_thresholds({scores.classes[1]: q})
        write_overlay(sl, scores, args.work / "overlay.tif", overwrite=True, n_threads=args.threads)
        done("overlay")
        out.update(
            width=sl.dimensions[0],
            height=sl.dimensions[1],
            tissue_tiles=len(grid),
            grid_tiles=int(grid.grid_shape[0] * grid.grid_shape[1]),
            tissue_fraction=round(float(tissue.fraction), 4),
        )
    predictor.close()
    for f in args.work.glob("overlay*"):
        f.unlink()
    print("SCALING " + json.dumps(out), flush=True)
    return 0


# -- parent --------------------------------------------------------------------------------------
def run_child(slide: Any, model: Path, work: Path, threads: int | None, engine: str) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        "--slide",
        str(slide.slide),
        "--painted",
        str(slide.painted),
        "--model",
        str(model),
        "--work",
        str(work),
        "--engine",
        engine,
    ]
    if threads:
        cmd += ["--threads", str(threads)]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    line = next((x for x in res.stdout.splitlines() if x.startswith("SCALING ")), None)
    if res.returncode or line is None:
        raise RuntimeError(f"child failed ({res.returncode}): {res.stderr[-2000:]}")
    got = json.loads(line[len("SCALING ") :])
    got["process_s"] = round(wall, 3)
    return got


def flat_row(series: str, gp: float, got: dict[str, Any], gen_s: float | None) -> dict[str, Any]:
    sec, rss = got["seconds"], got["peak_rss"]
    row: dict[str, Any] = {
        "series": series,
        "gp_nominal": gp,
        "width": got["width"],
        "height": got["height"],
        "slide_gp": round(got["width"] * got["height"] / 1e9, 4),
        "tissue_tiles": got["tissue_tiles"],
        "grid_tiles": got["grid_tiles"],
        "tissue_gp": round(got["tissue_tiles"] * 128 * 128 / 1e9, 5),
        "tissue_fraction": got["tissue_fraction"],
    }
    row.update({f"{s}_s": sec.get(s) for s in STAGES})
    row["tile_stages_s"] = round(sum(sec.get(s, 0) for s in ("tissue", "label", "predict")), 3)
    row["pipeline_s"] = round(sum(sec.get(s, 0) for s in STAGES if s != "load"), 3)
    row["process_s"] = got["process_s"]
    row["peak_rss_mib"] = round(max(rss.values()) / 2**20, 1)
    row.update({f"rss_after_{s}_mib": round(rss[s] / 2**20, 1) for s in STAGES if s in rss})
    row["ms_per_tissue_tile"] = round(1e3 * row["tile_stages_s"] / max(1, row["tissue_tiles"]), 3)
    row["overlay_s_per_gp"] = round(row["overlay_s"] / row["slide_gp"], 2)
    row["generate_s"] = None if gen_s is None else round(gen_s, 1)
    return row


def plot(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(15, 4.6))
    colours = {"fixed": "tab:blue", "grow": "tab:orange"}
    labels = {"fixed": "same tissue", "grow": "tissue grows with area"}
    for series in SERIES:
        rs = sorted((r for r in rows if r["series"] == series), key=lambda r: r["slide_gp"])
        if not rs:
            continue
        c, gp = colours[series], [r["slide_gp"] for r in rs]
        ax[0].plot(gp, [r["pipeline_s"] for r in rs], "o-", color=c, label=f"{labels[series]}: all")
        ax[0].plot(
            gp,
            [r["tile_stages_s"] for r in rs],
            "s--",
            color=c,
            label=f"{labels[series]}: tissue + label + predict",
        )
        ax[0].plot(
            gp,
            [r["overlay_s"] for r in rs],
            "^:",
            color=c,
            label=f"{labels[series]}: overlay",
        )
        ax[1].plot(
            [r["tissue_tiles"] / 1000 for r in rs],
            [r["tile_stages_s"] for r in rs],
            "s-",
            color=c,
            label=labels[series],
        )
        ax[2].plot(gp, [r["peak_rss_mib"] for r in rs], "o-", color=c, label=labels[series])
    ax[0].set(xlabel="slide size (gigapixels)", ylabel="seconds", title="time per slide")
    ax[1].set(
        xlabel="tissue tiles (thousands, 128 px at 20x)",
        ylabel="seconds",
        title="tile stages against tissue",
    )
    ax[2].set(xlabel="slide size (gigapixels)", ylabel="MiB", title="peak resident memory")
    ax[2].set_ylim(bottom=0)
    for a in ax:
        a.grid(alpha=0.3)
        a.legend(fontsize=7)
        a.set_xlim(left=0)
        a.set_ylim(bottom=0)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def machine() -> dict[str, Any]:
    cpu = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        ),
        "?",
    )
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": cpu,
        "load": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, default=None, help="slide cache ($PF_BENCH_CACHE)")
    ap.add_argument("--out", type=Path, default=Path("."), help="folder of the result files")
    ap.add_argument("--sizes", default=None, help="gigapixels, e.g. 0.25,0.5,1,2")
    ap.add_argument("--max-gp", type=float, default=2.0, help="largest default size (5: study's)")
    ap.add_argument("--series", default="fixed,grow", help="fixed, grow or both")
    ap.add_argument("--threads", type=int, default=None, help="threads (default: all cores)")
    ap.add_argument("--engine", default="native", choices=("native", "gluon", "onnx"))
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    for a in ("--slide", "--painted", "--model", "--work"):
        ap.add_argument(a, type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child(args)
    sys.path.insert(0, str(ROOT / "bench"))
    sys.path.insert(0, str(ROOT / "tests"))
    from _synthcache import cache_dir, cached_synthetic
    from _tiny_model import make_model

    cache = cache_dir(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    sizes = (
        [float(s) for s in args.sizes.split(",")]
        if args.sizes
        else [s for s in SIZES if s <= args.max_gp]
    )
    series = [s.strip() for s in args.series.split(",") if s.strip()]
    bad = [s for s in series if s not in SERIES]
    if bad:
        ap.error(f"--series: unknown {bad}; choose from {sorted(SERIES)}")
    model = cache / "model-study-128"
    if not (model / "model.json").is_file():
        make_model(model, tile_size=128)
    args.out.mkdir(parents=True, exist_ok=True)
    facts = machine()
    rows: list[dict[str, Any]] = []
    for name in series:
        for gp in sizes:
            w, h = slide_size(name, gp)
            free = shutil.disk_usage(cache).free
            if free < DISK_PER_GP * w * h / 1e9:
                print(
                    f"skip {name} {gp:g} GP: {free / 1e9:.1f} GB free in {cache}, needs about "
                    f"{DISK_PER_GP * w * h / 1e18:.1f} GB"
                )
                continue
            t0 = time.perf_counter()
            slide, made = cached_synthetic(cache, width=w, height=h, **SERIES[name])
            gen = time.perf_counter() - t0 if made else None
            got = run_child(slide, model, cache / "work", args.threads, args.engine)
            row = flat_row(name, gp, got, gen)
            rows.append(row)
            print(
                f"{name:5} {row['slide_gp']:6.2f} GP {w}x{h}: tissue {row['tissue_tiles']:6d} "
                f"tiles, tissue {row['tissue_s']:.1f} s, label {row['label_s']:.1f} s, "
                f"predict {row['predict_s']:.1f} s, overlay {row['overlay_s']:.1f} s, "
                f"peak RSS {row['peak_rss_mib']:.0f} MiB",
                flush=True,
            )
    if not rows:
        return 1
    facts["load_after"] = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    with (args.out / "scaling.csv").open("w", newline="") as f:
        cols = list(dict.fromkeys(k for r in rows for k in r))
        wr = csv.DictWriter(f, fieldnames=cols)
        wr.writeheader()
        wr.writerows(rows)
    doc = {
        "machine": facts,
        "threads": args.threads,
        "engine": args.engine,
        "rows": rows,
        "summary": summarise(rows),
    }
    (args.out / "scaling.json").write_text(json.dumps(doc, indent=1) + "\n")
    title = (
        f"prostate-fast per-slide pipeline, {facts['nproc']} cores ({facts['cpu']}), "
        f"{args.engine} engine; load {facts['load']} → {facts['load_after']}"
    )
    plot(rows, args.out / "scaling.png", title)
    for line in doc["summary"]["lines"]:
        print(line)
    print(f"wrote {args.out / 'scaling.csv'}, scaling.json, scaling.png")
    return 0


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """How cost and memory grew from the smallest to the largest slide of each series."""
    out: dict[str, Any] = {"lines": []}
    for name in SERIES:
        rs = sorted((r for r in rows if r["series"] == name), key=lambda r: r["slide_gp"])
        if len(rs) < 2:
            continue
        a, b = rs[0], rs[-1]
        s = {
            "area_x": b["slide_gp"] / a["slide_gp"],
            "tissue_x": b["tissue_tiles"] / max(1, a["tissue_tiles"]),
            "tile_stages_x": b["tile_stages_s"] / max(1e-9, a["tile_stages_s"]),
            "overlay_x": b["overlay_s"] / max(1e-9, a["overlay_s"]),
            "rss_mib": (min(r["peak_rss_mib"] for r in rs), max(r["peak_rss_mib"] for r in rs)),
        }
        out[name] = s
        out["lines"].append(
            f"{name}: slide area x{s['area_x']:.1f}, tissue x{s['tissue_x']:.2f} -> tile stages "
            f"x{s['tile_stages_x']:.2f}, overlay x{s['overlay_x']:.2f}; peak RSS "
            f"{s['rss_mib'][0]:.0f}-{s['rss_mib'][1]:.0f} MiB"
        )
    return out


if __name__ == "__main__":
    sys.exit(main())
