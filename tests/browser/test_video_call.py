"""Video calls in real browsers: two Chromium contexts join a consultation's room through the
portal page and decode each other's frames; the call survives a dropped WebSocket without a
reload; with coturn and ``iceTransportPolicy: "relay"`` the media goes through TURN."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.browser.test_consultation_flow import ARGS, CHROMIUM
from tests.conftest import free_port
from tests.identity.test_authentication import PASSWORD
from tests.video.helpers import scheduled, set_password
from tests.video.janus_server import janus

SHOTS = Path(os.environ.get("TELEMED_SCREENSHOTS", "docs/screenshots"))
MEDIA_ARGS = [*ARGS, "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
              "--disable-features=WebRtcHideLocalIpsWithMdns"]  # fmt: skip

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed (make deps)")

# Per remote peer: connection state, frames decoded, audio packets received, the local candidate type in use.
STATS_JS = """async () => {
  const out = [];
  for (const [peer, p] of window.telemedCall.state.pcs) {
    const stats = await p.pc.getStats();
    let frames = 0, audio = 0, pair = null;
    const byId = new Map();
    stats.forEach(r => { byId.set(r.id, r); });
    stats.forEach(r => {
      if (r.type === "inbound-rtp" && r.kind === "video") frames += r.framesDecoded || 0;
      if (r.type === "inbound-rtp" && r.kind === "audio") audio += r.packetsReceived || 0;
      if (r.type === "transport" && r.selectedCandidatePairId) pair = byId.get(r.selectedCandidatePairId);
    });
    const local = pair ? byId.get(pair.localCandidateId) : null;
    out.push({peer, state: p.pc.connectionState, frames, audio, candidate: local ? local.candidateType : null});
  }
  return out;
}"""


@pytest.fixture(scope="module")
def browser():
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=MEDIA_ARGS)
        yield b
        b.close()


def _open_call(browser, server, user: str, cid: str, lang: str = "zh-CN"):
    import re

    context = browser.new_context(locale=lang, timezone_id="Asia/Shanghai", viewport={"width": 1280, "height": 900})
    page = context.new_page()
    if lang == "en":
        page.goto(f"{server.url}/portal/lang/en?next=/portal/login")
    page.goto(f"{server.url}/portal/login")
    page.fill("#username", user)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r".*/portal/?$"))
    page.goto(f"{server.url}/portal/consultations/{cid}")
    page.click("#join-video")
    page.wait_for_url(f"**/portal/consultations/{cid}/video")
    page.evaluate("() => { window.__noReload = true; }")
    return page


def _stats(page) -> list[dict]:
    return page.evaluate(STATS_JS)


def _wait_decoding(page, peers: int = 1, timeout: float = 30) -> list[dict]:
    """Until ``peers`` remote peers are connected and their frames decoded rise; returns the last stats."""
    deadline = time.time() + timeout
    first = None
    while time.time() < deadline:
        stats = _stats(page)
        ok = len(stats) == peers and all(s["state"] == "connected" and s["frames"] > 0 and s["audio"] > 0
                                         for s in stats)  # fmt: skip
        if ok and first is None:
            first = {s["peer"]: s["frames"] for s in stats}
        elif ok and all(s["frames"] > first[s["peer"]] + 5 for s in stats):
            return stats
        time.sleep(0.5)
    raise AssertionError(f"not decoding: {_stats(page)}")


def _users(services, call) -> tuple[str, str]:
    for user in (call.net.requester, call.net.experts[0]):
        set_password(services, user)
    return call.net.requester, call.net.experts[0]


def test_two_participants_see_and_hear_each_other_and_survive_a_dropped_socket(browser, services, server, backend):
    if backend != "sqlite":
        pytest.skip("the browser call is tested once (SQLite); the store is covered by tests/video")
    call = scheduled(services)
    doctor_user, expert_user = _users(services, call)
    doctor = _open_call(browser, server, doctor_user, call.cid)
    expert = _open_call(browser, server, expert_user, call.cid)
    for page in (doctor, expert):
        stats = _wait_decoding(page)
        assert stats[0]["candidate"] == "host"  # no TURN configured: direct on one machine
    expert.wait_for_function("() => document.getElementById('call-status').textContent === '已连接'")

    # Chat, saved to the consultation.
    doctor.fill("#chat-text", "请看第二张CT片")
    doctor.click("#chat-send")
    expert.wait_for_selector("#chat-log li:has-text('请看第二张CT片')")
    doctor.wait_for_function("() => document.getElementById('net-quality').dataset.level === 'good'", timeout=15000)
    if SHOTS.exists():
        expert.screenshot(path=str(SHOTS / "video-call.png"), full_page=True)

    # The doctor's socket drops mid-call: the page rejoins with a fresh token and restarts ICE.
    doctor.evaluate("() => window.telemedCall.dropSocket()")
    reconnected = "() => window.telemedCall.state.socketOpens >= 2 && window.telemedCall.state.restarts >= 1"
    doctor.wait_for_function(reconnected, timeout=20000)
    for page in (doctor, expert):
        _wait_decoding(page)
        assert page.evaluate("() => window.__noReload") is True  # the same page: no reload
    assert len(expert.evaluate("() => window.telemedCall.peers()")) == 1  # the expert never saw the doctor leave

    # Mute and camera off are announced to the other side.
    doctor.click("#btn-mute")
    expert.wait_for_selector("figure.tile[data-audio='off']")
    doctor.click("#btn-leave")
    expert.wait_for_function("() => window.telemedCall.peers().length === 0", timeout=10000)
    for page in (doctor, expert):
        page.context.close()


def _frames_from(page, peer: str) -> int:
    return next(s["frames"] for s in _stats(page) if s["peer"] == peer)


def _rising(page, peer: str, seconds: float = 2.0) -> int:
    before = _frames_from(page, peer)
    time.sleep(seconds)
    return _frames_from(page, peer) - before


def test_audio_only_and_screen_sharing_reach_the_other_side(browser, services, server, backend):
    if backend != "sqlite":
        pytest.skip("tested once (SQLite)")
    call = scheduled(services)
    doctor_user, expert_user = _users(services, call)
    doctor = _open_call(browser, server, doctor_user, call.cid)
    expert = _open_call(browser, server, expert_user, call.cid)
    try:
        for page in (doctor, expert):
            _wait_decoding(page)
        me = doctor.evaluate("() => window.telemedCall.state.me")
        tile = f"#tile-{me}"

        # Audio only: the doctor stops sending video; the expert is told, and no more frames arrive.
        doctor.click("#btn-audio-only")
        expert.wait_for_selector(f"{tile}[data-video='off']", timeout=10000)
        assert doctor.evaluate("() => window.telemedCall.state.localStream.getVideoTracks().length") == 0
        assert doctor.evaluate("""() => Array.from(window.telemedCall.state.pcs.values()).every(p =>
            p.pc.getSenders().every(s => !s.track || s.track.kind !== 'video'))""")
        time.sleep(1)  # frames in flight
        assert _rising(expert, me) <= 2, "video still arriving in audio-only"
        assert next(s["audio"] for s in _stats(expert) if s["peer"] == me) > 0  # the sound goes on
        # Video on again: frames come back.
        doctor.click("#btn-audio-only")
        expert.wait_for_selector(f"{tile}[data-video='on']", timeout=10000)
        deadline = time.time() + 15
        while _rising(expert, me, 1.0) < 5:
            assert time.time() < deadline, "video did not come back"

        # Screen sharing (Chromium's fake capture is a 1280x720 screen; the camera is 4:3).
        ratio = f"() => {{ const v = document.querySelector('{tile} video'); return v.videoWidth / v.videoHeight; }}"
        assert abs(expert.evaluate(ratio) - 4 / 3) < 0.05
        doctor.click("#btn-screen")
        expert.wait_for_selector(f"{tile}[data-screen='on']", timeout=10000)
        expert.wait_for_function(f"() => Math.abs(({ratio})() - 16 / 9) < 0.05", timeout=15000)
        assert doctor.inner_text("#btn-screen") == "停止共享"
        assert _rising(expert, me) > 5  # the screen's frames are decoded
        if SHOTS.exists():
            expert.screenshot(path=str(SHOTS / "video-screen-share.png"), full_page=True)
        doctor.click("#btn-screen")  # stop: the camera again
        expert.wait_for_selector(f"{tile}[data-screen='off']", timeout=10000)
        expert.wait_for_function(f"() => Math.abs(({ratio})() - 4 / 3) < 0.05", timeout=15000)
    finally:
        for page in (doctor, expert):
            page.context.close()


def _consents(services, recording: str) -> list[dict]:
    from sqlalchemy import select

    from telemed.db.engine import unit_of_work
    from telemed.db.schema import resource
    from telemed.fhir.store.context import AccessContext

    with unit_of_work(services.engine, write=False) as conn:
        ids = conn.execute(select(resource.c.id).where(resource.c.resource_type == "Consent")).scalars().all()
        repo = services.repository(conn, AccessContext.system())
        found = [repo.read("Consent", i).resource for i in ids]
    return [c for c in found if c.get("identifier", [{}])[0].get("value") == recording]


def test_recording_starts_only_when_everyone_consents_and_is_filed_with_the_consultation(
    browser, services, server, backend
):
    if backend != "sqlite":
        pytest.skip("tested once (SQLite)")
    call = scheduled(services)
    doctor_user, expert_user = _users(services, call)
    doctor = _open_call(browser, server, doctor_user, call.cid)
    expert = _open_call(browser, server, expert_user, call.cid)
    try:
        for page in (doctor, expert):
            _wait_decoding(page)
        # The expert declines: nothing is recorded.
        doctor.click("#btn-record")
        expert.wait_for_selector("#record-consent:not([hidden])", timeout=10000)
        assert "请求录制本次会诊" in expert.inner_text("#record-consent-text")
        assert doctor.is_hidden("#record-indicator")
        assert doctor.evaluate("() => window.telemedCall.state.recorder") is None
        expert.click("#btn-decline")
        doctor.wait_for_selector("#media-notice:has-text('有参会人员不同意')", timeout=10000)
        declined = doctor.evaluate("() => window.telemedCall.state.recording.id")
        assert doctor.evaluate("() => window.telemedCall.state.recorder") is None
        # Asked again, the expert agrees: recording is on, and both pages say so.
        doctor.click("#btn-record")
        expert.wait_for_selector("#record-consent:not([hidden])", timeout=10000)
        expert.click("#btn-consent")
        for page in (doctor, expert):
            page.wait_for_selector("#record-indicator:not([hidden])", timeout=10000)
        recording = doctor.evaluate("() => window.telemedCall.state.recorder.id")
        assert recording != declined
        if SHOTS.exists():
            expert.screenshot(path=str(SHOTS / "video-recording.png"), full_page=True)
        time.sleep(4)
        doctor.click("#btn-record")  # stop: the page uploads the recording
        expert.wait_for_selector("#record-indicator[hidden]", state="attached", timeout=10000)
        doctor.wait_for_function("() => window.telemedCall.state.savedRecordings.length === 1 || "
                                 "window.telemedCall.state.recordError", timeout=30000)  # fmt: skip
        assert doctor.evaluate("() => window.telemedCall.state.recordError") is None
        doc_id = doctor.evaluate("() => window.telemedCall.state.savedRecordings[0]")
        # Filed as the consultation's DocumentReference, bytes in the blob store; a real WebM with frames.
        got = doctor.request.get(f"{server.url}/portal/consultations/{call.cid}/attachments/{doc_id}")
        assert got.status == 200 and got.body()[:4] == b"\x1a\x45\xdf\xa3" and len(got.body()) > 20_000
        from tests.consultation.test_service import read

        doc = read(services, call.net.ctx("requester"), "DocumentReference", doc_id)
        assert doc["content"][0]["attachment"]["contentType"] == "video/webm"
        assert doc["context"]["encounter"] == [{"reference": f"Encounter/{call.encounter}"}]
        from telemed.fhir.store.retention import hold_of  # kept at least 3 years: the store refuses a delete

        assert (hold_of(doc) - services.clock.now()).days >= 3 * 365
        sr = read(services, call.net.ctx("requester"), "ServiceRequest", call.cid)
        assert {"reference": f"DocumentReference/{doc_id}"} in sr["supportingInfo"]
        # Each answer is a FHIR Consent: both agreed to this recording; the expert refused the first.
        agreed = _consents(services, recording)
        assert len(agreed) == 2 and len({c["performer"][0]["reference"] for c in agreed}) == 2
        assert all(c["status"] == "active" and c["provision"]["type"] == "permit" for c in agreed)
        refused = _consents(services, declined)
        assert [c["provision"]["type"] for c in refused if c["status"] == "rejected"] == ["deny"]
        # A recording nobody agreed to is refused by the server.
        bad = doctor.evaluate("""async (cid) => {
            const csrf = document.querySelector('meta[name=csrf-token]').content;
            const r = await fetch(`/portal/consultations/${cid}/video/recordings`, {method: "POST",
              headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf},
              body: JSON.stringify({recording: "0000000000000000", upload: "nothing"})});
            return r.status; }""", call.cid)  # fmt: skip
        assert bad == 403
    finally:
        for page in (doctor, expert):
            page.context.close()


def test_camera_access_denied_shows_a_clear_message(browser, services, server, backend):
    if backend != "sqlite":
        pytest.skip("tested once (SQLite)")
    call = scheduled(services)
    doctor_user, _ = _users(services, call)
    # Without the fake UI flag, headless Chromium denies the permission prompt.
    b = browser.browser_type.launch(executable_path=CHROMIUM, args=[*ARGS, "--use-fake-device-for-media-stream"])
    try:
        page = _open_call(b, server, doctor_user, call.cid, lang="en")
        page.wait_for_selector("#media-error:not([hidden])", timeout=10000)
        assert "denied access to the camera" in page.inner_text("#media-error")
        page.wait_for_function("() => window.telemedCall.state.socketOpens >= 1")  # still joins, to see and hear
    finally:
        b.close()


@pytest.fixture
def coturn():
    binary = shutil.which("turnserver")
    if binary is None:
        pytest.skip("coturn is not installed (make system-deps)")
    port, secret = free_port(), secrets.token_hex(16)
    low = 49152 + (port % 1000) * 10
    proc = subprocess.Popen(
        [binary, "-n", "--listening-ip=127.0.0.1", f"--listening-port={port}", "--relay-ip=127.0.0.1",
         "--use-auth-secret", f"--static-auth-secret={secret}", "--realm=telemed.test", "--allow-loopback-peers",
         "--no-tls", "--no-dtls", "--no-cli", f"--min-port={low}", f"--max-port={low + 9}", "--simple-log",
         "--log-file=stdout", "--no-stun"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    time.sleep(0.7)
    if proc.poll() is not None:
        pytest.fail(f"turnserver exited: {proc.stdout.read().decode(errors='replace')[-2000:]}")
    yield f"turn:127.0.0.1:{port}", secret
    proc.terminate()
    proc.wait(5)


def test_the_call_connects_through_turn_when_only_relay_is_allowed(browser, services, server, backend, coturn):
    if backend != "sqlite":
        pytest.skip("tested once (SQLite)")
    url, secret = coturn
    settings = services.settings
    saved = settings.turn_urls, settings.turn_secret, settings.turn_relay_only
    settings.turn_urls, settings.turn_secret, settings.turn_relay_only = f"{url}?transport=udp,{url}?transport=tcp", \
        secret, True  # fmt: skip
    try:
        call = scheduled(services)
        doctor_user, expert_user = _users(services, call)
        doctor = _open_call(browser, server, doctor_user, call.cid)
        expert = _open_call(browser, server, expert_user, call.cid)
        for page, user in ((doctor, doctor_user), (expert, expert_user)):
            stats = _wait_decoding(page)
            assert stats[0]["candidate"] == "relay", stats
            expiry, _, name = page.evaluate("() => window.telemedCall.state.iceServers[0].username").partition(":")
            assert name == user and int(expiry) > time.time()  # a credential of this participant, short-lived
        for page in (doctor, expert):
            page.context.close()
    finally:
        settings.turn_urls, settings.turn_secret, settings.turn_relay_only = saved


def test_three_participants_of_an_mdt_each_receive_the_other_two(browser, services, server, backend):
    if backend != "sqlite":
        pytest.skip("tested once (SQLite)")
    from telemed.consultation import workflow as wf

    call = scheduled(services, kind=wf.MDT)
    users = (call.net.requester, call.net.experts[0], call.net.experts[1])
    for user in users:
        set_password(services, user)
    pages = [_open_call(browser, server, user, call.cid) for user in users]
    try:
        for page in pages:
            stats = _wait_decoding(page, peers=2, timeout=60)
            assert len({s["peer"] for s in stats}) == 2
            assert page.evaluate("() => window.telemedCall.state.mode") == "mesh"
            assert page.is_visible("#mesh-notice")  # no SFU configured: the page says it is a mesh of at most 4
    finally:
        for page in pages:
            page.context.close()


@pytest.fixture(scope="module")
def janus_url(tmp_path_factory):
    with janus(tmp_path_factory.mktemp("janus-browser")) as url:
        yield url


# The ICE username fragments in use: the publisher's own, and Janus's for each feed (sorted by feed).
UFRAGS_JS = """() => { const s = window.telemedCall.state;
  const ufrag = d => ((d && d.sdp.match(/a=ice-ufrag:(\\S+)/)) || [])[1];
  return {pub: ufrag(s.sfuPub.localDescription),
          feeds: Array.from(s.pcs.values()).sort((a, b) => a.feed - b.feed)
                   .map(p => ({ufrag: ufrag(p.pc.remoteDescription), state: p.pc.connectionState}))}; }"""
REMOTE_VIDEOS_JS = """() => Array.from(document.querySelectorAll('#video-grid figure.tile:not(.tile-local) video'))
  .map(v => ({w: v.videoWidth, h: v.videoHeight}))"""


def test_an_mdt_goes_through_janus_and_each_of_three_receives_the_other_two(
    browser, services, server, backend, janus_url, monkeypatch
):
    if backend != "sqlite":
        pytest.skip("tested once (SQLite)")
    from telemed.consultation import workflow as wf

    monkeypatch.setattr(services.settings, "janus_url", janus_url)  # undone after the test
    pages = []
    try:
        call = scheduled(services, kind=wf.MDT)
        users = (call.net.requester, call.net.experts[0], call.net.experts[1])
        for user in users:
            set_password(services, user)
        pages = [_open_call(browser, server, user, call.cid) for user in users]
        for page in pages:
            stats = _wait_decoding(page, peers=2, timeout=60)
            assert len({s["peer"] for s in stats}) == 2
            state = page.evaluate("() => { const s = window.telemedCall.state;"
                                  " return {mode: s.mode, feeds: s.feeds.size, pub: s.sfuPub.connectionState}; }")
            assert state == {"mode": "sfu", "feeds": 2, "pub": "connected"}  # one upload, two feeds from Janus
            page.wait_for_function(f"() => ({REMOTE_VIDEOS_JS})().filter(v => v.w > 0).length === 2", timeout=20000)
            assert not page.is_visible("#mesh-notice")
        # The page never learnt where Janus is, nor the room's number or pin.
        html = pages[0].content()
        assert janus_url.split("//")[1].split("/")[0] not in html
        if SHOTS.exists():
            pages[0].screenshot(path=str(SHOTS / "video-mdt-janus.png"), full_page=True)
        # A new network path (as after a network change): the publisher and both feeds renegotiate
        # with new ICE credentials, on the same connections, and the video goes on.
        before = pages[0].evaluate(UFRAGS_JS)
        pages[0].evaluate("() => window.telemedCall.restartSfu()")
        pages[0].wait_for_function(
            f"""() => {{ const now = ({UFRAGS_JS})(), was = {json.dumps(before)};
              return now.pub !== was.pub && now.feeds.length === 2
                && now.feeds.every((f, i) => f.ufrag !== was.feeds[i].ufrag && f.state === "connected"); }}""",
            timeout=30000,
        )
        _wait_decoding(pages[0], peers=2, timeout=30)
        # One leaves: the other two drop its feed.
        pages[2].click("#btn-leave")
        for page in pages[:2]:
            page.wait_for_function("() => window.telemedCall.peers().length === 1", timeout=15000)
    finally:
        for page in pages:
            page.context.close()


def test_in_a_janus_room_a_page_without_camera_still_sees_the_others(
    browser, services, server, backend, janus_url, monkeypatch
):
    if backend != "sqlite":
        pytest.skip("tested once (SQLite)")
    from telemed.consultation import workflow as wf

    monkeypatch.setattr(services.settings, "janus_url", janus_url)  # undone after the test
    pages = []
    # Without the fake UI flag, headless Chromium denies the permission prompt: no camera, no microphone.
    denied = browser.browser_type.launch(executable_path=CHROMIUM, args=[*ARGS, "--use-fake-device-for-media-stream"])
    try:
        call = scheduled(services, kind=wf.MDT)
        users = (call.net.requester, call.net.experts[0], call.net.experts[1])
        for user in users:
            set_password(services, user)
        pages = [_open_call(browser, server, user, call.cid) for user in users[:2]]
        watcher = _open_call(denied, server, users[2], call.cid, lang="en")
        watcher.wait_for_selector("#media-error:not([hidden])", timeout=10000)
        watcher.wait_for_function(f"() => ({REMOTE_VIDEOS_JS})().filter(v => v.w > 0).length === 2", timeout=60000)
        state = watcher.evaluate("() => { const s = window.telemedCall.state;"
                                 " return {mode: s.mode, feeds: s.feeds.size, publishing: !!s.sfuPub}; }")  # fmt: skip
        assert state == {"mode": "sfu", "feeds": 2, "publishing": False}  # receives both, sends nothing
        for page in pages:  # the two with cameras still see each other (and no empty feed of the third)
            _wait_decoding(page, peers=1, timeout=60)
    finally:
        for page in pages:
            page.context.close()
        denied.close()
