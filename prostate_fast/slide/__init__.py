"""Open whole-slide images and read regions, strips and levels at a chosen magnification.

``open_slide(path)`` returns a :class:`Slide` for every format OpenSlide reads (Aperio SVS,
Hamamatsu NDPI/VMS, Leica SCN, MIRAX MRXS, Philips TIFF, Ventana BIF, generic tiled TIFF, DICOM),
for tiled or pyramidal TIFFs that OpenSlide rejects (read with tifffile), and for plain JPEG/PNG/BMP
images (the 2018 study worked on a 20x JPEG exported from the scanner file). :class:`ArraySlide`
wraps an in-memory array for tests.

A slide is opened once per slide per command and passed down: the same object serves tile reads
(:meth:`Slide.read_region`, :meth:`Slide.read_scaled`, from several threads at once), full-width
strips (:meth:`Slide.strip_reader`), and a view with another mpp (:meth:`Slide.with_mpp`). TIFF
pixels are decoded by one decoder (:class:`~prostate_fast.slide.tiff.TiffLevels`), used by OpenSlide
vendors only where it is proven, at open, to equal OpenSlide.

Modules: ``core`` (the :class:`Slide` interface, :class:`LevelChoice`), ``pixels``, ``tiff``,
``vendor`` (OpenSlide), ``memory`` (images, arrays), ``dispatch`` (:func:`open_slide`), ``strips``
(:class:`StripReader`, :func:`prefetch`), ``pyramid`` (:func:`write_pyramid`, the streaming
pyramidal TIFF writer).
"""

from __future__ import annotations

from .core import LEVEL_TOLERANCE, LevelChoice, Slide
from .dispatch import open_slide
from .memory import ArraySlide, ImageSlide
from .pyramid import PyramidInfo, write_pyramid
from .strips import StripReader, prefetch
from .tiff import TiffSlide
from .vendor import OpenSlideSlide

__all__ = [
    "LEVEL_TOLERANCE",
    "ArraySlide",
    "ImageSlide",
    "LevelChoice",
    "OpenSlideSlide",
    "PyramidInfo",
    "Slide",
    "StripReader",
    "TiffSlide",
    "open_slide",
    "prefetch",
    "write_pyramid",
]
