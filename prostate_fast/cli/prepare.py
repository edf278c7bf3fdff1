"""CLI subcommands that prepare data: info, synth, tiles, label, dataset.

Each ``_cmd_*`` turns arguments into a call of the stage's public function; no stage logic here.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .common import (
    _add_tile_grid,
    _fraction_list,
    _name_list,
    _no_tissue,
    _positive_float,
    _positive_int,
    _print_warnings,
    _recorded_warnings,
    _region_ids,
    _save_all,
    _share,
)

if TYPE_CHECKING:
    from ..tile import TiledSlide


def _add_info(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="describe a slide: format, levels, mpp, objective, images")
    p.add_argument("slide", type=Path, help="slide file (SVS, NDPI, TIFF, JPEG, ...)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(handler=_cmd_info)


def _cmd_info(args: argparse.Namespace) -> int:
    from ..slide import open_slide

    with open_slide(args.slide) as slide:
        facts = slide.describe()
    if args.json:
        print(json.dumps(facts, indent=2))
        return 0
    mpp = facts["mpp"]
    print(f"file:       {facts['path']}")
    print(f"format:     {facts['format']}")
    print(f"dimensions: {facts['dimensions'][0]} x {facts['dimensions'][1]} px (level 0)")
    src = f" ({facts['mpp_source']})" if facts.get("mpp_source") else ""
    print(f"mpp:        {f'{mpp[0]:.4f} x {mpp[1]:.4f} um/px{src}' if mpp else 'not recorded'}")
    obj = facts["objective_power"]
    print(f"objective:  {f'{obj:g}x' if obj else 'not recorded'}")
    print(f"levels:     {facts['level_count']}")
    for i, ((w, h), ds) in enumerate(
        zip(facts["level_dimensions"], facts["level_downsamples"], strict=True)
    ):
        print(f"  level {i}: {w} x {h} px, downsample {ds:g}")
    assoc = facts["associated_images"]
    print(f"associated: {', '.join(assoc) if assoc else 'none'}")
    for note in facts["notes"]:
        print(f"note:       {note}")
    return 0


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
    p.add_argument(
        "--lab",
        default=None,
        metavar="NAME",
        help="the lab whose stains, glass, blur, JPEG quality and scanner colour the slide has: "
        "any name gives the same lab every time (default: the standard look)",
    )
    p.add_argument(
        "--quality",
        type=int,
        default=None,
        help="JPEG quality of the tiles (default: the lab's, 90)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.set_defaults(handler=_cmd_synth)


def _cmd_synth(args: argparse.Namespace) -> int:
    from ..synthetic import make_synthetic

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
        lab=args.lab,
        jpeg_quality=args.quality,
        overwrite=args.overwrite,
    )
    for label in ("slide", "painted", "geojson", "mask", "meta"):
        print(f"{label + ':':9}{getattr(result, label)}")
    return 0


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
    _add_tile_grid(p)
    p.add_argument("--min-tissue", type=_share, default=None, help="tissue share kept (0.25)")
    p.add_argument("--regions", type=_region_ids, default=None, help="region ids kept, e.g. 1,2")
    p.add_argument("--threshold-method", choices=("otsu", "fixed"), default="otsu")
    p.add_argument("--threshold", type=float, default=None, help="with fixed: chroma cut (20)")
    p.add_argument("--threads", type=_positive_int, default=None, help="threads (default: all)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.set_defaults(handler=_cmd_tiles)


def _tile_scale(args: argparse.Namespace) -> dict[str, float | int | None]:
    """The tile grid's scale of `tiles` and `label`: --magnification, --tile-mpp or --level."""
    scale = {"magnification": args.magnification, "mpp": args.tile_mpp, "level": args.level}
    if all(v is None for v in scale.values()):
        scale["magnification"] = 20.0
    return scale


def _cmd_tiles(args: argparse.Namespace) -> int:
    import warnings

    import cv2

    from .._outputs import mark_png
    from .._util import atomic_path
    from ..tile import MIN_TISSUE, save_tile_table

    if args.out.suffix.lower() not in (".csv", ".npz"):
        raise ValueError(f"{args.out}: the tile table must be .csv or .npz")
    thumb_path = args.out.with_name(args.out.stem + "-thumb.png")
    for path in (args.out, thumb_path):
        if path.exists() and not args.overwrite:
            raise FileExistsError(f"{path}: already exists; pass --overwrite to replace it")
    scale = _tile_scale(args)
    min_tissue = MIN_TISSUE if args.min_tissue is None else args.min_tissue
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            tiled = _tile(args, scale, min_tissue)
        finally:  # the tissue detection's warnings, also when a later step fails
            for w in caught:
                print(f"prostate-fast: warning: {w.message}", file=sys.stderr)
    grid, white = tiled.grid, tiled.white_fraction
    if len(grid) == 0:
        raise _no_tissue(args.slide, tiled.n_full, min_tissue)
    ok, png = cv2.imencode(".png", cv2.cvtColor(tiled.thumbnail, cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError(f"{thumb_path}: cannot encode the thumbnail")

    def write_thumb() -> None:
        with atomic_path(thumb_path, overwrite=args.overwrite) as tmp:
            tmp.write_bytes(mark_png(png.tobytes()))

    _save_all(
        [lambda: save_tile_table(grid, white, args.out, overwrite=args.overwrite), write_thumb],
        [args.out, thumb_path],
    )
    _print_tiles(args, tiled, thumb_path)
    return 0


def _tile(args: argparse.Namespace, scale: dict[str, Any], min_tissue: float) -> TiledSlide:
    """`tiles`' tile_slide call (on the slide with --slide-mpp's scale when given)."""
    from ..slide import open_slide
    from ..tile import tile_slide

    kw = {"tile_size": args.tile_size, "stride": args.stride, "min_tissue": min_tissue}
    kw |= {"regions": args.regions, "method": args.threshold_method, "threshold": args.threshold}
    if args.slide_mpp is None:
        return tile_slide(args.slide, **scale, **kw, n_threads=args.threads)
    with open_slide(args.slide, n_threads=args.threads) as sl:
        return tile_slide(sl.with_mpp(args.slide_mpp), **scale, **kw, n_threads=args.threads)


def _print_tiles(args: argparse.Namespace, tiled: TiledSlide, thumb_path: Path) -> None:
    """The ``tiles`` command's report on stdout."""
    grid, tissue, white = tiled.grid, tiled.tissue, tiled.white_fraction
    c = grid.choice
    mag = f"{c.magnification:g}x, " if c.magnification else ""
    print(f"slide:     {tiled.slide_name} ({tiled.dimensions[0]} x {tiled.dimensions[1]} px)")
    print(
        f"tissue:    {tissue.fraction:.1%} of the slide, {tissue.background} field, "
        f"{tissue.method} threshold {tissue.threshold:g}, mask 1/{tissue.downsample:g}"
    )
    for r in tissue.regions:
        area = f", {r.area_um2 / 1e6:.2f} mm²" if r.area_um2 is not None else ""
        print(f"  region {r.id}: level-0 box {r.bbox_l0}{area}")
    print(
        f"tiles:     {len(grid)} kept of {tiled.n_full} ({grid.tile_size} px, {mag}level "
        f"{c.level}, downsample {c.downsample:g}, tissue share >= {tiled.min_tissue:g})"
    )
    if len(grid):
        print(f"white:     mean {white.mean():.3f}, {int((white >= 0.5).sum())} tiles >= 0.5")
    sec = tiled.seconds
    total = sum(sec.values())
    times = f"mask {sec['mask']:.2f}, grid {sec['grid']:.2f}, white fraction {sec['white_fraction']:.2f}"
    print(f"time:      {total:.2f} s ({times})")
    print(f"table:     {args.out}")
    print(f"thumbnail: {thumb_path}")


def _add_label(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "label",
        help="label tiles from a painted copy, polygons (GeoJSON/XML) or a label mask",
        description="Give every tissue tile of SLIDE a class from the pathologist's annotation "
        "and write a label table (.csv or .npz).",
    )
    p.add_argument("slide", type=Path, nargs="?", help="slide file (SVS, NDPI, TIFF, JPEG, ...)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--painted", type=Path, help="painted copy of the slide (level 0 or tiles)")
    src.add_argument("--geojson", type=Path, help="QuPath GeoJSON export")
    src.add_argument("--xml", type=Path, help="ASAP or Aperio ImageScope XML")
    src.add_argument("--mask", type=Path, help="label mask (PNG/TIFF of integer codes)")
    src.add_argument(
        "--list-classes",
        type=Path,
        metavar="FILE",
        help="list the classes (layers) of a GeoJSON/XML annotation file and what they map to",
    )
    p.add_argument("-o", "--out", type=Path, help="label table (.csv or .npz)")
    _add_tile_grid(p)
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
    codes = p.add_mutually_exclusive_group()
    codes.add_argument("--mask-codes", default=None, help="e.g. '0=ignore,1=benign,2=cancer'")
    codes.add_argument(
        "--mask-scheme",
        choices=("prostate-fast", "panda-radboud", "panda-karolinska"),
        default=None,
        help="preset mask codes: prostate-fast (default: 0 nothing, 1 benign, 2 cancer), "
        "panda-radboud (1-2 benign, 3-5 Gleason 3-5), panda-karolinska (1 benign, 2 cancer)",
    )
    p.add_argument("--threshold", type=int, default=60, help="painted: channel difference (60)")
    p.add_argument("--colour-tol", type=int, default=64, help="painted: colour tolerance (64)")
    p.add_argument("--threads", type=_positive_int, default=None, help="threads (default: all)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.set_defaults(handler=_cmd_label)


def _cmd_label(args: argparse.Namespace) -> int:

    from ..label import ClassMap, label_tiles
    from ..slide import open_slide
    from ..tile import build_grid, full_grid

    cmap = ClassMap.parse(
        args.classes,
        negative=args.negative,
        order=args.order,
        aliases=";".join(args.class_alias),
        codes=args.mask_codes,
        scheme=args.mask_scheme,
    )
    if args.list_classes is not None:
        return _list_classes(args.list_classes, cmap)
    if args.slide is None or args.out is None:
        raise ValueError("label needs SLIDE and -o OUT (or --list-classes FILE)")
    if not any(getattr(args, k) is not None for k in ("painted", "geojson", "xml", "mask")):
        raise ValueError("label needs one of --painted, --geojson, --xml, --mask")
    if args.out.suffix.lower() not in (".csv", ".npz"):
        raise ValueError(f"{args.out}: the label table must be .csv or .npz")
    if args.out.exists() and not args.overwrite:
        raise FileExistsError(f"{args.out}: already exists; pass --overwrite to replace it")
    kinds = {"painted": "painted", "geojson": "polygons", "xml": "polygons", "mask": "mask"}
    flag = next(k for k in kinds if getattr(args, k) is not None)
    annotation, source = getattr(args, flag), kinds[flag]
    scale = _tile_scale(args)
    with open_slide(args.slide, n_threads=args.threads) as opened:
        slide = opened if args.slide_mpp is None else opened.with_mpp(args.slide_mpp)
        if args.all_tiles:
            grid = full_grid(slide, slide.choose_level(**scale), args.tile_size, args.stride)
        else:
            grid = build_grid(slide, tile_size=args.tile_size, stride=args.stride, **scale)
            if len(grid) == 0:
                raise _no_tissue(args.slide, grid.grid_shape[0] * grid.grid_shape[1])
        with _recorded_warnings() as caught:
            table = label_tiles(
                slide,
                annotation,
                grid,
                source=source,
                classes=cmap,
                min_coverage=args.min_coverage,
                rule=args.rule,
                threshold=args.threshold,
                colour_tol=args.colour_tol,
                n_threads=args.threads,
            )
    table.save(args.out, overwrite=args.overwrite)
    _print_warnings(caught)  # a painted copy that does not register, or a colour no class has
    counts = ", ".join(f"{name} {n}" for name, n in table.counts().items())
    print(f"{len(table)} tiles of {slide.name}: {counts} -> {args.out}")
    return 0


def _list_classes(path: Path, cmap: Any) -> int:
    """Print every class name of an annotation file, its polygon count and its class."""
    from collections import Counter

    from ..errors import AnnotationError
    from ..label.annotation import load_annotation

    ann = load_annotation(path)
    counts = Counter((q.name, q.negative) for q in ann.polygons)
    print(f"{path} ({ann.format}): {len(ann.polygons)} polygons")
    for (name, negative), n in sorted(counts.items(), key=lambda kv: (str(kv[0][0]), kv[0][1])):
        label = "unclassified" if name is None else name
        if negative:
            print(f"  {label!r}: {n} subtracting region(s)")
            continue
        try:
            index = cmap.resolve(name, path)
            target = "ignored" if index is None else cmap.names[index]
        except AnnotationError:
            target = f"not in the class map: --class-alias '{label}=CLASS' (or =ignore)"
        print(f"  {label!r}: {n} polygon(s) -> {target}")
    return 0


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
        default="all",
        help="class ratio of the train split (class order; non-cancer:cancer for two classes): "
        "all (default: every tile kept; train's default recipe weighs the classes), 50:50 (the "
        "study's: the larger class is discarded down), 30:70, 70:30, any a:b",
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
    p.add_argument(
        "--stain-normalise",
        choices=("glass", "macenko", "none"),
        default="glass",
        help="normalise each slide to the train slides: glass (default) = its glass light, a "
        "gain per channel; macenko = also its stains; none (the model then does the same)",
    )
    p.add_argument("--threads", type=_positive_int, default=None, help="threads (default: all)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing DIR")
    p.add_argument("--json", action="store_true", help="print summary.json instead of the table")
    p.set_defaults(handler=_cmd_dataset)


def _cmd_dataset(args: argparse.Namespace) -> int:

    split = {}
    if args.val_slides:
        split["val"] = args.val_slides
    if args.test_slides:
        split["test"] = args.test_slides
    with _recorded_warnings() as caught:
        summary = _build(args, split)
    _print_warnings(caught)  # splits too small for a trustworthy AUC or threshold
    if args.json:
        print(json.dumps(summary.to_dict(), indent=2))
    else:
        print(summary.format())
    return 0


def _build(args: argparse.Namespace, split: dict[str, Any]) -> Any:
    """``build_dataset`` with the ``dataset`` command's arguments."""
    from ..dataset import WHITE_THRESHOLD, build_dataset

    return build_dataset(
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
        stain_normalise=None if args.stain_normalise == "none" else args.stain_normalise,
    )
