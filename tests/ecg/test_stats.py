"""ECG statistics: counts per day, sender and reader, turnaround medians and critical values, over
what the caller may see; the page draws them as SVG bar charts, in Chinese by default."""

from __future__ import annotations

import re

from pydicom.data import get_testdata_file

from telemed.db.engine import unit_of_work
from telemed.ecg import report, stats
from tests.ecg import network
from tests.ecg.test_pages import session
from tests.ecg.test_report import sign
from tests.ecg.test_service import claim, send

DICOM = open(get_testdata_file("waveform_ecg.dcm"), "rb").read()


def figures(services, ctx, days=14):
    with unit_of_work(services.engine, write=False) as conn:
        return stats.compute(services.repository(conn, ctx), services.clock.now(), days)


def readings(services, net):
    """Three ECGs: one waiting, one reported by r1, one reported critical by r2 and acknowledged."""
    ecgs = [send(services, net, {"e.dcm": DICOM}, priority=p).ecg for p in ("routine", "routine", "urgent")]
    claim(services, net, "r1", ecgs[1])
    sign(services, net, "r1", ecgs[1], measurements={}, statements=["sinus-rhythm"])
    claim(services, net, "r2", ecgs[2])
    sign(services, net, "r2", ecgs[2], measurements={}, statements=["acute-stemi"], leads="V1-V4")
    with unit_of_work(services.engine) as conn:
        repo = services.repository(conn, net.ctx("doctor"))
        report.acknowledge(repo, net.ctx("doctor"), services.clock.now(), ecgs[2])
    return ecgs


def test_statistics_of_a_pool(services):
    net = network.build(services)
    readings(services, net)
    for who in ("r1", "doctor"):  # the reading centre and the sender see the same readings
        s = figures(services, net.ctx(who))
        assert s.total == 3 and s.waiting == 1 and sum(n for _, n in s.days) == 3 and s.days[-1][1] == 3
        assert len(s.days) == 14 and s.senders == [(net.clinic, 3)]
        assert sorted(s.readers) == sorted([(net.readers[0], 1), (net.readers[1], 1)])
        assert s.to_claim_min is not None and 0 <= s.to_claim_min < 5
        assert s.to_report_min is not None and s.to_report_min >= s.to_claim_min
        assert s.critical == 1 and s.critical_open == 0 and s.to_acknowledge_min is not None
    # Another clinic's doctor sees none of them.
    assert figures(services, net.ctx("outsider")).total == 0


def test_bars_geometry():
    chart = stats.bars([("a", 4), ("b", 2), ("c", 0)], width=600, label_width=160)
    assert [r["w"] for r in chart["rows"]] == [390.0, 195.0, 0.0] and chart["height"] == 72


def test_statistics_page(services, server):
    net = network.build(services)
    readings(services, net)
    client, _token = session(services, server, net.readers[0])
    assert 'href="/portal/ecg/stats"' in client.get("/portal/ecg").text
    page = client.get("/portal/ecg/stats")
    assert page.status_code == 200 and "心电统计" in page.text and "各发送机构心电图数" in page.text
    assert re.search(r'data-key="total">3<', page.text) and "石桥镇卫生院" in page.text
    senders = page.text[page.text.index('id="chart-senders"'):page.text.index('id="chart-readers"')]
    assert senders.count("<rect") == 1 and 'data-value="3"' in senders
    readers = page.text[page.text.index('id="chart-readers"'):]
    assert readers.count("<rect") == 2 and "周主任" in readers and "吴医生" in readers
    days = page.text[page.text.index('id="chart-days"'):page.text.index('id="chart-senders"')]
    assert days.count("<rect") == 14
    english = client.get("/portal/lang/en") and client.get("/portal/ecg/stats")
    assert "ECGs per reader" in english.text
    doctor, _ = session(services, server, net.doctor)
    assert doctor.get("/portal/ecg/stats").status_code == 200
