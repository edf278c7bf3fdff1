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
