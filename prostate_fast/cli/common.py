"""Argument types and helpers shared by the CLI's subcommands (see ``prostate_fast.cli``).

Also the one place that turns parsed arguments into a
:class:`~prostate_fast.screen.ScreeningOptions` (:func:`_screening_options`), for ``predict``,
``screen``, ``run`` and ``batch``.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ProstateFastError

if TYPE_CHECKING:
    from ..screen import ScreeningOptions


def _checked(
    text: str, convert: Callable[[str], Any], ok: Callable[[Any], bool], expected: str
) -> Any:
    """``convert(text)`` when it parses and ``ok`` accepts it, else argparse's error naming it."""
    try:
        value = convert(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
    if not ok(value):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    return _checked(text, int, lambda v: v > 0, "a positive integer")


def _positive_float(text: str) -> float:
    return _checked(text, float, lambda v: v > 0, "a positive number")


def _no_tissue(slide: Path, n_tiles: int, min_tissue: float | None = None) -> ProstateFastError:
    """The error of `tiles`, `label` and `predict` on a slide where no tile lies on tissue.

    (Blank glass, an all-white scan, only dust and pen marks.) An empty table or score grid would
    look like a benign slide; `screen` and `batch` instead give such a slide the worklist status
    "no tissue" and rank it with the failures, for a manual read.
    """
    from ..errors import SlideError

    if min_tissue is None:
        from ..tile import MIN_TISSUE

        min_tissue = MIN_TISSUE
    return SlideError(
        f"{slide}: no tissue found (0 of {n_tiles} tiles are at least {min_tissue:.0%} "
        "tissue); nothing written"
    )


@contextlib.contextmanager
def _recorded_warnings() -> Iterator[list[warnings.WarningMessage]]:
    """Record the block's warnings (every UserWarning, repeats too) for :func:`_print_warnings`."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        yield caught


def _print_warnings(caught: Sequence[warnings.WarningMessage]) -> None:
    """Print recorded UserWarnings as ``prostate-fast: warning:`` lines; re-issue the others.

    Called once the command has succeeded: a failing command prints its one error line alone.
    """
    for w in caught:
        if issubclass(w.category, UserWarning):
            print(f"prostate-fast: warning: {w.message}", file=sys.stderr)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


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


def _fraction_list(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers like 0.8,0.2, got {text!r}") from None
    return values


def _name_list(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def _threshold_pair(text: str) -> tuple[str, float]:
    name, sep, value = text.partition("=")
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not sep or not name or not 0 <= number <= 1:
        raise argparse.ArgumentTypeError(f"expected CLASS=P with P in [0, 1], got {text!r}")
    return name, number


def _region_ids(text: str) -> list[int]:
    try:
        ids = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected region ids like 1,2, got {text!r}") from None
    if not ids or min(ids) <= 0:
        raise argparse.ArgumentTypeError(f"expected positive region ids like 1,2, got {text!r}")
    return ids


def _share(text: str) -> float:
    return _checked(text, float, lambda v: 0 < v <= 1, "a number in (0, 1]")


def _colour_pair(text: str) -> tuple[str, tuple[int, int, int]]:
    from ..overlay.colours import parse_colour

    try:
        return parse_colour(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


class _DeprecatedName(argparse.Action):
    """An option's old name: stores into the new option's ``dest`` after one warning on stderr."""

    def __init__(self, option_strings: Sequence[str], dest: str, *, new: str, **kw: Any) -> None:
        self.new = new
        super().__init__(option_strings, dest, **kw)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        print(
            f"prostate-fast: warning: {option_string} is deprecated here; use {self.new}",
            file=sys.stderr,
        )
        setattr(namespace, self.dest, values)


def _add_renamed(
    p: argparse.ArgumentParser | argparse._MutuallyExclusiveGroup, new: str, old: str, **kw: Any
) -> None:
    """Add option ``new`` and its deprecated old name ``old`` (hidden from --help)."""
    action = p.add_argument(new, **kw)
    keep = {k: v for k, v in kw.items() if k in ("type", "default", "metavar")}
    p.add_argument(
        old, dest=action.dest, action=_DeprecatedName, new=new, help=argparse.SUPPRESS, **keep
    )


#: ``--slide-mpp``'s help (the slide's own scale; ``--tile-mpp`` is the scale of the tiles).
SLIDE_MPP_HELP = (
    "microns per level-0 pixel of the slide, overriding the file (needed when it records none)"
)


def _add_slide_mpp(p: argparse.ArgumentParser | argparse._MutuallyExclusiveGroup) -> None:
    """``--slide-mpp`` (``--mpp``, deprecated, where it meant this): the slide's own mpp."""
    _add_renamed(p, "--slide-mpp", "--mpp", type=_positive_float, default=None, help=SLIDE_MPP_HELP)


def _add_tile_grid(p: argparse.ArgumentParser) -> None:
    """The tile grid's scale (magnification, tile mpp or level), tile size and stride, and the
    slide's own mpp: `tiles`, `label`."""
    scale = p.add_mutually_exclusive_group()
    scale.add_argument("--magnification", type=_positive_float, help="tile scale (default 20x)")
    _add_renamed(
        scale, "--tile-mpp", "--mpp", type=_positive_float, help="tile scale in µm per pixel"
    )
    scale.add_argument("--level", type=int, help="read a pyramid level as it is")
    p.add_argument("--slide-mpp", type=_positive_float, default=None, help=SLIDE_MPP_HELP)
    p.add_argument("--tile-size", type=_positive_int, default=128, help="tile side (128)")
    p.add_argument("--stride", type=_positive_int, default=None, help="tile stride (tile size)")


def _add_model_and_slide(p: argparse.ArgumentParser) -> None:
    """The two positional arguments of `predict` and `run`."""
    p.add_argument("model", type=Path, help="model folder written by `train`")
    p.add_argument("slide", type=Path, help="slide file")


def _add_overlay_look(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--alpha",
        type=float,
        default=0.4,
        help="opacity of the class colour in [0, 1] (default 0.4)",
    )
    p.add_argument(
        "--mode",
        choices=("class", "graded"),
        default="class",
        help="class: tint predicted tiles; graded: opacity = alpha x probability",
    )
    p.add_argument(
        "--outline",
        type=int,
        default=0,
        help="border width in px drawn on predicted tiles (default 0: none)",
    )
    p.add_argument(
        "--colour",
        type=_colour_pair,
        action="append",
        default=[],
        metavar="CLASS=R,G,B",
        help="colour of a class, e.g. cancer=0,255,0 (default: the model's, else green); "
        "repeatable",
    )
    p.add_argument("--quality", type=int, default=90, help="JPEG quality of the TIFF (90)")


def _engines() -> tuple[str, ...]:
    """The engine names, for ``--engine``'s choices (:data:`prostate_fast.predict.ENGINES`)."""
    from ..predict import ENGINES

    return ENGINES


#: Parsed argument -> ScreeningOptions field, for the ones a subcommand has (repeated options,
#: ``--threshold`` and ``--colour``, are lists of pairs: they become mappings).
_OPTION_ARGS = {
    "engine": "engine",
    "ctx": "ctx",
    "batch_size": "batch_size",
    "precision": "precision",
    "threshold": "thresholds",
    "slide_mpp": "mpp",
    "level": "level",
    "ignore_domain": "ignore_domain",
    "ignore_scale": "ignore_scale",
    "alpha": "alpha",
    "mode": "mode",
    "outline": "outline",
    "colour": "colours",
    "quality": "quality",
    "threads": "n_threads",
}


def _screening_options(args: argparse.Namespace) -> ScreeningOptions:
    """The :class:`~prostate_fast.screen.ScreeningOptions` of a subcommand's parsed arguments.

    Options the subcommand does not have keep their defaults. ValueError names a bad value.
    """
    from ..screen import ScreeningOptions

    given = vars(args)
    kw = {field: given[arg] for arg, field in _OPTION_ARGS.items() if arg in given}
    return ScreeningOptions(**{k: dict(v) if isinstance(v, list) else v for k, v in kw.items()})


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers like 30,60, got {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers like 30,60, got {text!r}")
    return values


def _class_weights_arg(text: str) -> str | list[float]:
    if text in ("dataset", "none"):
        return text
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected 'dataset', 'none' or numbers, got {text!r}"
        ) from None
    if any(not v > 0 for v in values):
        raise argparse.ArgumentTypeError(f"class weights must be positive, got {text!r}")
    return values
