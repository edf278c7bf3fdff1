"""Tiny DICOM whole-slide fixtures written with pydicom (test helper, not a test module).

:func:`write_wsi` writes one VL Whole Slide Microscopy instance of an RGB image, cut into JPEG
baseline (YBR_FULL_422, as scanners write) or JPEG 2000 frames. ``conformant=False`` writes the
shape of a real TCGA file: no ImageType, no PixelSpacing, no DimensionOrganizationType, frames in
column-major order and PhotometricInterpretation RGB while the codestreams are JFIF (YCbCr).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

VL_WSI = "1.2.840.10008.5.1.4.1.1.77.1.6"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
JPEG_2000 = "1.2.840.10008.1.2.4.91"


def slide_rgb(width: int = 700, height: int = 520, seed: int = 0) -> np.ndarray:
    """Glass with a pink-purple tissue blob and a smooth gradient, so colours and positions show."""
    yy, xx = np.mgrid[0:height, 0:width]
    rgb = np.full((height, width, 3), 235, np.uint8)
    blob = ((xx - width * 0.45) / (width * 0.3)) ** 2 + ((yy - height * 0.5) / (height * 0.3)) ** 2
    inside = blob < 1
    rgb[inside, 0] = (200 - 60 * xx[inside] / width).astype(np.uint8)
    rgb[inside, 1] = (90 + 40 * yy[inside] / height).astype(np.uint8)
    rgb[inside, 2] = 170
    return rgb


def _encode(tile: np.ndarray, syntax: str) -> bytes:
    import imagecodecs

    if syntax == JPEG_2000:
        return bytes(imagecodecs.jpeg2k_encode(tile, level=0, codecformat="j2k"))
    return bytes(imagecodecs.jpeg8_encode(tile, level=95, subsampling="422"))


def write_wsi(
    path: Path,
    rgb: np.ndarray,
    *,
    tile: int = 256,
    syntax: str = JPEG_BASELINE,
    sparse: bool = False,
    conformant: bool = True,
    mpp: float = 0.5,
    series_uid: str | None = None,
    instance: int = 1,
    flavor: str = "VOLUME",
    fragments: int = 1,
) -> Path:
    """Write ``rgb`` as one DICOM WSI instance; return the path."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.sequence import Sequence
    from pydicom.uid import generate_uid

    h, w = rgb.shape[:2]
    nr, nc = -(-h // tile), -(-w // tile)
    order = (
        [(r, c) for r in range(nr) for c in range(nc)]
        if conformant
        else [(r, c) for c in range(nc) for r in range(nr)]
    )
    if sparse:  # sparse files may store frames in any order: reverse them
        order = order[::-1]
    frames = []
    for r, c in order:
        t = np.full((tile, tile, 3), 255, np.uint8)
        part = rgb[r * tile : (r + 1) * tile, c * tile : (c + 1) * tile]
        t[: part.shape[0], : part.shape[1]] = part
        frames.append(_encode(t, syntax))

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = VL_WSI
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = VL_WSI
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.FrameOfReferenceUID = "1.2.826.0.1.3680043.8.498.2"
    ds.Modality = "SM"
    ds.InstanceNumber = instance
    ds.PatientName = "Synthetic^Slide"
    ds.PatientID = "synthetic"
    ds.ContainerIdentifier = "synthetic-1"
    ds.Manufacturer = "prostate-fast tests"
    ds.Rows = ds.Columns = tile
    ds.TotalPixelMatrixColumns, ds.TotalPixelMatrixRows = w, h
    ds.NumberOfFrames = len(frames)
    ds.SamplesPerPixel = 3
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PlanarConfiguration = 0
    ds.ImagedVolumeWidth = w * mpp / 1000.0
    ds.ImagedVolumeHeight = h * mpp / 1000.0
    ds.ImagedVolumeDepth = 0.001
    if syntax == JPEG_2000:
        ds.PhotometricInterpretation = "YBR_ICT" if conformant else "RGB"
    else:
        ds.PhotometricInterpretation = "YBR_FULL_422" if conformant else "RGB"
    if conformant:
        ds.ImageType = ["ORIGINAL" if instance == 1 else "DERIVED", "PRIMARY", flavor, "NONE"]
        ds.DimensionOrganizationType = "TILED_SPARSE" if sparse else "TILED_FULL"
        ds.TotalPixelMatrixFocalPlanes = 1
        ds.NumberOfOpticalPaths = 1
        op = Dataset()
        op.OpticalPathIdentifier = "1"
        ill = Dataset()
        ill.CodeValue, ill.CodingSchemeDesignator, ill.CodeMeaning = "111744", "DCM", "Brightfield"
        op.IlluminationTypeCodeSequence = Sequence([ill])
        ds.OpticalPathSequence = Sequence([op])
        pm = Dataset()
        pm.PixelSpacing = [mpp / 1000.0, mpp / 1000.0]
        pm.SliceThickness = 0.001
        shared = Dataset()
        shared.PixelMeasuresSequence = Sequence([pm])
        ds.SharedFunctionalGroupsSequence = Sequence([shared])
        origin = Dataset()
        origin.XOffsetInSlideCoordinateSystem = 0.0
        origin.YOffsetInSlideCoordinateSystem = 0.0
        ds.TotalPixelMatrixOriginSequence = Sequence([origin])
        if sparse:
            groups = []
            for r, c in order:
                pos = Dataset()
                pos.ColumnPositionInTotalImagePixelMatrix = c * tile + 1
                pos.RowPositionInTotalImagePixelMatrix = r * tile + 1
                pos.XOffsetInSlideCoordinateSystem = c * tile * mpp / 1000.0
                pos.YOffsetInSlideCoordinateSystem = r * tile * mpp / 1000.0
                pos.ZOffsetInSlideCoordinateSystem = 0.0
                g = Dataset()
                g.PlanePositionSlideSequence = Sequence([pos])
                groups.append(g)
            ds.PerFrameFunctionalGroupsSequence = Sequence(groups)
    ds.PixelData = encapsulate(frames, fragments_per_frame=fragments, has_bot=fragments > 1)
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    return path


def write_series(folder: Path, rgb: np.ndarray, *, levels: int = 3, tile: int = 128) -> Path:
    """A conformant multi-level series: one instance per level, each level half the last."""
    import cv2
    from pydicom.uid import generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    uid = generate_uid()
    img = rgb
    for i in range(levels):
        write_wsi(
            folder / f"level{i}.dcm", img, tile=tile, series_uid=uid, instance=i + 1, mpp=0.5 * 2**i
        )
        h, w = img.shape[:2]
        img = cv2.resize(img, (max(1, w // 2), max(1, h // 2)), interpolation=cv2.INTER_AREA)
    return folder
