"""Whole-slide images with known content, generated (never downloaded) for tests, benchmarks and the demo.

A pyramidal tiled TIFF as OpenSlide reads it ("generic tiled TIFF"): one page per level, level 0
``subfiletype=0``, the reduced levels ``subfiletype=1``, 256-pixel JPEG tiles, and the resolution
tag in pixels per centimetre so that OpenSlide reports micrometres per pixel. Tiles are written from
a generator, so a large slide never sits in memory.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

TILE = 256


def pattern(x0: int, y0: int, width: int, height: int, downsample: float = 1.0) -> np.ndarray:
    """The RGB pixels of the region at level-0 origin (x0, y0) of a slide, ``downsample`` level-0
    pixels per output pixel: smooth colour gradients and slow waves, so that a JPEG round trip and
    any resampling filter agree to a few grey levels (the tests compare tiles with the source)."""
    xs = x0 + (np.arange(width, dtype=np.float64) + 0.5) * downsample
    ys = y0 + (np.arange(height, dtype=np.float64) + 0.5) * downsample
    x, y = np.meshgrid(xs, ys)
    r = 128 + 100 * np.sin(x / 1500.0)
    g = 128 + 100 * np.cos(y / 1100.0)
    b = 128 + 90 * np.sin((x + y) / 2300.0)
    return np.clip(np.stack([r, g, b], axis=-1), 0, 255).astype(np.uint8)


def _hash(a: np.ndarray, b: np.ndarray, salt: int) -> np.ndarray:
    h = (a.astype(np.uint64) * np.uint64(73856093)) ^ (b.astype(np.uint64) * np.uint64(19349663)) ^ np.uint64(salt)
    h = (h ^ (h >> np.uint64(13))) * np.uint64(0x5BD1E995)
    return ((h >> np.uint64(8)) & np.uint64(0xFFFF)).astype(np.float64) / 65535.0


def tissue(x0: int, y0: int, width: int, height: int, downsample: float = 1.0) -> np.ndarray:
    """Something that looks like an H&E section (for screenshots and demos): pink stroma in lobes
    on a white background, purple nuclei of 3.5-6 µm at 0.25 µm/px, deterministic everywhere."""
    xs = x0 + (np.arange(width, dtype=np.float64) + 0.5) * downsample
    ys = y0 + (np.arange(height, dtype=np.float64) + 0.5) * downsample
    x, y = np.meshgrid(xs, ys)
    lobes = np.sin(x / 2100.0) * np.cos(y / 1700.0) + 0.6 * np.sin((x + 2 * y) / 3300.0) + 0.35 * np.cos(x / 700.0)
    inside = np.clip((lobes + 0.15) * 4.0, 0.0, 1.0)
    cell = 44.0
    cx, cy = np.floor(x / cell), np.floor(y / cell)
    jx, jy = _hash(cx, cy, 1), _hash(cx, cy, 2)
    radius = 7.0 + 5.0 * _hash(cx, cy, 3)  # inside its cell whatever the jitter: no cut nuclei
    d = np.hypot(x - (cx + 0.3 + 0.4 * jx) * cell, y - (cy + 0.3 + 0.4 * jy) * cell)
    # Nuclei blur into the stroma as the pixels grow (what a lower level shows).
    nucleus = np.clip((radius - d) / max(downsample, 1.5), 0.0, 1.0) * (_hash(cx, cy, 4) < 0.55) * inside
    white = np.array([246.0, 244.0, 248.0])
    stroma = np.array([232.0, 150.0, 190.0]) - 25.0 * np.sin(y / 90.0)[..., None] * np.cos(x / 130.0)[..., None]
    purple = np.array([92.0, 48.0, 140.0])
    rgb = white + (stroma - white) * inside[..., None]
    rgb = rgb + (purple - rgb) * nucleus[..., None]
    return np.clip(rgb, 0, 255).astype(np.uint8)


def write_slide(path: str | Path, width: int, height: int, mpp: float = 0.25, quality: int = 90,
                noise: int = 0, look: str = "pattern") -> Path:  # fmt: skip
    """Write a pyramid (levels halved until the slide fits one tile) and return the path.

    ``noise`` adds texture of that amplitude (JPEG then compresses like tissue, megabytes rather than kilobytes);
    ``look="tissue"`` draws :func:`tissue` instead of the smooth :func:`pattern`."""
    draw = tissue if look == "tissue" else pattern
    import tifffile

    path = Path(path)
    levels: list[tuple[int, int, int]] = []
    w, h, ds = width, height, 1
    while True:
        levels.append((w, h, ds))
        if w <= TILE and h <= TILE:
            break
        w, h, ds = max(1, w // 2), max(1, h // 2), ds * 2
    rng = np.random.default_rng(7)

    def tiles(w: int, h: int, ds: int):
        for ty in range(0, h, TILE):
            for tx in range(0, w, TILE):
                tile = draw(tx * ds, ty * ds, TILE, TILE, ds)
                if noise:
                    tile = np.clip(tile.astype(np.int16) + rng.integers(-noise, noise + 1, tile.shape), 0, 255).astype(
                        np.uint8
                    )
                yield tile

    per_cm = 10_000.0 / mpp
    with tifffile.TiffWriter(path, bigtiff=width * height > 2**31) as tif:
        for i, (w, h, ds) in enumerate(levels):
            tif.write(
                tiles(w, h, ds), shape=(h, w, 3), dtype=np.uint8, tile=(TILE, TILE), photometric="rgb",
                compression="jpeg", compressionargs={"level": quality}, subfiletype=0 if i == 0 else 1,
                resolution=(per_cm / ds, per_cm / ds), resolutionunit="CENTIMETER",
                description="Telemed synthetic slide" if i == 0 else None,
            )  # fmt: skip
    return path


def write_dicom_slide(folder: str | Path, width: int, height: int, mpp: float = 0.25, quality: int = 90,
                      look: str = "pattern") -> Path:  # fmt: skip
    """The same pyramid as :func:`write_slide` as a DICOM WSI (PS3.3 A.32.8, VL Whole Slide
    Microscopy Image): one file per level in ``folder``, ``TILED_FULL`` 256-pixel JPEG baseline
    frames; the same content, so tiles can be compared with :func:`pattern`. Returns the folder."""
    import io

    from PIL import Image
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit, generate_uid

    draw = tissue if look == "tissue" else pattern
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    study, series, frame_of_reference = generate_uid(), generate_uid(), generate_uid()
    sop_class = "1.2.840.10008.5.1.4.1.1.77.1.6"
    w, h, ds, i = width, height, 1, 0
    while True:
        frames = []
        for ty in range(0, h, TILE):
            for tx in range(0, w, TILE):
                buf = io.BytesIO()
                Image.fromarray(draw(tx * ds, ty * ds, TILE, TILE, ds)).save(buf, "JPEG", quality=quality)
                frames.append(buf.getvalue())
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = sop_class, generate_uid()
        meta.TransferSyntaxUID = JPEGBaseline8Bit
        ds_ = Dataset()
        ds_.file_meta = meta
        ds_.SOPClassUID, ds_.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
        ds_.StudyInstanceUID, ds_.SeriesInstanceUID, ds_.FrameOfReferenceUID = study, series, frame_of_reference
        ds_.Modality, ds_.PatientName, ds_.PatientID = "SM", "Synthetic^Slide", "SYN-1"
        ds_.StudyDate, ds_.StudyTime, ds_.AccessionNumber, ds_.StudyID = "20261204", "080000", "S26-DCM", "1"
        ds_.SeriesNumber, ds_.InstanceNumber = 1, i + 1
        ds_.Manufacturer, ds_.ManufacturerModelName = "Telemed", "synthetic"
        ds_.DeviceSerialNumber, ds_.SoftwareVersions = "0", "1"
        ds_.ContentDate, ds_.ContentTime, ds_.AcquisitionDateTime = "20261204", "080000", "20261204080000"
        ds_.ImageType = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"] if i == 0 else ["DERIVED", "PRIMARY", "VOLUME",
                                                                                  "RESAMPLED"]  # fmt: skip
        ds_.ContainerIdentifier, ds_.SpecimenLabelInImage, ds_.BurnedInAnnotation = "S26-DCM", "NO", "NO"
        ds_.IssuerOfTheContainerIdentifierSequence, ds_.ContainerTypeCodeSequence = [], []
        ds_.SamplesPerPixel, ds_.PhotometricInterpretation, ds_.PlanarConfiguration = 3, "YBR_FULL_422", 0
        ds_.BitsAllocated, ds_.BitsStored, ds_.HighBit, ds_.PixelRepresentation = 8, 8, 7, 0
        ds_.Rows = ds_.Columns = TILE
        ds_.TotalPixelMatrixColumns, ds_.TotalPixelMatrixRows, ds_.TotalPixelMatrixFocalPlanes = w, h, 1
        ds_.NumberOfFrames, ds_.DimensionOrganizationType = len(frames), "TILED_FULL"
        ds_.ImagedVolumeWidth, ds_.ImagedVolumeHeight = width * mpp / 1000, height * mpp / 1000
        ds_.ImagedVolumeDepth = 0.001
        ds_.FocusMethod, ds_.ExtendedDepthOfField, ds_.VolumetricProperties = "AUTO", "NO", "VOLUME"
        ds_.LossyImageCompression, ds_.LossyImageCompressionMethod = "01", "ISO_10918_1"
        origin = Dataset()
        origin.XOffsetInSlideCoordinateSystem, origin.YOffsetInSlideCoordinateSystem = 20.0, 40.0
        ds_.TotalPixelMatrixOriginSequence = [origin]
        ds_.ImageOrientationSlide = [0, -1, 0, -1, 0, 0]
        measures = Dataset()
        measures.PixelSpacing = [mpp * ds / 1000, mpp * ds / 1000]
        measures.SliceThickness, measures.SpacingBetweenSlices = 0.001, 0.001
        shared = Dataset()
        shared.PixelMeasuresSequence = [measures]
        ds_.SharedFunctionalGroupsSequence = [shared]
        path_ = Dataset()
        path_.OpticalPathIdentifier = "1"
        illum = Dataset()
        illum.CodeValue, illum.CodingSchemeDesignator, illum.CodeMeaning = "111744", "DCM", "Brightfield illumination"
        path_.IlluminationTypeCodeSequence = [illum]
        color = Dataset()
        color.CodeValue, color.CodingSchemeDesignator, color.CodeMeaning = "414298005", "SCT", "Full Spectrum"
        path_.IlluminationColorCodeSequence = [color]
        ds_.OpticalPathSequence, ds_.NumberOfOpticalPaths = [path_], 1
        ds_.PixelData = encapsulate(frames)
        ds_["PixelData"].VR = "OB"
        ds_.save_as(folder / f"level-{i}.dcm", enforce_file_format=True)
        if w <= TILE and h <= TILE:
            break
        w, h, ds, i = max(1, w // 2), max(1, h // 2), ds * 2, i + 1
    return folder
