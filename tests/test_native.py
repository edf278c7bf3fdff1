"""The native build: every extension present and compiled with OpenMP; the import stays light."""

from __future__ import annotations

import prostate_fast
from prostate_fast import _native, _tissue_cy
from prostate_fast.slide import _slide_cy


def test_every_extension_built_with_openmp() -> None:
    # A build that silently lost -fopenmp must fail here, loudly.
    assert _native.built_with_openmp() is True
    assert _slide_cy.built_with_openmp() is True
    assert _tissue_cy.built_with_openmp() is True
    found = prostate_fast.native_openmp()
    assert {"_native", "_tissue_cy", "slide._slide_cy"} <= set(found)
    assert all(found.values())


def test_import_is_light() -> None:
    import subprocess
    import sys

    code = "import prostate_fast, sys; print(','.join(m for m in ('mxnet','openslide','cv2') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
