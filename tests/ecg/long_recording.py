"""A long recording (a Holter strip) in the pool, stored without its automatic analysis (step one
of an ingest): the viewer's windows do not need the measurements, and analysing 30 minutes takes
half a minute."""

from __future__ import annotations

import tempfile
from pathlib import Path

from telemed.db.engine import unit_of_work
from telemed.ecg import service, synthetic
from telemed.fhir.store.context import AccessContext
from tests.conftest import unique


def store_long_ecg(services, net, minutes: float, rate: int = 250) -> tuple[str, synthetic.Synthetic]:
    syn = synthetic.simulate(duration=minutes * 60, sampling_rate=rate, heart_rate=72, seed=7)
    with tempfile.TemporaryDirectory() as tmp:
        names = synthetic.to_wfdb(syn.recording, tmp, "holter")
        files = {n: (Path(tmp) / n).read_bytes() for n in names}
    doctor = AccessContext(net.doctor, roles=frozenset({"requesting-doctor"}), organization=net.clinic,
                           practitioner=net.doctor)  # fmt: skip
    ecg = unique("holter")
    with unit_of_work(services.engine) as conn:
        pools = service.Pools.load(services.repository(conn, AccessContext.system()))
        service.receive(services.repository(conn, doctor), services.blobs, pools, services.clock.now(), ecg,
                        files=files, patient=net.patient, ctx=doctor)  # fmt: skip
    return ecg, syn
