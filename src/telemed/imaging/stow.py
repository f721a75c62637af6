"""STOW-RS (PS3.18 §10.5): store the instances of a multipart/related request, one result per instance.

Each part is stored like a C-STORE (:func:`telemed.imaging.service.store_instance`): refused parts
are listed in the Failed SOP Sequence with their reason (PS3.18 Table 10.5.3-1 failure reasons),
the others in the Referenced SOP Sequence with their RetrieveURL. 200 when all were stored, 202
when some were, 409 when none were (PS3.18 §10.5.3).
"""

from __future__ import annotations

import io
import logging

import orjson
from pydicom import dcmread

from telemed.fhir.store.context import AccessContext
from telemed.imaging import multipart
from telemed.imaging.model import NonConformant
from telemed.imaging.service import Platform, refresh_stale, store_instances

log = logging.getLogger("telemed.imaging.stow")

PROCESSING_FAILURE = 0x0110
DICOM_PART_TYPES = {"application/dicom", ""}


def _uids(raw: bytes) -> tuple[str | None, str | None]:
    try:
        ds = dcmread(io.BytesIO(raw), stop_before_pixels=True, specific_tags=["SOPClassUID", "SOPInstanceUID"])
        return str(ds.get("SOPClassUID") or "") or None, str(ds.get("SOPInstanceUID") or "") or None
    except Exception:  # noqa: BLE001 - an unreadable part is reported as such below
        return None, None


def _is_dicom(headers: dict[str, str]) -> bool:
    return multipart.params(headers.get("content-type", "application/dicom"))[0] in DICOM_PART_TYPES


def _item(sop_class: str | None, sop_instance: str | None) -> dict:
    item = {}
    if sop_class:
        item["00081150"] = {"vr": "UI", "Value": [sop_class]}
    if sop_instance:
        item["00081155"] = {"vr": "UI", "Value": [sop_instance]}
    return item


def store(
    platform: Platform, ctx: AccessContext, body: bytes, content_type: str, base: str, study: str | None = None
) -> tuple[int, bytes]:
    """(HTTP status, DICOM JSON response) of a STOW-RS request."""
    parts = multipart.decode(body, content_type)
    referenced, failed, touched = [], [], set()
    dicom = [raw for headers, raw in parts if _is_dicom(headers)]
    # Checked one by one, committed in groups (one transaction for many instances, each still
    # answered with its own outcome).
    outcomes = iter(store_instances(platform, ctx, dicom, study_uid=study))
    for headers, raw in parts:
        if not _is_dicom(headers):
            failed.append({**_item(None, None), "00081197": {"vr": "US", "Value": [0xA900]}})
            continue
        result = next(outcomes)
        if isinstance(result, NonConformant):
            log.info("STOW-RS part refused: %s", result)
            failed.append({**_item(*_uids(raw)), "00081197": {"vr": "US", "Value": [result.status]}})
            continue
        if isinstance(result, Exception):  # this part fails; the others are still stored
            log.error("STOW-RS part failed", exc_info=result)
            failed.append({**_item(*_uids(raw)), "00081197": {"vr": "US", "Value": [PROCESSING_FAILURE]}})
            continue
        touched.add(result.study_uid)
        url = f"{base}/studies/{result.study_uid}/series/{result.series_uid}/instances/{result.sop_instance_uid}"
        referenced.append(
            {**_item(result.sop_class_uid, result.sop_instance_uid), "00081190": {"vr": "UR", "Value": [url]}}
        )
    refresh_stale(platform, touched)
    doc: dict = {}
    if study:
        doc["00081190"] = {"vr": "UR", "Value": [f"{base}/studies/{study}"]}
    if referenced:
        doc["00081199"] = {"vr": "SQ", "Value": referenced}
    if failed:
        doc["00081198"] = {"vr": "SQ", "Value": failed}
    status = 200 if not failed else 202 if referenced else 409
    return status, orjson.dumps(doc)
