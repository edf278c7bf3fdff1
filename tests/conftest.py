"""Shared fixtures. Real files come from PROSTATE_FAST_DATA (CI: ../shared/data), never the repo."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The folder of real public slides, tiles and annotations; skips when not configured."""
    root = os.environ.get("PROSTATE_FAST_DATA")
    if not root:
        pytest.skip(
            "PROSTATE_FAST_DATA is not set (point it at shared/data to run real-file tests)"
        )
    path = Path(root).resolve()
    if not (path / "MANIFEST.md").is_file():
        pytest.skip(f"PROSTATE_FAST_DATA={root} has no MANIFEST.md")
    return path


@pytest.fixture(scope="session")
def synthetic_small(tmp_path_factory: pytest.TempPathFactory):
    """A small synthetic slide (4096 x 2048 at 0.5 µm/px, 20x, three cores, pen marks), made once.

    A :class:`prostate_fast.synthetic.SyntheticSlide`: ``.slide`` (pyramidal TIFF), ``.painted``,
    ``.geojson``, ``.mask`` (truth PNG), ``.truth_mask()``, ``.mask_downsample``.
    """
    from prostate_fast.synthetic import make_synthetic

    out = tmp_path_factory.mktemp("synthetic_small")
    return make_synthetic(out, width=4096, height=2048, seed=3, n_cores=3, pen_marks=True)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The study CNN at 64 px tiles, 20x / 0.5 µm, Xavier-seeded (not trained): predict's tests
    (a module may define its own ``model_dir``)."""
    from _tiny_model import make_model

    return make_model(tmp_path_factory.mktemp("model") / "m", tile_size=64)


@pytest.fixture(scope="session")
def synthetic_slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2048 x 1024 synthetic slide at 20x (seed 3): predict's tests."""
    from prostate_fast.synthetic import make_synthetic

    return make_synthetic(tmp_path_factory.mktemp("slide"), width=2048, height=1024, seed=3).slide
