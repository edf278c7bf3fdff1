"""Command-line interface: ``prostate-fast <stage> ...``.

One subcommand per stage. Each ``_cmd_*`` function only turns arguments into a call of the stage's
public function and prints the result; stage logic lives in the stage modules.

Errors: a :class:`~prostate_fast.errors.ProstateFastError`, a refused overwrite or an OS error on a
user's file becomes one line on stderr (``prostate-fast: error: <file>: <problem>``) and exit
status 2; bad arguments exit 2 through argparse. Outputs are written to temporary names and renamed
when complete, so a failure leaves no partial output. Every path argument that is not an output
(``-o``/``--out``, ``--out-dir``, ``--log-dir``, or a command's ``output_args``) is declared an
input of the command (:func:`~prostate_fast._outputs.command_inputs`): no output replaces one.

A closed standard output (``prostate-fast info SLIDE | head -1``) ends the command quietly with
status 141 (128 + SIGPIPE, what a shell reports for a tool killed by SIGPIPE), as other Unix
tools do: no traceback, no message. Ctrl-C exits 130 and SIGTERM during ``batch`` 143, each with
one line.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from .. import __version__
from .._outputs import command_inputs
from ..errors import ProstateFastError, one_line
from .apply import _add_batch, _add_demo, _add_overlay, _add_predict, _add_run, _add_screen
from .model import _add_check, _add_evaluate, _add_launch, _add_train
from .prepare import _add_dataset, _add_info, _add_label, _add_synth, _add_tiles
from .triage import _add_triage
from .view import _add_view

Handler = Callable[[argparse.Namespace], int]

#: Path arguments that name outputs; every other path argument is an input of the command.
_OUTPUT_ARGS = ("out", "out_dir", "log_dir")

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
    _add_triage,
    _add_overlay,
    _add_screen,
    _add_run,
    _add_batch,
    _add_check,
    _add_view,
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


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit status (0 success, 2 bad input, 1 unexpected failure).

    Also 130 on Ctrl-C, 141 when standard output was closed by its reader, 143 (raised as
    ``SystemExit``) on SIGTERM during ``batch``.
    """
    try:
        try:
            return _run(argv)
        finally:  # a closed pipe shows here (also after --help), not at exit as "Exception ignored"
            sys.stdout.flush()
    except BrokenPipeError:
        _stdout_to_devnull()
        return 128 + 13  # SIGPIPE


def _run(argv: Sequence[str] | None) -> int:
    """Parse ``argv`` and run its handler, turning domain errors into one line and status 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    try:
        with command_inputs(_inputs(args)):
            return handler(args)
    except BrokenPipeError:
        raise
    except SystemExit as exc:
        if exc.code == 128 + 15:  # batch.executors.sigterm_exits: the pool stopped, lock released
            print("prostate-fast: terminated (SIGTERM); rerun to resume", file=sys.stderr)
        raise
    except (ProstateFastError, FileExistsError, OSError, ValueError) as exc:
        print(f"prostate-fast: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("prostate-fast: interrupted", file=sys.stderr)
        return 130


def _inputs(args: argparse.Namespace) -> list[Path]:
    """The path arguments of ``args`` that are inputs (not outputs) of the command."""
    outputs = {*_OUTPUT_ARGS, *getattr(args, "output_args", ())}
    found: list[Path] = []
    for key, value in vars(args).items():
        if key not in outputs:
            found += [
                v for v in (value if isinstance(value, list) else [value]) if isinstance(v, Path)
            ]
    return found


def _stdout_to_devnull() -> None:
    """Point stdout at /dev/null, so the interpreter's final flush does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # no real stdout (replaced by a test harness)
        pass


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
