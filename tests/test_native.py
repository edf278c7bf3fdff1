"""The native build: both extensions compiled with OpenMP, thread resolution."""

from __future__ import annotations

import os

import prostate_fast
from prostate_fast import _native
from prostate_fast.slide import _slide_cy


def test_every_extension_built_with_openmp() -> None:
    # A build that silently lost -fopenmp must fail here, loudly.
    assert _native.built_with_openmp() is True
    assert _slide_cy.built_with_openmp() is True
    assert all(prostate_fast.native_openmp().values())


def test_resolve_threads_all_cores_by_default() -> None:
    assert _native.resolve_threads(0) == (os.cpu_count() or 1)
    assert _native.resolve_threads(-1) == (os.cpu_count() or 1)
    assert _native.resolve_threads(3) == 3


def test_import_is_light() -> None:
    import subprocess
    import sys

    code = "import prostate_fast, sys; print(','.join(m for m in ('mxnet','openslide','cv2') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
