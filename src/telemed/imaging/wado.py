"""WADO-RS (PS3.18 §10.4): instances, metadata, frames and bulk data from what was stored.

Instances are sent as stored (the bytes received, PS3.18 §8.7.3.5.2 "transfer-syntax=*" style);
metadata is the DICOM JSON kept per instance at store time, so a series' metadata is a single
indexed query and a concatenation. Frames are cut out of the stored pixel data: native frames by
offset, encapsulated frames by fragment; when the caller only accepts uncompressed frames, a
compressed frame is decoded (pydicom + pylibjpeg).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.uid import UID
from sqlalchemy import Connection, select

from telemed.db.schema import dicom_instance as t_instance
from telemed.db.schema import dicom_study as t_study
from telemed.fhir.store.context import AccessContext
from telemed.imaging import index
from telemed.imaging.model import BASE_PLACEHOLDER
from telemed.kernel.errors import Category, TelemedError

# PS3.18 Table 8.7.3-2: media types of compressed frames.
FRAME_MEDIA = {
    "1.2.840.10008.1.2.4.50": "image/jpeg",
    "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg",
    "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls",
    "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2",
    "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.5": "image/dicom-rle",
}
EXPLICIT_LE = "1.2.840.10008.1.2.1"


def not_found(what: str) -> TelemedError:
    return TelemedError(Category.NOT_FOUND, f"{what} is not known")


def instance_rows(conn: Connection, ctx: AccessContext, now, study: str, series=None, instance=None) -> list:
    rows = index.instances(conn, ctx, now, study, series, instance)
    if not rows:
        raise not_found(f"Study {study}" if series is None else f"Series {series}" if instance is None else instance)
    return rows


def metadata(conn: Connection, ctx: AccessContext, now, base: str, study: str, series=None, instance=None) -> bytes:
    """The DICOM JSON array of the selected instances (PS3.18 §10.4.1.1.2 "/metadata")."""
    conds = [t_instance.c.study_uid == study]
    if series is not None:
        conds.append(t_instance.c.series_uid == series)
    if instance is not None:
        conds.append(t_instance.c.sop_instance_uid == instance)
    stmt = select(t_instance.c.metadata).where(*conds)
    visible = index.visible_studies(ctx, now)
    if visible is not None:
        stmt = stmt.where(t_instance.c.study_uid.in_(select(t_study.c.study_uid).where(visible)))
    stmt = stmt.order_by(t_instance.c.series_uid, t_instance.c.instance_number, t_instance.c.sop_instance_uid)
    docs = [bytes(r[0]) for r in conn.execute(stmt)]
    if not docs:
        raise not_found(f"Study {study}" if series is None else f"Series {series}")
    return (b"[" + b",".join(docs) + b"]").replace(BASE_PLACEHOLDER, base.encode())


@dataclass
class Frame:
    data: bytes
    media_type: str
    transfer_syntax: str


def _dataset(raw: bytes) -> Dataset:
    return dcmread(io.BytesIO(raw))


def frames(raw: bytes, numbers: list[int], *, native_only: bool) -> list[Frame]:
    """Frames ``numbers`` (1-based, PS3.18 §10.4.1.1.5) of a stored instance."""
    ds = _dataset(raw)
    if "PixelData" not in ds:
        raise TelemedError(Category.NOT_FOUND, "The instance has no pixel data")
    ts = UID(str(ds.file_meta.TransferSyntaxUID))
    count = int(ds.get("NumberOfFrames", 1) or 1)
    for n in numbers:
        if not 1 <= n <= count:
            raise TelemedError(Category.NOT_FOUND, f"Frame {n} is not in 1..{count}")
    if ts.is_encapsulated and not native_only:
        media = FRAME_MEDIA.get(str(ts), "application/octet-stream")
        all_frames = list(generate_frames(ds.PixelData, number_of_frames=count))
        return [Frame(all_frames[n - 1], media, str(ts)) for n in numbers]
    if ts.is_encapsulated:  # decode for a caller that only takes uncompressed frames
        arr = ds.pixel_array
        if count == 1:
            arr = arr[None, ...]
        return [Frame(arr[n - 1].tobytes(), "application/octet-stream", EXPLICIT_LE) for n in numbers]
    size = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1)) * int(ds.BitsAllocated) // 8
    pixels = ds.PixelData
    if ts == "1.2.840.10008.1.2.2" and int(ds.BitsAllocated) > 8:  # big endian: frames go out little endian
        arr = ds.pixel_array
        pixels = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
    return [Frame(pixels[(n - 1) * size : n * size], "application/octet-stream", EXPLICIT_LE) for n in numbers]


def bulkdata(raw: bytes, tag: str) -> bytes:
    """The value of one (top-level) element, as a BulkDataURI in the metadata points to it."""
    try:
        key = int(tag, 16)
    except ValueError:
        raise not_found(f"Bulk data {tag}") from None
    ds = _dataset(raw)
    if key not in ds:
        raise not_found(f"Bulk data {tag}")
    value = ds[key].value
    return value if isinstance(value, bytes) else str(value).encode()
