"""CLI subcommands that apply a model: predict, overlay, screen, run, batch, demo.

Each ``_cmd_*`` turns arguments into a call of the stage's public function; no stage logic here.
``predict``, ``screen``, ``run`` and ``batch`` build one
:class:`~prostate_fast.screen.ScreeningOptions` from their options (``common._screening_options``);
``--engine``'s choices are :data:`prostate_fast.predict.ENGINES`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .common import (
    _add_model_and_slide,
    _add_overlay_look,
    _add_slide_mpp,
    _engines,
    _no_tissue,
    _positive_int,
    _print_warnings,
    _recorded_warnings,
    _save_all,
    _screening_options,
    _threshold_pair,
)

_THREADS_HELP = "CPU threads (default: every core)"


def _add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="per-tile class probabilities of a slide's tissue with a trained model",
        description="Tile the slide's tissue at the model's tile size and scale, run the model "
        "and write OUT.npz and OUT.csv (a score grid for `overlay`).",
    )
    _add_model_and_slide(p)
    p.add_argument(
        "-o",
        "--out",
        type=Path,
        required=True,
        help="output stem; OUT.npz and OUT.csv are written (a .npz/.csv suffix is dropped)",
    )
    _add_engine(
        p,
        "gluon (MXNet Gluon), native (C++ on MXNet's C predict API) or onnx (ONNX Runtime; the "
        "route to current GPUs); default gluon",
    )
    p.add_argument("--threads", type=_positive_int, default=None, help=_THREADS_HELP)
    scale = p.add_mutually_exclusive_group()
    _add_slide_mpp(scale)
    scale.add_argument(
        "--level",
        type=int,
        default=None,
        help="read this pyramid level as it is instead of the model's scale",
    )
    _add_threshold(
        p, "decision threshold of a class, e.g. cancer=0.3 (default: model.json's); repeatable"
    )
    _add_ignore_domain(p)
    p.add_argument(
        "--ignore-scale",
        action="store_true",
        help="read --level even when its scale differs from the model's by more than 25%%",
    )
    p.add_argument("--progress", action="store_true", help="show progress on stderr")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.set_defaults(handler=_cmd_predict)


def _add_engine(p: argparse.ArgumentParser, engine_help: str) -> None:
    """``--engine`` (choices: ENGINES), ``--ctx`` and ``--batch-size``."""
    p.add_argument("--engine", choices=_engines(), default="gluon", help=engine_help)
    p.add_argument("--ctx", default="cpu", help="cpu (default) or gpu(N)")
    p.add_argument("--batch-size", type=_positive_int, default=64, help="tiles per batch (64)")
    p.add_argument(
        "--precision",
        choices=("fp32", "fp16", "int8"),
        default="fp32",
        help="int8 (with --engine onnx): the model quantized once, calibrated on its validation "
        "split and refused if its AUC drops by more than 0.005; fp16 (with --engine onnx): "
        "float16 weights, for GPUs (default fp32)",
    )


def _add_ignore_domain(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--ignore-domain",
        action="store_true",
        help="score slides outside the model's training domain (fluorescence, another stain) "
        "anyway; by default they are refused (predict) or listed as `needs manual read`",
    )


def _add_threshold(p: argparse.ArgumentParser, threshold_help: str) -> None:
    p.add_argument(
        "--threshold",
        type=_threshold_pair,
        action="append",
        default=[],
        metavar="CLASS=P",
        help=threshold_help,
    )


def _predict_progress(done: int, total: int, tiles_per_s: float) -> None:
    """``--progress``: one line on stderr, rewritten after each batch, ended after the last."""
    print(f"\rpredict: {done}/{total} tiles, {tiles_per_s:.0f} tiles/s", end="", file=sys.stderr)
    if done == total:
        print(file=sys.stderr)
    sys.stderr.flush()


def _cmd_predict(args: argparse.Namespace) -> int:
    from ..predict.core import predict_slide

    stem = args.out.with_suffix("") if args.out.suffix.lower() in (".npz", ".csv") else args.out
    outs = [stem.with_name(stem.name + ".npz"), stem.with_name(stem.name + ".csv")]
    if not args.overwrite:
        for out in outs:
            if out.exists():
                raise FileExistsError(f"{out}: already exists; pass --overwrite to replace it")
    options = _screening_options(args)
    progress = _predict_progress if args.progress else None
    with _recorded_warnings() as caught:
        grid = predict_slide(
            args.model,
            args.slide,
            **options.predict_kwargs(),
            n_threads=options.n_threads,
            progress=progress,
        )
    if len(grid) == 0:
        raise _no_tissue(args.slide, grid.grid_shape[0] * grid.grid_shape[1])
    _save_all([lambda out=out: grid.save(out, overwrite=args.overwrite) for out in outs], outs)
    _print_warnings(caught)  # unverified scale, unknown domain, dark field; an error says it alone
    t = grid.timings
    thr = ", ".join(f"{k} >= {v:g}" for k, v in grid.thresholds.items())
    rows, cols = grid.grid_shape
    scale = f"level {grid.level}, {grid.downsample:g} level-0 px per tile px"
    print(f"slide:     {grid.slide_name} ({scale}, grid {rows} x {cols})")
    speed = f"{t['tiles_per_s']:.0f} tiles/s ({grid.engine})"
    print(f"tiles:     {len(grid)} on tissue, {speed}, {t['total']:.1f} s in all")
    print(f"positive:  {grid.cancer_share():.1%} of tiles ({thr})")
    for out in outs:
        print(f"wrote:     {out}")
    return 0


def _add_overlay(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "overlay",
        help="colour the predicted tiles over the slide: pyramidal TIFF + PNG thumbnail",
        description="Alpha-blend the class colour over the tiles predicted as cancer and write "
        "the slide at the tiling magnification as a pyramidal tiled JPEG TIFF (OpenSlide, QuPath "
        "and ASAP open it), plus OUT-thumb.png with a legend.",
    )
    p.add_argument("slide", type=Path, help="slide file the scores were computed on")
    p.add_argument("scores", type=Path, help="score grid written by `predict` (.npz or .csv)")
    p.add_argument("-o", "--out", type=Path, required=True, help="output TIFF (OUT.tif)")
    _add_overlay_look(p)
    p.add_argument(
        "--geojson",
        type=Path,
        default=None,
        help="also export the predicted tiles as QuPath GeoJSON",
    )
    p.add_argument("--no-thumbnail", action="store_true", help="do not write OUT-thumb.png")
    p.add_argument("--threads", type=_positive_int, default=None, help=_THREADS_HELP)
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.set_defaults(handler=_cmd_overlay, output_args=("geojson",))


def _cmd_overlay(args: argparse.Namespace) -> int:
    from .._util import check_outputs
    from ..geojson import export_geojson
    from ..overlay.core import check_encoding, overlay_paths, write_overlay

    colours = dict(args.colour)
    check_encoding(quality=args.quality)  # bad settings first, as write_overlay checks them
    tif, thumb = overlay_paths(args.out, not args.no_thumbnail)
    check_outputs([tif, thumb, args.geojson], overwrite=args.overwrite)  # all, before writing
    res = write_overlay(
        args.slide,
        args.scores,
        args.out,
        alpha=args.alpha,
        mode=args.mode,
        outline=args.outline,
        colours=colours,
        quality=args.quality,
        thumbnail=not args.no_thumbnail,
        overwrite=args.overwrite,
        n_threads=args.threads,
    )
    if args.geojson is not None:  # beside the overlay: both or neither
        try:
            export_geojson(res.scores, args.geojson, colours=colours, overwrite=args.overwrite)
        except BaseException:
            for p in (res.path, res.thumbnail):
                if p is not None:
                    p.unlink(missing_ok=True)
            raise
    (w, h), n = res.level_dimensions[0], len(res.level_dimensions)
    mpp = f", {res.mpp:.4g} um/px" if res.mpp else ""
    print(f"overlay:   {res.path} ({w} x {h} px{mpp}, {n} levels, {res.seconds:.1f} s)")
    print(f"positive:  {res.n_positive} tiles")
    for label, path in (("thumbnail", res.thumbnail), ("geojson", args.geojson)):
        if path is not None:
            print(f"{label + ':':11}{path}")
    return 0


def _add_screening_options(
    p: argparse.ArgumentParser, *, threads_help: str = _THREADS_HELP
) -> None:
    """Options shared by screen, run and batch: engine, scale, thresholds, overlay, threads."""
    _add_engine(p, "inference engine (see `predict`; default gluon)")
    _add_slide_mpp(p)
    _add_threshold(p, "decision threshold of a class (default: the model's); repeatable")
    _add_ignore_domain(p)
    _add_overlay_look(p)
    p.add_argument("--threads", type=_positive_int, default=None, help=threads_help)


def _add_screen(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "screen",
        help="predict many slides and write a worklist ranked by cancer score, with overlays",
        description="For every slide: predict, write OUT_DIR/<stem>/ (overlay TIFF, thumbnail, "
        "GeoJSON, scores) and a cancer score; then the worklist CSV ranked by priority (slides "
        "that failed first, then those without tissue, then by score: the mean probability of "
        "the slide's top 1 %% of tiles). Exit status 2 when a slide failed or has no tissue (its "
        "row says why; the others are still screened).",
    )
    p.add_argument("model", type=Path, help="model folder written by `train`")
    p.add_argument("slides", type=Path, nargs="+", help="slide files")
    p.add_argument("-o", "--out", type=Path, required=True, help="worklist CSV to write")
    p.add_argument(
        "--out-dir",
        type=Path,
        default=None,
        help="folder of the per-slide outputs (default: the worklist's folder)",
    )
    _add_screening_options(p)
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.set_defaults(handler=_cmd_screen)


def _add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="one slide to overlay, GeoJSON and worklist row, with a trained model",
        description="Screen one slide: OUT/<stem>/ gets the overlay TIFF, its thumbnail, the QuPath "
        "GeoJSON and the scores; OUT/worklist.csv its worklist row. (`screen` does many slides.)",
    )
    _add_model_and_slide(p)
    p.add_argument("-o", "--out", type=Path, required=True, help="output folder")
    _add_screening_options(p)
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.set_defaults(handler=_cmd_run)


def _cmd_run(args: argparse.Namespace) -> int:
    return _screen(args, [args.slide], args.out, args.out / "worklist.csv")


def _cmd_screen(args: argparse.Namespace) -> int:
    out_dir = args.out_dir if args.out_dir is not None else args.out.parent
    return _screen(args, args.slides, out_dir, args.out)


def _screen(args: argparse.Namespace, slides: list[Path], out_dir: Path, worklist: Path) -> int:
    """``screen`` and ``run``: screen ``slides`` into ``out_dir``, the worklist CSV at ``worklist``."""
    from ..screen import screen_slides

    rows = screen_slides(
        args.model,
        slides,
        out_dir,
        _screening_options(args),
        worklist=worklist,
        overwrite=args.overwrite,
        progress=_report_row,
    )
    failed = sum(r.status.startswith("error") for r in rows)
    manual = sum(r.status.startswith("needs manual read") for r in rows)
    empty = sum(not r.ok for r in rows) - failed - manual
    counts = f"{failed} failed, {manual} need a manual read, {empty} without tissue"
    print(f"worklist:  {worklist} ({len(rows)} slides, {counts})")
    return 2 if failed or empty or manual else 0


def _report_row(r: Any) -> None:
    """Progress of ``screen`` and ``run``: a slide's worklist row, when it is done."""
    if r.ok:
        positive = f"{r.n_positive} of {r.n_tiles} tiles positive"
        print(
            f"screened:  {r.slide}: {positive}, top p {r.top_probability:.3f} ({r.seconds:.1f} s)"
        )
    else:
        print(f"prostate-fast: {r.slide}: {r.status}", file=sys.stderr)


def _add_batch(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "batch",
        help="screen many slides on a process pool or a Dask cluster, resumably",
        description="For every slide: predict and write OUT/<stem>/ (overlay TIFF, thumbnail, "
        "GeoJSON, scores, manifest.json), each folder built under a temporary name and renamed "
        "when complete; then OUT/worklist.csv (ranked) and OUT/batch-summary.csv. A rerun skips "
        "the slides whose outputs are complete and match the slide, model and settings. A slide "
        "that fails is reported and the others go on. Exit status: 0 all slides screened or "
        "skipped, 3 finished with failed slides, 2 nothing could start (bad model, no slides).",
    )
    p.add_argument(
        "slides",
        type=Path,
        help="folder of slides (.svs .ndpi .tif .tiff .mrxs .scn .bif .vms .jpg .png), a text "
        "file with one slide path per line (# comments), or one slide",
    )
    p.add_argument("--model", type=Path, required=True, help="model folder written by `train`")
    p.add_argument("-o", "--out", type=Path, required=True, help="output folder")
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes (default 1; 0 runs in this process); with --scheduler local, the "
        "LocalCluster's workers",
    )
    p.add_argument(
        "--scheduler",
        default=None,
        metavar="ADDRESS",
        help="run on Dask: tcp://HOST:PORT of a running scheduler, local[:N] for a LocalCluster "
        "on 127.0.0.1, or slurm:JOBS for a dask-jobqueue SLURMCluster (configured by the dask "
        "config's jobqueue.slurm)",
    )
    _add_screening_options(
        p,
        threads_help="CPU threads per slide (default: cores / workers; Dask: the worker's "
        "OMP_NUM_THREADS)",
    )
    p.add_argument("--force", action="store_true", help="redo every slide, even complete ones")
    p.add_argument(
        "--verify",
        action="store_true",
        help="hash slides and outputs before skipping (default: trust unchanged size and mtime)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress on stderr")
    p.set_defaults(handler=_cmd_batch)


def _cmd_batch(args: argparse.Namespace) -> int:
    from ..batch.core import discover_slides, run_batch
    from ..batch.executors import Progress, check_scheduler

    if args.workers < 0:
        raise ValueError(f"--workers must be 0 or more, got {args.workers}")
    options = _screening_options(args)
    if args.scheduler is not None:
        check_scheduler(args.scheduler)  # before the slides, as run_batch checks them
    slides = discover_slides(args.slides)
    res = run_batch(
        slides,
        args.model,
        args.out,
        options,
        workers=args.workers,
        scheduler=args.scheduler,
        force=args.force,
        verify=args.verify,
        progress=None if args.no_progress else Progress(len(slides)),
    )
    for r in res.failed:
        print(f"prostate-fast: {r.slide}: {r.status}: {r.reason}", file=sys.stderr)
    c = res.counts
    counts = f"{c['done']} done, {c['skipped']} skipped, {c['error']} failed"
    manual = c.get("needs manual read", 0)
    counts += f", {manual} need a manual read" if manual else ""
    print(f"slides:    {len(res.results)}: {counts} ({res.seconds:.1f} s)")
    print(f"worklist:  {res.worklist}")
    print(f"summary:   {res.summary}")
    return 3 if res.failed else 0


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the pipeline on a freshly generated synthetic slide")
    p.add_argument("-o", "--out", type=Path, default=Path("demo-out"), help="output folder")
    p.add_argument("--seed", type=int, default=2018, help="seed of the synthetic slide")
    p.set_defaults(handler=_cmd_demo)


def _cmd_demo(args: argparse.Namespace) -> int:
    from ..demo import run_demo

    result = run_demo(args.out, seed=args.seed)
    print(f"demo outputs in {result.out_dir}/")
    return 0
