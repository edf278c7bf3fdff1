"""prostate-fast: prostate biopsy whole-slide screening, from the scanner file to an overlay.

Importing this package is cheap: MXNet, OpenSlide and OpenCV load only inside the stages that need
them. See ``prostate_fast.slide`` (open slides), ``prostate_fast.synthetic`` (synthetic slides).
"""

from __future__ import annotations

from .errors import AnnotationError, DatasetError, ModelError, ProstateFastError, SlideError

__version__ = "0.1.0"

__all__ = [
    "AnnotationError",
    "DatasetError",
    "ModelError",
    "ProstateFastError",
    "SlideError",
    "__version__",
    "native_openmp",
]


def native_openmp() -> dict[str, bool]:
    """Whether each native extension was compiled with OpenMP (``{module name: bool}``)."""
    import importlib
    import pkgutil

    names = ["_native"] + sorted(
        m.name for m in pkgutil.iter_modules(__path__) if m.name.endswith("_cy")
    )
    return {n: importlib.import_module(f".{n}", __name__).built_with_openmp() for n in names}
