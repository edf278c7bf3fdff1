"""Benchmarks: ``pytest bench/ --benchmark-only`` collects every ``bench/bench_*.py``.

pytest only collects ``test_*.py`` by default; this adds the ``bench_*.py`` pattern when the
benchmarks are run as a folder (a file named on the command line is collected anyway).

Shared, session-scoped fixtures for benchmarks that work on a whole slide (``bench_end_to_end.py``;
the stage benchmarks keep their own fixed inputs):

* ``bench_scale``: ``tiny``, ``small``, ``default`` or ``large``, from ``--bench-scale`` or the
  environment variable ``PF_BENCH_SCALE`` (default ``default``): the size of the shared synthetic
  slide, :data:`SCALES`.
* ``bench_slide``: that synthetic slide (pyramidal JPEG TIFF at 20x, 0.5 µm/px, with its painted
  copy), generated once and cached in ``PF_BENCH_CACHE`` (default ``/tmp/pf_bench_cache``) so later
  runs reuse it.
* ``bench_model``: a model folder of the study's network at 128 px (seeded random weights: speed
  does not depend on the values), written once per session.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # _synthcache beside this file, whatever pytest's import mode
    sys.path.insert(0, str(HERE))

#: Level-0 size (width, height) of the shared slide per scale. ``default`` keeps the whole suite
#: under 15 minutes on 2 cores; ``large`` is a 1-gigapixel slide (about 4 minutes more).
SCALES: dict[str, tuple[int, int]] = {
    "tiny": (4096, 2048),  # smoke test of the benchmark code itself
    "small": (8192, 4096),
    "default": (16384, 8192),
    "large": (46080, 23040),
}
#: The shared slide's other arguments to ``make_synthetic`` (pen marks on the glass, as on real
#: slides; four cores with four cancer regions).
SLIDE_ARGS = {"seed": 11, "n_cores": 4, "n_cancer": 4, "pen_marks": True}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--bench-scale",
        choices=sorted(SCALES),
        default=None,
        help="size of the shared benchmark slide (default: $PF_BENCH_SCALE or 'default')",
    )


def pytest_configure(config: pytest.Config) -> None:
    patterns = config.getini("python_files")
    if "bench_*.py" not in patterns:
        patterns.append("bench_*.py")


def _scale(config: pytest.Config) -> str:
    scale = config.getoption("--bench-scale", default=None) or os.environ.get(
        "PF_BENCH_SCALE", "default"
    )
    if scale not in SCALES:
        raise pytest.UsageError(f"PF_BENCH_SCALE must be one of {sorted(SCALES)}, got {scale!r}")
    return scale


def pytest_report_header(config: pytest.Config) -> str:
    from _synthcache import cache_dir

    w, h = SCALES[_scale(config)]
    return f"bench scale: {_scale(config)} ({w} x {h} slide), cache: {cache_dir()}"


@pytest.fixture(scope="session")
def bench_scale(pytestconfig: pytest.Config) -> str:
    """The benchmark scale: ``tiny``, ``small``, ``default`` or ``large``."""
    return _scale(pytestconfig)


@pytest.fixture(scope="session")
def bench_slide(bench_scale: str):
    """The shared synthetic slide of this scale (:class:`~prostate_fast.synthetic.SyntheticSlide`),
    from the cache, or generated (about 36 ns per pixel: 10 s at ``default``, a minute at
    ``large``)."""
    from _synthcache import cached_synthetic

    w, h = SCALES[bench_scale]
    made, _ = cached_synthetic(width=w, height=h, **SLIDE_ARGS)
    return made


@pytest.fixture(scope="session")
def bench_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model folder: the study's CNN at 128 px, seeded weights, ``model.json`` as train writes."""
    sys.path.insert(0, str(HERE.parent / "tests"))
    from _tiny_model import make_model

    return make_model(tmp_path_factory.mktemp("bench-model") / "m", tile_size=128)
