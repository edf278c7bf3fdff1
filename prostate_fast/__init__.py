"""prostate-fast: prostate biopsy whole-slide screening, from the scanner file to an overlay.

Importing this package is cheap: MXNet, OpenSlide and OpenCV load only inside the stages that need
them. See ``prostate_fast.slide`` (open slides), ``prostate_fast.synthetic`` (synthetic slides).
"""

from __future__ import annotations

from . import errors
from .errors import AnnotationError, DatasetError, ModelError, ProstateFastError, SlideError  # noqa: F401

__version__ = "0.1.0"

__all__ = [*errors.__all__, "__version__", "native_openmp"]


def native_openmp() -> dict[str, bool]:
    """Whether each native extension was compiled with OpenMP (``{module name: bool}``)."""
    import importlib
    from importlib.machinery import EXTENSION_SUFFIXES
    from pathlib import Path

    root = Path(__file__).parent
    cython = {
        ".".join(p.relative_to(root).parts)[: -len(suffix)]
        for suffix in EXTENSION_SUFFIXES
        for p in root.rglob(f"_*_cy{suffix}")
    }
    names = ["_native", *sorted(cython)]
    return {n: importlib.import_module(f".{n}", __name__).built_with_openmp() for n in names}
