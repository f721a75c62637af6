"""Imaging pages: the study lists with thumbnails, the upload of a DICOM folder or ZIP, and the
diagnostic viewer (OHIF) under ``/portal/viewer/``.

Each page module here has its own ``router``; add a new one (e.g. the reading worklist) to
``_MODULES`` and keep its routes in its own file.
"""

from fastapi import APIRouter

from telemed.portal.imaging import studies, viewer

_MODULES = (studies, viewer)

router = APIRouter()
for _module in _MODULES:
    router.include_router(_module.router)
