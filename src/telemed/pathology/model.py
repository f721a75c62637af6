"""FHIR R4 resources of remote pathology: a slide is an ``ImagingStudy`` (modality SM, slide microscopy)
whose one series holds the whole-slide image and references its ``Specimen``; the study is based on
the pathology request (``ServiceRequest``) and concerns a ``Patient`` (or, until the site says whose
slide it is, the gateway's ``Device``)."""

from __future__ import annotations

import uuid

SLIDE_SYSTEM = "urn:telemed:pathology:slide"
GATEWAY_SYSTEM = "urn:telemed:pathology:gateway"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
# DICOM VL Whole Slide Microscopy Image Storage (PS3.4 B.5)
WSI_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.77.1.6"


def new_uid() -> str:
    """A DICOM UID from a UUID (PS3.5 B.2: the 2.25 root)."""
    return f"2.25.{uuid.uuid4().int}"


def slide_study(name: str, subject: str, *, specimen: str | None = None, request: str | None = None,
                width: int, height: int, mpp: float | None, available: bool = False) -> dict:  # fmt: skip
    series: dict = {
        "uid": new_uid(),
        "modality": {"system": DCM, "code": "SM", "display": "Slide Microscopy"},
        "numberOfInstances": 1,
        "description": name[:200],
        "instance": [{
            "uid": new_uid(),
            "sopClass": {"system": "urn:ietf:rfc:3986", "code": f"urn:oid:{WSI_SOP_CLASS}"},
            "number": 1,
            "title": name[:200],
        }],
    }  # fmt: skip
    if specimen:
        series["specimen"] = [{"reference": specimen}]
    size = f"{width} × {height} px" + (f", {mpp:.4g} µm/px" if mpp else "")
    study: dict = {
        "resourceType": "ImagingStudy",
        "status": "available" if available else "registered",
        "identifier": [{"system": "urn:dicom:uid", "value": f"urn:oid:{new_uid()}"}],
        "modality": [{"system": DCM, "code": "SM", "display": "Slide Microscopy"}],
        "subject": {"reference": subject},
        "description": f"{name[:200]} ({size})",
        "numberOfSeries": 1,
        "numberOfInstances": 1,
        "series": [series],
    }
    if request:
        study["basedOn"] = [{"reference": request}]
    return study


def gateway_device(client_id: str, organization: str | None) -> dict:
    device: dict = {
        "resourceType": "Device",
        "identifier": [{"system": GATEWAY_SYSTEM, "value": client_id}],
        "status": "active",
        "deviceName": [{"name": f"Telemed site gateway {client_id}", "type": "user-friendly-name"}],
    }
    if organization:
        device["owner"] = {"reference": f"Organization/{organization}"}
    return device


def specimen(accession: str, subject: str, description: str | None = None) -> dict:
    res: dict = {
        "resourceType": "Specimen",
        "accessionIdentifier": {"value": accession[:64]},
        "subject": {"reference": subject},
        "status": "available",
    }
    if description:
        res["note"] = [{"text": description[:2000]}]
    return res


def patient(identifier: dict, organization: str | None, name: str | None = None) -> dict:
    res: dict = {"resourceType": "Patient", "identifier": [identifier]}
    if organization:
        res["managingOrganization"] = {"reference": f"Organization/{organization}"}
    if name:
        res["name"] = [{"text": name[:100]}]
    return res
