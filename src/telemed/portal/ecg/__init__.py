"""Remote-ECG pages: send an ECG, the live reading pool, the 12-lead viewer and the reading steps."""

from fastapi import APIRouter

from telemed.portal.ecg import pages

router = APIRouter()
router.include_router(pages.router)
