"""Cloud PACS: DICOM networking (C-ECHO/STORE/FIND/MOVE/GET), DICOMweb and the DICOM index.

Instances are kept byte for byte in the blob store, indexed in the database for C-FIND and QIDO-RS,
and each study is a FHIR ``ImagingStudy`` of its ``Patient``, so the FHIR store's access rules and
audit trail govern images like any other record.
"""

from telemed.imaging.model import AE_TITLE_SYSTEM, NonConformant
from telemed.imaging.scp import DEFAULT_AE_TITLE, DEFAULT_PORT, DicomService, Received
from telemed.imaging.service import RemoteAE, StoreResult, endpoint_resource, find_ae, refresh_stale, store_instance

__all__ = [
    "AE_TITLE_SYSTEM",
    "DEFAULT_AE_TITLE",
    "DEFAULT_PORT",
    "DicomService",
    "NonConformant",
    "Received",
    "RemoteAE",
    "StoreResult",
    "endpoint_resource",
    "find_ae",
    "refresh_stale",
    "store_instance",
]
