"""The escalation watcher: unclaimed ECGs escalate (urgent sooner), unacknowledged critical reports re-alert."""

from __future__ import annotations

import json
from datetime import timedelta

from pydicom.data import get_testdata_file

from telemed.ecg import service
from telemed.ecg.watch import EscalationWatcher
from tests.ecg import network
from tests.ecg.test_report import sign
from tests.ecg.test_service import claim, send

DICOM = open(get_testdata_file("waveform_ecg.dcm"), "rb").read()


def test_watcher_escalates_and_re_alerts(services):
    net = network.build(services)
    routine = send(services, net, {"e.dcm": DICOM}).ecg
    urgent = send(services, net, {"e.dcm": DICOM}, priority="urgent").ecg
    critical = send(services, net, {"e.dcm": DICOM}, priority="urgent").ecg
    claim(services, net, "r1", critical)
    sign(services, net, "r1", critical, measurements={}, statements=["ventricular-tachycardia"])
    published = []
    watcher = EscalationWatcher(services.engine, services.clock, services.repository,
                                lambda topic, text: published.append((topic, json.loads(text))),
                                after=timedelta(minutes=15), urgent_after=timedelta(minutes=3),
                                ack_after=timedelta(minutes=10))  # fmt: skip
    now = services.clock.now()

    def mine(pushes):
        return {(p.ecg, p.event) for p in pushes if p.ecg in (routine, urgent, critical)}

    assert mine(watcher.tick(now + timedelta(minutes=4))) == {(urgent, "escalated")}
    assert published[-1][0] == service.TOPIC and published[-1][1]["readers"]
    assert mine(watcher.tick(now + timedelta(minutes=11))) == {(urgent, "escalated"), (critical, "critical")}
    assert mine(watcher.tick(now + timedelta(minutes=12))) == set()  # once per period
    assert mine(watcher.tick(now + timedelta(minutes=16))) == {(routine, "escalated"), (urgent, "escalated")}
