"""``POST /api/ecg``: an ECG from a device gateway or an EMR, with a bearer token (the same as /fhir).

The body is the file itself (``Content-Type: application/dicom`` or ``application/xml`` for HL7 aECG)
or ``multipart/form-data`` with ``files`` (a WFDB record's ``.hea`` and ``.dat``); ``patient`` (a
Patient id the caller may see) and ``priority`` (routine | urgent) are query parameters. The answer
(201) names the FHIR resources made; from there everything is plain FHIR under ``/fhir``: the
reading ``Task/{id}`` (a reader claims it by updating it with ``If-Match``, so two claims at once
cannot both win), the leads ``Observation?derived-from=DocumentReference/{id}``, the measurements
``DiagnosticReport/{id}`` → ``result``, and the signed report's ``DocumentReference?related=DiagnosticReport/{id}``.
"""

from __future__ import annotations

import json
from pathlib import Path

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from telemed.db.engine import unit_of_work
from telemed.ecg import service
from telemed.ecg import workflow as wf
from telemed.fhir.store.context import AccessContext

_NAMES = {"application/dicom": "ecg.dcm", "application/xml": "ecg.xml", "text/xml": "ecg.xml"}


def router(services, authenticate) -> APIRouter:
    r = APIRouter(prefix="/api/ecg", tags=["ecg"])

    @r.post("", status_code=201)
    async def upload(request: Request, patient: str, priority: str = wf.ROUTINE,
                     context: AccessContext = Depends(authenticate)) -> JSONResponse:  # noqa: B008  # fmt: skip
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype == "multipart/form-data":
            form = await request.form()
            files = {
                Path(f.filename or "ecg").name: await f.read() for f in form.getlist("files") if hasattr(f, "read")
            }
        else:
            files = {_NAMES.get(ctype, "ecg"): await request.body()}

        def store() -> service.Ingested:
            with unit_of_work(services.engine) as conn:
                pools = service.Pools.load(services.repository(conn, AccessContext.system()))
                repo, now = services.repository(conn, context), services.clock.now()
                done = service.receive(repo, services.blobs, pools, now, services.ids(), files=files,
                                       patient=patient, ctx=context, priority=priority)  # fmt: skip
            services.hub.publish(service.TOPIC, json.dumps(done.push.as_dict()))  # in the pool now
            with unit_of_work(services.engine) as conn:
                service.add_analysis(services.repository(conn, context), services.clock.now(), done)
            return done

        done = await run_in_threadpool(store)
        i = done.ecg
        body = {"id": i, "task": f"Task/{i}", "report": f"DiagnosticReport/{i}", "ecg": f"Observation/{i}",
                "original": f"DocumentReference/{i}", "leads": done.recording.lead_names,
                "measurements": done.analysis.measurements(), "flags": done.analysis.flags,
                "readers_notified": len(done.push.readers)}  # fmt: skip
        return JSONResponse(body, 201, headers={"Location": f"/fhir/Task/{i}"})

    return r
