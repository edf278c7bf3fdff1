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


# -- registry: one entry per subcommand, in the order of the pipeline --------------------------
_SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_demo,
    _add_info,
    _add_synth,
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
