"""Command-line interface: ``prostate-fast <stage> ...``.

One subcommand per stage. Each ``_cmd_*`` function only turns arguments into a call of the stage's
public function and prints the result; stage logic lives in the stage modules.

Errors: a :class:`~prostate_fast.errors.ProstateFastError`, a refused overwrite or an OS error on a
user's file becomes one line on stderr (``prostate-fast: error: <file>: <problem>``) and exit
status 2; bad arguments exit 2 through argparse. Outputs are written to temporary names and renamed
when complete, so a failure leaves no partial output.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from . import __version__
from .errors import ProstateFastError

Handler = Callable[[argparse.Namespace], int]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _no_tissue(slide: Path, n_tiles: int, min_tissue: float | None = None) -> ProstateFastError:
    """The error of `tiles`, `label` and `predict` on a slide where no tile lies on tissue.

    (Blank glass, an all-white scan, only dust and pen marks.) An empty table or score grid would
    look like a benign slide; `screen` and `batch` instead give such a slide the worklist status
    "no tissue" and rank it with the failures, for a manual read.
    """
    from .errors import SlideError

    if min_tissue is None:
        from .tile import MIN_TISSUE

        min_tissue = MIN_TISSUE
    return SlideError(
        f"{slide}: no tissue found (0 of {n_tiles} tiles are at least {min_tissue:.0%} "
        "tissue); nothing written"
    )


def _save_all(writers: Sequence[Callable[[], object]], paths: Sequence[Path]) -> None:
    """Run writers that each write one file atomically; if one fails, remove those written."""
    done: list[Path] = []
    try:
        for write, path in zip(writers, paths, strict=True):
            write()
            done.append(path)
    except BaseException:
        for path in done:
            path.unlink(missing_ok=True)
        raise


# -- info -------------------------------------------------------------------------------------
def _add_info(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="describe a slide: format, levels, mpp, objective, images")
    p.add_argument("slide", type=Path, help="slide file (SVS, NDPI, TIFF, JPEG, ...)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(handler=_cmd_info)


def _cmd_info(args: argparse.Namespace) -> int:
    from .slide import open_slide

    with open_slide(args.slide) as slide:
        facts = slide.describe()
    if args.json:
        print(json.dumps(facts, indent=2))
        return 0
    mpp = facts["mpp"]
    print(f"file:       {facts['path']}")
    print(f"format:     {facts['format']}")
    print(f"dimensions: {facts['dimensions'][0]} x {facts['dimensions'][1]} px (level 0)")
    print(f"mpp:        {f'{mpp[0]:.4f} x {mpp[1]:.4f} um/px' if mpp else 'not recorded'}")
    obj = facts["objective_power"]
    print(f"objective:  {f'{obj:g}x' if obj else 'not recorded'}")
    print(f"levels:     {facts['level_count']}")
    for i, ((w, h), ds) in enumerate(
        zip(facts["level_dimensions"], facts["level_downsamples"], strict=True)
    ):
        print(f"  level {i}: {w} x {h} px, downsample {ds:g}")
    assoc = facts["associated_images"]
    print(f"associated: {', '.join(assoc) if assoc else 'none'}")
    return 0


# -- synth ------------------------------------------------------------------------------------
def _add_synth(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "synth",
        help="generate a deterministic synthetic biopsy slide with its annotations",
        description="Write NAME.tif (pyramidal JPEG TIFF), NAME-painted.tif (painted copy), "
        "NAME.geojson (QuPath polygons), NAME-mask.png (label mask) and NAME.json into OUT_DIR.",
    )
    p.add_argument("-o", "--out", type=Path, required=True, help="output folder")
    p.add_argument("--name", default="synthetic", help="file name stem (default: synthetic)")
    p.add_argument("--width", type=_positive_int, default=8192, help="level-0 width in px")
    p.add_argument("--height", type=_positive_int, default=4096, help="level-0 height in px")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same bytes)")
    p.add_argument("--mpp", type=_positive_float, default=0.5, help="microns per level-0 pixel")
    p.add_argument("--objective", type=_positive_float, default=20.0, help="objective power")
    p.add_argument("--cores", type=_positive_int, default=None, help="number of biopsy cores")
    p.add_argument("--cancer", type=int, default=None, help="number of cancer regions (0: benign)")
    p.add_argument("--pen-marks", action="store_true", help="add marker-pen strokes on the glass")
    p.add_argument("--quality", type=int, default=90, help="JPEG quality of the tiles")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.set_defaults(handler=_cmd_synth)


def _cmd_synth(args: argparse.Namespace) -> int:
    from .synthetic import make_synthetic

    result = make_synthetic(
        args.out,
        name=args.name,
        width=args.width,
        height=args.height,
        seed=args.seed,
        mpp=args.mpp,
        objective_power=args.objective,
        n_cores=args.cores,
        n_cancer=args.cancer,
        pen_marks=args.pen_marks,
        jpeg_quality=args.quality,
        overwrite=args.overwrite,
    )
    for label in ("slide", "painted", "geojson", "mask", "meta"):
        print(f"{label + ':':9}{getattr(result, label)}")
    return 0


# -- dataset ----------------------------------------------------------------------------------
def _fraction_list(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers like 0.8,0.2, got {text!r}") from None
    return values


def _name_list(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def _add_dataset(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "dataset",
        help="label tables → training set: white cleaning, balance, split by slide, RecordIO",
        description="Build DIR with train/val[/test] .rec/.idx/.lst/.csv, dataset.json and "
        "summary.json from the label tables of many slides (tiles are read from the slides).",
    )
    p.add_argument(
        "tables", nargs="+", type=Path, help="label tables (.npz or .csv), one per slide"
    )
    p.add_argument("-o", "--out", type=Path, required=True, help="dataset folder to create")
    p.add_argument(
        "--balance",
        default="50:50",
        help="class ratio of the train split (class order; non-cancer:cancer for two classes): "
        "50:50 (default), 30:70, 70:30, any a:b, or all",
    )
    p.add_argument("--class-weights", action="store_true", help="write inverse-frequency weights")
    p.add_argument("--white-threshold", type=float, default=None, help="white tile above (0.5)")
    p.add_argument("--white-keep", type=float, default=0.02, help="share of white tiles kept")
    p.add_argument("--val-slides", type=_name_list, default=None, help="slides for val (a,b)")
    p.add_argument("--test-slides", type=_name_list, default=None, help="slides for test (a,b)")
    p.add_argument(
        "--fractions", type=_fraction_list, default=(0.8, 0.2), help="train,val[,test] shares"
    )
    p.add_argument("--folds", type=_positive_int, default=None, help="k-fold cross-validation")
    p.add_argument("--fold", type=int, default=None, help="fold used as val (0..K-1)")
    p.add_argument("--patients", type=Path, default=None, help="CSV with slide,patient columns")
    p.add_argument("--encoding", choices=("png", "jpeg"), default="png", help="record encoding")
    p.add_argument("--quality", type=int, default=95, help="JPEG quality (default 95)")
    p.add_argument("--png-compression", type=int, default=1, help="PNG zlib level 0-9 (1)")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same bytes)")
    p.add_argument("--threads", type=_positive_int, default=None, help="threads (default: all)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing DIR")
    p.add_argument("--json", action="store_true", help="print summary.json instead of the table")
    p.set_defaults(handler=_cmd_dataset)


def _cmd_dataset(args: argparse.Namespace) -> int:
    from .dataset import WHITE_THRESHOLD, build_dataset

    split = {}
    if args.val_slides:
        split["val"] = args.val_slides
    if args.test_slides:
        split["test"] = args.test_slides
    summary = build_dataset(
        args.tables,
        args.out,
        white_threshold=WHITE_THRESHOLD if args.white_threshold is None else args.white_threshold,
        white_keep=args.white_keep,
        balance=args.balance,
        class_weights=args.class_weights,
        split=split or None,
        fractions=args.fractions,
        folds=args.folds,
        fold=args.fold,
        patients=args.patients,
        encoding=args.encoding,
        quality=args.quality,
        png_compression=args.png_compression,
        seed=args.seed,
        n_threads=args.threads,
        overwrite=args.overwrite,
    )
    if args.json:
        print(json.dumps(summary.to_dict(), indent=2))
    else:
        print(summary.format())
    return 0


# -- label ------------------------------------------------------------------------------------
def _add_label(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "label",
        help="label tiles from a painted copy, polygons (GeoJSON/XML) or a label mask",
        description="Give every tissue tile of SLIDE a class from the pathologist's annotation "
        "and write a label table (.csv or .npz).",
    )
    p.add_argument("slide", type=Path, help="slide file (SVS, NDPI, TIFF, JPEG, ...)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--painted", type=Path, help="painted copy of the slide (level 0 or tiles)")
    src.add_argument("--geojson", type=Path, help="QuPath GeoJSON export")
    src.add_argument("--xml", type=Path, help="ASAP or Aperio ImageScope XML")
    src.add_argument("--mask", type=Path, help="label mask (PNG/TIFF of integer codes)")
    p.add_argument("-o", "--out", type=Path, required=True, help="label table (.csv or .npz)")
    scale = p.add_mutually_exclusive_group()
    scale.add_argument("--magnification", type=_positive_float, help="tile scale (default 20x)")
    scale.add_argument("--mpp", type=_positive_float, help="tile scale in µm per pixel")
    scale.add_argument("--level", type=int, help="read a pyramid level as it is")
    p.add_argument("--tile-size", type=_positive_int, default=128, help="tile side (128)")
    p.add_argument("--stride", type=_positive_int, default=None, help="tile stride (tile size)")
    p.add_argument("--all-tiles", action="store_true", help="every tile, not only tissue")
    p.add_argument("--min-coverage", type=float, default=0.05, help="class share (0.05)")
    p.add_argument("--rule", choices=("coverage", "centre"), default="coverage")
    p.add_argument(
        "--classes",
        default="cancer=0,255,0",
        help="positive classes with marker colours, most severe first "
        "(default 'cancer=0,255,0'; e.g. 'gleason5=255,0,0;gleason4=0,255,0')",
    )
    p.add_argument("--negative", default="benign", help="name of class 0 (benign)")
    p.add_argument("--order", default=None, help="severity order, e.g. 'gleason5,gleason4'")
    p.add_argument(
        "--class-alias",
        action="append",
        default=[],
        metavar="NAME=CLASS",
        help="map a polygon class name (or 'unclassified') to a class, or to 'ignore'",
    )
    p.add_argument("--mask-codes", default=None, help="e.g. '0=ignore,1=benign,2=cancer'")
    p.add_argument("--threshold", type=int, default=60, help="painted: channel difference (60)")
    p.add_argument("--colour-tol", type=int, default=64, help="painted: colour tolerance (64)")
    p.add_argument("--threads", type=_positive_int, default=None, help="threads (default: all)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.set_defaults(handler=_cmd_label)


def _cmd_label(args: argparse.Namespace) -> int:
    from .label import ClassMap, label_tiles
    from .slide import open_slide
    from .tile import build_grid, full_grid

    if args.out.suffix.lower() not in (".csv", ".npz"):
        raise ValueError(f"{args.out}: the label table must be .csv or .npz")
    if args.out.exists() and not args.overwrite:
        raise FileExistsError(f"{args.out}: already exists; pass --overwrite to replace it")
    cmap = ClassMap.parse(
        args.classes,
        negative=args.negative,
        order=args.order,
        aliases=";".join(args.class_alias),
        codes=args.mask_codes,
    )
    kinds = {"painted": "painted", "geojson": "polygons", "xml": "polygons", "mask": "mask"}
    flag = next(k for k in kinds if getattr(args, k) is not None)
    annotation, source = getattr(args, flag), kinds[flag]
    scale = {"magnification": args.magnification, "mpp": args.mpp, "level": args.level}
    if all(v is None for v in scale.values()):
        scale["magnification"] = 20.0
    with open_slide(args.slide, n_threads=args.threads) as slide:
        if args.all_tiles:
            grid = full_grid(slide, slide.choose_level(**scale), args.tile_size, args.stride)
        else:
            grid = build_grid(slide, tile_size=args.tile_size, stride=args.stride, **scale)
            if len(grid) == 0:
                raise _no_tissue(args.slide, grid.grid_shape[0] * grid.grid_shape[1])
        table = label_tiles(
            slide, annotation, grid, source=source, classes=cmap,
            min_coverage=args.min_coverage, rule=args.rule, threshold=args.threshold,
            colour_tol=args.colour_tol, n_threads=args.threads,
        )  # fmt: skip
    table.save(args.out, overwrite=args.overwrite)
    counts = ", ".join(f"{name} {n}" for name, n in table.counts().items())
    print(f"{len(table)} tiles of {slide.name}: {counts} -> {args.out}")
    return 0


# -- predict ----------------------------------------------------------------------------------
def _threshold_pair(text: str) -> tuple[str, float]:
    name, sep, value = text.partition("=")
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not sep or not name or not 0 <= number <= 1:
        raise argparse.ArgumentTypeError(f"expected CLASS=P with P in [0, 1], got {text!r}")
    return name, number


def _add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="per-tile class probabilities of a slide's tissue with a trained model",
        description="Tile the slide's tissue at the model's tile size and scale, run the model "
        "and write OUT.npz and OUT.csv (a score grid for `overlay`).",
    )
    p.add_argument("model", type=Path, help="model folder written by `train`")
    p.add_argument("slide", type=Path, help="slide file")
    p.add_argument("-o", "--out", type=Path, required=True,
                   help="output stem; OUT.npz and OUT.csv are written (a .npz/.csv suffix is "
                   "dropped)")  # fmt: skip
    p.add_argument("--engine", choices=("gluon", "native", "onnx"), default="gluon",
                   help="gluon (MXNet Gluon), native (C++ on MXNet's C predict API) or onnx "
                   "(ONNX Runtime; the route to current GPUs); default gluon")  # fmt: skip
    p.add_argument("--ctx", default="cpu", help="cpu (default) or gpu(N)")
    p.add_argument("--batch-size", type=_positive_int, default=64, help="tiles per batch (64)")
    p.add_argument("--threads", type=_positive_int, default=None,
                   help="CPU threads (default: every core)")  # fmt: skip
    scale = p.add_mutually_exclusive_group()
    scale.add_argument("--mpp", type=_positive_float, default=None,
                       help="microns per level-0 pixel of the slide (overrides the file; needed "
                       "when it records none)")  # fmt: skip
    scale.add_argument("--level", type=int, default=None,
                       help="read this pyramid level as it is instead of the model's scale")  # fmt: skip
    p.add_argument("--threshold", type=_threshold_pair, action="append", default=[],
                   metavar="CLASS=P", help="decision threshold of a class, e.g. cancer=0.3 "
                   "(default: model.json's); repeatable")  # fmt: skip
    p.add_argument("--progress", action="store_true", help="show progress on stderr")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.set_defaults(handler=_cmd_predict)


def _cmd_predict(args: argparse.Namespace) -> int:
    from .predict import predict_slide

    stem = args.out.with_suffix("") if args.out.suffix.lower() in (".npz", ".csv") else args.out
    outs = [stem.with_name(stem.name + ".npz"), stem.with_name(stem.name + ".csv")]
    if not args.overwrite:
        for out in outs:
            if out.exists():
                raise FileExistsError(f"{out}: already exists; pass --overwrite to replace it")
    grid = predict_slide(
        args.model,
        args.slide,
        engine=args.engine,
        ctx=args.ctx,
        batch_size=args.batch_size,
        n_threads=args.threads,
        mpp=args.mpp,
        level=args.level,
        thresholds=dict(args.threshold),
        progress=args.progress,
    )
    if len(grid) == 0:
        raise _no_tissue(args.slide, grid.grid_shape[0] * grid.grid_shape[1])
    _save_all([lambda out=out: grid.save(out, overwrite=args.overwrite) for out in outs], outs)
    t = grid.timings
    thr = ", ".join(f"{k} >= {v:g}" for k, v in grid.thresholds.items())
    print(f"slide:     {grid.slide_name} (level {grid.level}, {grid.downsample:g} level-0 px "
          f"per tile px, grid {grid.grid_shape[0]} x {grid.grid_shape[1]})")  # fmt: skip
    print(f"tiles:     {len(grid)} on tissue, {t['tiles_per_s']:.0f} tiles/s ({grid.engine}), "
          f"{t['total']:.1f} s in all")  # fmt: skip
    print(f"positive:  {grid.cancer_share():.1%} of tiles ({thr})")
    for out in outs:
        print(f"wrote:     {out}")
    return 0


# -- tiles ------------------------------------------------------------------------------------
def _region_ids(text: str) -> list[int]:
    try:
        ids = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected region ids like 1,2, got {text!r}") from None
    if not ids or min(ids) <= 0:
        raise argparse.ArgumentTypeError(f"expected positive region ids like 1,2, got {text!r}")
    return ids


def _share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}")
    return value


def _add_tiles(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tiles",
        help="find the tissue, tile it, and write the tile table and a thumbnail",
        description="Detect tissue at low resolution, keep the tiles of the grid that lie on it, "
        "measure each tile's white fraction, and write OUT (.csv or .npz: l0 x, y, level, "
        "tissue fraction, white fraction, region id) and OUT-thumb.png (mask outline in green, "
        "kept tiles in orange, region ids).",
    )
    p.add_argument("slide", type=Path, help="slide file (SVS, NDPI, TIFF, JPEG, ...)")
    p.add_argument("-o", "--out", type=Path, required=True, help="tile table (.csv or .npz)")
    scale = p.add_mutually_exclusive_group()
    scale.add_argument("--magnification", type=_positive_float, help="tile scale (default 20x)")
    scale.add_argument("--mpp", type=_positive_float, help="tile scale in µm per pixel")
    scale.add_argument("--level", type=int, help="read a pyramid level as it is")
    p.add_argument("--tile-size", type=_positive_int, default=128, help="tile side (128)")
    p.add_argument("--stride", type=_positive_int, default=None, help="tile stride (tile size)")
    p.add_argument("--min-tissue", type=_share, default=None, help="tissue share kept (0.25)")
    p.add_argument("--regions", type=_region_ids, default=None, help="region ids kept, e.g. 1,2")
    p.add_argument("--threshold-method", choices=("otsu", "fixed"), default="otsu")
    p.add_argument("--threshold", type=float, default=None, help="with fixed: chroma cut (20)")
    p.add_argument("--threads", type=_positive_int, default=None, help="threads (default: all)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.set_defaults(handler=_cmd_tiles)


def _cmd_tiles(args: argparse.Namespace) -> int:
    import time
    import warnings

    import cv2

    from ._util import atomic_path
    from .slide import open_slide
    from .tile import (
        MIN_TISSUE,
        build_grid,
        full_grid,
        render_grid_thumbnail,
        save_tile_table,
        tile_white_fraction,
    )
    from .tissue import detect_tissue

    if args.out.suffix.lower() not in (".csv", ".npz"):
        raise ValueError(f"{args.out}: the tile table must be .csv or .npz")
    thumb_path = args.out.with_name(args.out.stem + "-thumb.png")
    for path in (args.out, thumb_path):
        if path.exists() and not args.overwrite:
            raise FileExistsError(f"{path}: already exists; pass --overwrite to replace it")
    scale = {"magnification": args.magnification, "mpp": args.mpp, "level": args.level}
    if all(v is None for v in scale.values()):
        scale["magnification"] = 20.0
    min_tissue = MIN_TISSUE if args.min_tissue is None else args.min_tissue
    t0 = time.perf_counter()
    with open_slide(args.slide, n_threads=args.threads) as slide:
        slide.choose_level(**scale)  # fails fast on a slide without a recorded scale
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            method, threshold = args.threshold_method, args.threshold
            tissue = detect_tissue(
                slide, method=method, threshold=threshold, n_threads=args.threads
            )
        for w in caught:
            print(f"prostate-fast: warning: {w.message}", file=sys.stderr)
        t1 = time.perf_counter()
        grid = build_grid(
            slide, tissue, tile_size=args.tile_size, stride=args.stride,
            min_tissue=min_tissue, regions=args.regions, **scale,
        )  # fmt: skip
        t2 = time.perf_counter()
        n_full = len(full_grid(slide, grid.choice, grid.tile_size, grid.stride))
        if len(grid) == 0:
            raise _no_tissue(args.slide, n_full, min_tissue)
        white = tile_white_fraction(slide, grid, n_threads=args.threads)
        t3 = time.perf_counter()
        thumb = render_grid_thumbnail(slide, grid, tissue)
    ok, png = cv2.imencode(".png", cv2.cvtColor(thumb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError(f"{thumb_path}: cannot encode the thumbnail")

    def write_thumb() -> None:
        with atomic_path(thumb_path, overwrite=args.overwrite) as tmp:
            tmp.write_bytes(png.tobytes())

    _save_all(
        [lambda: save_tile_table(grid, white, args.out, overwrite=args.overwrite), write_thumb],
        [args.out, thumb_path],
    )
    c = grid.choice
    mag = f"{c.magnification:g}x, " if c.magnification else ""
    print(f"slide:     {slide.name} ({slide.dimensions[0]} x {slide.dimensions[1]} px)")
    print(
        f"tissue:    {tissue.fraction:.1%} of the slide, {tissue.background} field, "
        f"{tissue.method} threshold {tissue.threshold:g}, mask 1/{tissue.downsample:g}"
    )
    for r in tissue.regions:
        area = f", {r.area_um2 / 1e6:.2f} mm²" if r.area_um2 is not None else ""
        print(f"  region {r.id}: level-0 box {r.bbox_l0}{area}")
    print(
        f"tiles:     {len(grid)} kept of {n_full} ({grid.tile_size} px, {mag}level {c.level}, "
        f"downsample {c.downsample:g}, tissue share >= {min_tissue:g})"
    )
    if len(grid):
        print(f"white:     mean {white.mean():.3f}, {int((white >= 0.5).sum())} tiles >= 0.5")
    times = f"mask {t1 - t0:.2f}, grid {t2 - t1:.2f}, white fraction {t3 - t2:.2f}"
    print(f"time:      {t3 - t0:.2f} s ({times})")
    print(f"table:     {args.out}")
    print(f"thumbnail: {thumb_path}")
    return 0


# -- demo -------------------------------------------------------------------------------------
def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the pipeline on a freshly generated synthetic slide")
    p.add_argument("-o", "--out", type=Path, default=Path("demo-out"), help="output folder")
    p.add_argument("--seed", type=int, default=2018, help="seed of the synthetic slide")
    p.set_defaults(handler=_cmd_demo)


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    result = run_demo(args.out, seed=args.seed)
    print(f"demo outputs in {result.out_dir}/")
    return 0


# -- overlay ----------------------------------------------------------------------------------
def _colour_pair(text: str) -> tuple[str, tuple[int, int, int]]:
    from .overlay import parse_colour

    try:
        return parse_colour(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_overlay_look(p: argparse.ArgumentParser) -> None:
    p.add_argument("--alpha", type=float, default=0.4,
                   help="opacity of the class colour in [0, 1] (default 0.4)")  # fmt: skip
    p.add_argument("--mode", choices=("class", "graded"), default="class",
                   help="class: tint predicted tiles; graded: opacity = alpha x probability")  # fmt: skip
    p.add_argument("--outline", type=int, default=0,
                   help="border width in px drawn on predicted tiles (default 0: none)")  # fmt: skip
    p.add_argument("--colour", type=_colour_pair, action="append", default=[],
                   metavar="CLASS=R,G,B", help="colour of a class, e.g. cancer=0,255,0 "
                   "(default: the model's, else green); repeatable")  # fmt: skip
    p.add_argument("--quality", type=int, default=90, help="JPEG quality of the TIFF (90)")


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
    p.add_argument("--geojson", type=Path, default=None,
                   help="also export the predicted tiles as QuPath GeoJSON")  # fmt: skip
    p.add_argument("--no-thumbnail", action="store_true", help="do not write OUT-thumb.png")
    p.add_argument("--threads", type=_positive_int, default=None,
                   help="CPU threads (default: every core)")  # fmt: skip
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.set_defaults(handler=_cmd_overlay)


def _cmd_overlay(args: argparse.Namespace) -> int:
    from .overlay import write_overlay

    res = write_overlay(
        args.slide, args.scores, args.out, alpha=args.alpha, mode=args.mode, outline=args.outline,
        colours=dict(args.colour), quality=args.quality, thumbnail=not args.no_thumbnail,
        geojson=args.geojson, overwrite=args.overwrite, n_threads=args.threads,
    )  # fmt: skip
    (w, h), n = res.level_dimensions[0], len(res.level_dimensions)
    mpp = f", {res.mpp:.4g} um/px" if res.mpp else ""
    print(f"overlay:   {res.path} ({w} x {h} px{mpp}, {n} levels, {res.seconds:.1f} s)")
    print(f"positive:  {res.n_positive} tiles")
    for label, path in (("thumbnail", res.thumbnail), ("geojson", res.geojson)):
        if path is not None:
            print(f"{label + ':':11}{path}")
    return 0


# -- screen -----------------------------------------------------------------------------------
def _add_screen(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "screen",
        help="predict many slides and write a worklist ranked by cancer score, with overlays",
        description="For every slide: predict, write OUT_DIR/<stem>/ (overlay TIFF, thumbnail, "
        "GeoJSON, scores) and a cancer score; then the worklist CSV ranked by priority (slides "
        "that failed first, then those without tissue, then by positive tiles, top probability). "
        "Exit status 2 when a slide failed or has no tissue (its row says why; the others are "
        "still screened).",
    )
    p.add_argument("model", type=Path, help="model folder written by `train`")
    p.add_argument("slides", type=Path, nargs="+", help="slide files")
    p.add_argument("-o", "--out", type=Path, required=True, help="worklist CSV to write")
    p.add_argument("--out-dir", type=Path, default=None,
                   help="folder of the per-slide outputs (default: the worklist's folder)")  # fmt: skip
    p.add_argument("--engine", choices=("gluon", "native", "onnx"), default="gluon",
                   help="inference engine (see `predict`; default gluon)")  # fmt: skip
    p.add_argument("--ctx", default="cpu", help="cpu (default) or gpu(N)")
    p.add_argument("--batch-size", type=_positive_int, default=64, help="tiles per batch (64)")
    p.add_argument("--mpp", type=_positive_float, default=None,
                   help="microns per level-0 pixel of the slides (overrides the files)")  # fmt: skip
    p.add_argument("--threshold", type=_threshold_pair, action="append", default=[],
                   metavar="CLASS=P", help="decision threshold of a class (default: the "
                   "model's); repeatable")  # fmt: skip
    _add_overlay_look(p)
    p.add_argument("--threads", type=_positive_int, default=None,
                   help="CPU threads (default: every core)")  # fmt: skip
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.set_defaults(handler=_cmd_screen)


def _cmd_screen(args: argparse.Namespace) -> int:
    from .screen import WorklistRow, screen_slides

    def report(r: WorklistRow) -> None:
        if r.ok:
            print(f"screened:  {r.slide}: {r.n_positive} of {r.n_tiles} tiles positive, "
                  f"top p {r.top_probability:.3f} ({r.seconds:.1f} s)")  # fmt: skip
        else:
            print(f"prostate-fast: {r.slide}: {r.status}", file=sys.stderr)

    out_dir = args.out_dir if args.out_dir is not None else args.out.parent
    rows = screen_slides(
        args.model, args.slides, out_dir, worklist=args.out, engine=args.engine, ctx=args.ctx,
        batch_size=args.batch_size, thresholds=dict(args.threshold), mpp=args.mpp,
        overlay_options={"alpha": args.alpha, "mode": args.mode, "outline": args.outline,
                         "colours": dict(args.colour), "quality": args.quality},
        overwrite=args.overwrite, n_threads=args.threads, progress=report,
    )  # fmt: skip
    failed = sum(r.status.startswith("error") for r in rows)
    empty = sum(not r.ok for r in rows) - failed
    print(f"worklist:  {args.out} ({len(rows)} slides, {failed} failed, {empty} without tissue)")
    return 2 if failed or empty else 0


# -- train ------------------------------------------------------------------------------------
def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers like 30,60, got {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers like 30,60, got {text!r}")
    return values


def _class_weights_arg(text: str) -> str | list[float]:
    if text == "dataset":
        return text
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'dataset' or numbers, got {text!r}") from None
    if any(not v > 0 for v in values):
        raise argparse.ArgumentTypeError(f"class weights must be positive, got {text!r}")
    return values


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train the study's CNN (or another network) on a dataset and export the model",
        description="Train on DATASET_DIR's train split with MXNet (defaults: the 2018 study's "
        "CNN, SGD lr 0.001, momentum 0.8, batch 32, 100 epochs), keep the best epoch on the "
        "val split and export MODEL_DIR (model-symbol.json, model-NNNN.params, model.json, "
        "log.csv, train.log, accuracy.png, checkpoints/).",
    )
    p.add_argument("dataset", type=Path, help="dataset folder written by `dataset`")
    p.add_argument("-o", "--out", type=Path, required=True, help="model folder to create")
    p.add_argument("--network", default="study", choices=("study", "resnet10", "resnet18"),
                   help="architecture (default: the study's CNN)")  # fmt: skip
    p.add_argument("--conv-filters", type=_int_list, default=None, metavar="N,N",
                   help="filters of the study CNN's convolutions (default 32,64)")  # fmt: skip
    p.add_argument("--dense-units", type=_int_list, default=None, metavar="N,N,N",
                   help="units of the study CNN's sigmoid dense layers (default 256,128,64)")  # fmt: skip
    p.add_argument("--epochs", type=_positive_int, default=100, help="epochs (100)")
    p.add_argument("--batch-size", type=_positive_int, default=32, help="batch size (32)")
    p.add_argument("--lr", type=_positive_float, default=0.001, help="SGD learning rate (0.001)")
    p.add_argument("--momentum", type=float, default=0.8, help="SGD momentum (0.8)")
    p.add_argument("--wd", type=float, default=0.0, help="weight decay (0)")
    p.add_argument("--lr-steps", type=_int_list, default=None, metavar="E,E",
                   help="epochs at whose start the learning rate is multiplied by --lr-factor")  # fmt: skip
    p.add_argument("--lr-factor", type=_positive_float, default=0.1, help="(default 0.1)")
    p.add_argument("--class-weights", type=_class_weights_arg, default=None,
                   metavar="dataset|W,W", help="loss weight per class: 'dataset' or numbers")  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="random seed (0)")
    p.add_argument("--ctx", default="cpu", help="cpu (default), gpu(0) or gpu(0),gpu(1)")
    p.add_argument("--kvstore", default="local",
                   choices=("local", "device", "dist_sync", "dist_device_sync", "dist_async"),
                   help="gluon.Trainer kvstore (default local)")  # fmt: skip
    p.add_argument("--select", default="sensitivity@specificity>=0.5",
                   help="validation metric that picks the exported epoch: "
                   "sensitivity@specificity>=F (default F=0.5), accuracy, auc or loss")  # fmt: skip
    p.add_argument("--target-sensitivity", type=_positive_float, default=0.99,
                   help="the stored threshold reaches this sensitivity on val (0.99)")  # fmt: skip
    p.add_argument("--augment", action="store_true", help="random mirror and 90-degree turns")
    p.add_argument("--threads", type=_positive_int, default=None, help="CPU threads (all)")
    p.add_argument("--log-interval", type=_positive_int, default=50,
                   help="batches between Speed lines (50)")  # fmt: skip
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.add_argument("--quiet", action="store_true", help="no log lines on stdout")
    resume = p.add_mutually_exclusive_group()
    resume.add_argument("--resume", action="store_true",
                        help="continue an interrupted (OUT.partial) or finished model")  # fmt: skip
    resume.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    p.set_defaults(handler=_cmd_train)


def _cmd_train(args: argparse.Namespace) -> int:
    from .networks import StudyConfig
    from .train import train

    study = StudyConfig(
        **({"conv_filters": tuple(args.conv_filters)} if args.conv_filters else {}),
        **({"dense_units": tuple(args.dense_units)} if args.dense_units else {}),
    )
    result = train(
        args.dataset,
        args.out,
        network=args.network,
        study=study,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        momentum=args.momentum,
        wd=args.wd,
        lr_steps=args.lr_steps,
        lr_factor=args.lr_factor,
        class_weights=args.class_weights,
        seed=args.seed,
        ctx=args.ctx,
        kvstore=args.kvstore,
        resume=args.resume,
        select=args.select,
        target_sensitivity=args.target_sensitivity,
        augment=args.augment,
        n_threads=args.threads,
        progress=not args.no_progress and sys.stderr.isatty(),
        log_interval=args.log_interval,
        overwrite=args.overwrite,
        log=(lambda line: None) if args.quiet else print,
    )
    b = result.best
    print(f"model:     {result.model_dir} (epoch {result.best_epoch} by {result.select})")
    print(f"val:       accuracy {b['val_accuracy']:.4f}, sensitivity {b['val_sensitivity']:.4f}, "
          f"specificity {b['val_specificity']:.4f}, AUC {b['val_auc']:.4f}")  # fmt: skip
    print(f"threshold: {result.threshold:.4g} ({len(result.history)} epochs, "
          f"{result.seconds:.1f} s)")  # fmt: skip
    return 0


# -- evaluate ---------------------------------------------------------------------------------
def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="evaluate a model as a screening test on a dataset split",
        description="Run MODEL_DIR on DATASET_DIR's split; print the study's confusion matrices "
        "(pooled and per slide) with accuracy, sensitivity, specificity, PPV, NPV and ROC AUC; "
        "write report.json, report.txt, slides.csv, predictions.csv, roc.png, confusion.png.",
    )
    p.add_argument("model", type=Path, help="model folder written by `train`")
    p.add_argument("dataset", type=Path, help="dataset folder written by `dataset`")
    p.add_argument("--split", default="val", help="split to evaluate: val (default) or test")
    p.add_argument("-o", "--out", type=Path, default=None,
                   help="report folder (default MODEL_DIR/evaluation-SPLIT)")  # fmt: skip
    p.add_argument("--threshold", type=float, default=None,
                   help="decision threshold (default: reach --target-sensitivity on val)")  # fmt: skip
    p.add_argument("--target-sensitivity", type=_positive_float, default=0.99,
                   help="sensitivity the threshold reaches on the val split (0.99)")  # fmt: skip
    p.add_argument("--write-threshold", action="store_true",
                   help="store the threshold in model.json (read by predict)")  # fmt: skip
    p.add_argument("--ctx", default="cpu", help="cpu (default) or gpu(N)")
    p.add_argument("--batch-size", type=_positive_int, default=64, help="tiles per batch (64)")
    p.add_argument("--threads", type=_positive_int, default=None, help="CPU threads (all)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing report folder")
    p.set_defaults(handler=_cmd_evaluate)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluate import evaluate_model

    ev = evaluate_model(
        args.model,
        args.dataset,
        args.split,
        out_dir=args.out,
        threshold=args.threshold,
        target_sensitivity=args.target_sensitivity,
        ctx=args.ctx,
        batch_size=args.batch_size,
        n_threads=args.threads,
        write_threshold=args.write_threshold,
        overwrite=args.overwrite,
    )
    print(ev.report())
    out = args.out or args.model / f"evaluation-{args.split}"
    print(f"wrote:     {out}")
    return 0


# -- check ------------------------------------------------------------------------------------
def _add_check(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "check",
        help="framework sanity check: the study's MLP on MNIST or the 8x8 digits; MXNet build",
        description="Train the study's MLP (784-128-64-10, relu, SGD lr 0.05 decayed every 10 "
        "epochs, batch 64, 20 epochs) on MNIST IDX files in MNIST_DIR, or on scikit-learn's "
        "8x8 digits; print accuracy, samples/s, MXNet's version, build features and GPUs.",
    )
    p.add_argument("mnist", type=Path, nargs="?", default=None,
                   help="folder of MNIST IDX files (default: scikit-learn's digits)")  # fmt: skip
    p.add_argument("--epochs", type=_positive_int, default=20, help="epochs (20)")
    p.add_argument("--seed", type=int, default=0, help="random seed (0)")
    p.add_argument("--ctx", default="cpu", help="cpu (default) or gpu(N)")
    p.add_argument("--threads", type=_positive_int, default=None, help="CPU threads (all)")
    p.set_defaults(handler=_cmd_check)


def _cmd_check(args: argparse.Namespace) -> int:
    from .check import run_check

    result = run_check(
        args.mnist, epochs=args.epochs, seed=args.seed, ctx=args.ctx, n_threads=args.threads
    )
    print(result.report())
    return 0


# -- batch ------------------------------------------------------------------------------------
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
    p.add_argument("slides", type=Path,
                   help="folder of slides (.svs .ndpi .tif .tiff .mrxs .scn .bif .vms .jpg .png), "
                   "a text file with one slide path per line (# comments), or one slide")  # fmt: skip
    p.add_argument("--model", type=Path, required=True, help="model folder written by `train`")
    p.add_argument("-o", "--out", type=Path, required=True, help="output folder")
    p.add_argument("--workers", type=int, default=1,
                   help="worker processes (default 1; 0 runs in this process); with "
                   "--scheduler local, the LocalCluster's workers")  # fmt: skip
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="run on Dask: tcp://HOST:PORT of a running scheduler, local[:N] for a "
                   "LocalCluster on 127.0.0.1, or slurm:JOBS for a dask-jobqueue SLURMCluster "
                   "(configured by the dask config's jobqueue.slurm)")  # fmt: skip
    p.add_argument("--engine", choices=("gluon", "native", "onnx"), default="gluon",
                   help="inference engine (see `predict`; default gluon)")  # fmt: skip
    p.add_argument("--ctx", default="cpu", help="cpu (default) or gpu(N)")
    p.add_argument("--batch-size", type=_positive_int, default=64, help="tiles per batch (64)")
    p.add_argument("--mpp", type=_positive_float, default=None,
                   help="microns per level-0 pixel of the slides (overrides the files)")  # fmt: skip
    p.add_argument("--threshold", type=_threshold_pair, action="append", default=[],
                   metavar="CLASS=P", help="decision threshold of a class (default: the "
                   "model's); repeatable")  # fmt: skip
    _add_overlay_look(p)
    p.add_argument("--threads", type=_positive_int, default=None,
                   help="CPU threads per slide (default: cores / workers; Dask: the worker's "
                   "OMP_NUM_THREADS)")  # fmt: skip
    p.add_argument("--force", action="store_true", help="redo every slide, even complete ones")
    p.add_argument("--verify", action="store_true",
                   help="hash slides and outputs before skipping (default: trust unchanged "
                   "size and mtime)")  # fmt: skip
    p.add_argument("--no-progress", action="store_true", help="no progress on stderr")
    p.set_defaults(handler=_cmd_batch)


def _cmd_batch(args: argparse.Namespace) -> int:
    from .batch import run_batch

    if args.workers < 0:
        raise ValueError(f"--workers must be 0 or more, got {args.workers}")
    res = run_batch(
        args.slides, args.model, args.out, workers=args.workers, scheduler=args.scheduler,
        engine=args.engine, ctx=args.ctx, batch_size=args.batch_size,
        thresholds=dict(args.threshold), mpp=args.mpp,
        overlay_options={"alpha": args.alpha, "mode": args.mode, "outline": args.outline,
                         "colours": dict(args.colour), "quality": args.quality},
        n_threads=args.threads, force=args.force, verify=args.verify,
        progress=not args.no_progress,
    )  # fmt: skip
    for r in res.failed:
        print(f"prostate-fast: {r.slide}: error: {r.reason}", file=sys.stderr)
    c = res.counts
    print(f"slides:    {len(res.results)}: {c['done']} done, {c['skipped']} skipped, "
          f"{c['error']} failed ({res.seconds:.1f} s)")  # fmt: skip
    print(f"worklist:  {res.worklist}")
    print(f"summary:   {res.summary}")
    return 3 if c["error"] else 0


# -- launch -----------------------------------------------------------------------------------
def _add_launch(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "launch",
        help="run `train --kvstore dist_sync` here: a scheduler, servers and workers on 127.0.0.1",
        description="Start MXNet's parameter-server roles on this machine (127.0.0.1 only) and "
        "run TRAIN_ARGS in every worker with --kvstore dist_sync; rank 0 writes the model folder, "
        "rank k MODEL.rankk. For several machines set the DMLC_* variables yourself (README). "
        "Example: prostate-fast launch --workers 2 -- train DATASET -o MODEL --epochs 10",
    )
    p.add_argument("--workers", type=_positive_int, default=2, help="worker processes (2)")
    p.add_argument("--servers", type=_positive_int, default=1, help="server processes (1)")
    p.add_argument("--port", type=_positive_int, default=None,
                   help="scheduler port on 127.0.0.1 (default: a free one)")  # fmt: skip
    p.add_argument("--timeout", type=_positive_float, default=24 * 3600.0,
                   help="seconds before every process is stopped (one day)")  # fmt: skip
    p.add_argument("--log-dir", type=Path, default=None,
                   help="folder of scheduler.log, server-N.log, worker-N.log (default: temporary)")  # fmt: skip
    p.add_argument("train_args", nargs=argparse.REMAINDER, metavar="-- train DATASET -o MODEL ...",
                   help="the `train` command line of every worker")  # fmt: skip
    p.set_defaults(handler=_cmd_launch)


def _cmd_launch(args: argparse.Namespace) -> int:
    from .distributed import launch_local

    train_args = args.train_args[1:] if args.train_args[:1] == ["--"] else args.train_args
    if not train_args or train_args[0] != "train":
        raise ValueError("launch needs a train command line after --, e.g. "
                         "`launch --workers 2 -- train DATASET -o MODEL`")  # fmt: skip
    codes = launch_local(train_args, n_workers=args.workers, n_servers=args.servers,
                         port=args.port, timeout=args.timeout, log_dir=args.log_dir)  # fmt: skip
    failed = [c for c in codes if c != 0]  # a worker's own status, else 1 (stopped by a signal)
    return 0 if not failed else failed[0] if failed[0] > 0 else 1


# -- registry: one entry per subcommand, in the order of the pipeline --------------------------
_SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_demo,
    _add_info,
    _add_synth,
    _add_tiles,
    _add_label,
    _add_dataset,
    _add_train,
    _add_launch,
    _add_predict,
    _add_evaluate,
    _add_overlay,
    _add_screen,
    _add_batch,
    _add_check,
]


def build_parser() -> argparse.ArgumentParser:
    """The ``prostate-fast`` argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="prostate-fast",
        description="Prostate biopsy whole-slide screening: slide → tiles → labels → dataset → "
        "model → prediction → overlay.",
    )
    parser.add_argument("--version", action="version", version=f"prostate-fast {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in _SUBCOMMANDS:
        add(sub)
    return parser


def _one_line(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, OSError) and exc.filename:
        text = f"{exc.filename}: {exc.strerror or text}"
    return " ".join(text.split())


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit status (0 success, 2 bad input, 1 unexpected failure)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except (ProstateFastError, FileExistsError, OSError, ValueError) as exc:
        print(f"prostate-fast: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("prostate-fast: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
