"""``open_slide``: check a path, sniff its content, and hand it to the reader that fits.

OpenSlide is asked first (every vendor format it knows, TIFF-based or not); TIFF-based files are
also opened by the package's TIFF decoder, which checks their structure (truncation, a broken IFD
chain) and then serves as the fast reader where it matches OpenSlide exactly. TIFFs that OpenSlide
rejects are read with tifffile (:class:`TiffSlide`), by tiles or by strips (a striped TIFF of any
size is read a few strips at a time); DICOM files and series folders go to OpenSlide, and what
it refuses to :class:`~.dicom.DicomSlide` (pydicom, see :mod:`.dicom`); a single striped page tifffile cannot turn into RGB
(palette, bilevel, CMYK) and JPEG/PNG/BMP images are decoded whole with OpenCV
(:class:`ImageSlide`) after their header showed the decoding stays under
:data:`~.headers.MAX_DECODE_BYTES`. Every failure is a :class:`SlideError` that
names the file.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import SlideError
from .core import Slide
from .dicom import DicomSlide, dicom_series_file
from .headers import sniff
from .memory import ImageSlide
from .tiff import TiffLevels, TiffSlide
from .vendor import OpenSlideSlide

__all__ = ["open_slide"]

_SLIDE_SUFFIXES = {".svs", ".ndpi", ".scn", ".mrxs", ".bif", ".vms", ".tif", ".tiff"}


def open_slide(path: str | Path, *, n_threads: int | None = None) -> Slide:
    """Open a whole-slide image or plain image for reading.

    Parameters
    ----------
    path : str or pathlib.Path
        A slide file: anything OpenSlide reads (SVS, NDPI, VMS, SCN, MRXS, Philips TIFF, BIF,
        generic tiled TIFF, DICOM), another tiled/pyramidal TIFF, or a JPEG/PNG/BMP image.
    n_threads : int, optional
        Threads for pixel conversion (None = all cores).

    Returns
    -------
    Slide

    Raises
    ------
    SlideError
        Missing path, a directory, a zero-byte file, a truncated or damaged file, or a file that is
        no slide or image. The message names the path.

    Notes
    -----
    Opening checks the file's structure (every TIFF tile must lie inside the file) and decodes a
    small region of the smallest level, so a damaged file fails here rather than mid-run.
    """
    p = Path(path)
    if not p.exists():
        raise SlideError(f"{p}: no such file")
    folder = None
    if p.is_dir():
        found = dicom_series_file(p)
        if found is None:
            raise SlideError(f"{p}: is a directory, not a slide file (nor a DICOM series)")
        folder, p = p, found
    try:
        if p.stat().st_size == 0:
            raise SlideError(f"{p}: empty file (0 bytes)")
        kind, head = sniff(p)
    except PermissionError as exc:
        raise SlideError(f"{p}: permission denied") from exc
    slide = _open_any(p, kind, head, n_threads)
    if folder is not None:
        slide.path = folder
    try:
        lw, lh = slide.level_dimensions[-1]
        slide.read_region((0, 0), slide.level_count - 1, (min(lw, 64), min(lh, 64)))
    except SlideError:
        slide.close()
        raise
    return slide


def _open_any(p: Path, kind: str | None, head: bytes, n_threads: int | None) -> Slide:
    import openslide

    try:
        vendor = openslide.OpenSlide.detect_format(str(p))
    except openslide.OpenSlideError:
        vendor = None
    if vendor == "dicom" or (vendor is None and kind == "dicom"):
        return _open_dicom(p, vendor, n_threads)
    if vendor is not None:
        tiff = TiffLevels(p) if kind == "tiff" else None
        return OpenSlideSlide(p, vendor, n_threads, tiff)
    if kind == "tiff":
        ts = TiffSlide(p, n_threads)
        if ts.level_count == 1 and not ts.is_tiled and not ts.strips_decodable:
            ts.close()
            return ImageSlide(p, "tiff", n_threads)
        return ts
    if kind in ("jpeg", "png", "bmp"):
        return ImageSlide(p, kind, n_threads)
    if p.suffix.lower() in _SLIDE_SUFFIXES:
        raise SlideError(
            f"{p}: not a valid {p.suffix.lstrip('.').upper()} slide "
            f"(unrecognised content, starts with {head[:8]!r})"
        )
    raise SlideError(f"{p}: not a slide or image format prostate-fast can read")


def _open_dicom(p: Path, vendor: str | None, n_threads: int | None) -> Slide:
    """OpenSlide for a conformant series; :class:`DicomSlide` (pydicom) for what it refuses."""
    first: SlideError | None = None
    if vendor is not None:
        try:
            return OpenSlideSlide(p, vendor, n_threads)
        except SlideError as exc:
            first = exc
    try:
        slide = DicomSlide(p, n_threads)
    except SlideError as exc:
        raise SlideError(f"{exc}; {first}" if first else str(exc)) from exc
    if first is not None:
        slide.notes.insert(
            0, f"OpenSlide refused it ({str(first).rsplit(': ', 1)[-1]}); read with pydicom"
        )
    return slide
