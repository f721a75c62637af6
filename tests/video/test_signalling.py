"""The signalling socket on the live server: joining, relaying, and every way of being refused."""

from __future__ import annotations

import json
import time
from datetime import timedelta

import jwt
import pytest
from websockets.exceptions import ConnectionClosed

from telemed.video import join as join_tokens
from tests.video.helpers import (
    connect,
    join,
    join_token,
    portal,
    recv,
    scheduled,
    send,
    video_audits,
)  # fmt: skip

SDP = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"


@pytest.fixture
def call(services):
    return scheduled(services)


def _pair(services, server, call):
    doctor, dcsrf = portal(services, server, call.net.requester)
    expert, ecsrf = portal(services, server, call.net.experts[0])
    return (doctor, join_token(doctor, dcsrf, call.cid).json()["token"]), (
        expert, join_token(expert, ecsrf, call.cid).json()["token"])  # fmt: skip


def test_participants_join_and_relay_offer_answer_and_candidates(services, server, call):
    (doctor, dtoken), (expert, etoken) = _pair(services, server, call)
    with connect(server, doctor, call.cid) as a, connect(server, expert, call.cid) as b:
        joined = join(a, dtoken, "peer-doctor-1")
        assert joined["type"] == "joined" and joined["peers"] == [] and joined["iceServers"] == []
        joined_b = join(b, etoken, "peer-expert-1")
        assert [p["peer"] for p in joined_b["peers"]] == ["peer-doctor-1"]
        assert recv(a)["type"] == "peer-joined"
        send(b, {"type": "offer", "to": "peer-doctor-1", "sdp": SDP})
        offer = recv(a)
        assert offer == {"type": "offer", "sdp": SDP, "restart": False, "from": "peer-expert-1"}
        send(a, {"type": "answer", "to": "peer-expert-1", "sdp": SDP})
        assert recv(b)["type"] == "answer"
        cand = {"candidate": "candidate:1 1 udp 2122260223 127.0.0.1 5000 typ host", "sdpMid": "0", "sdpMLineIndex": 0}
        send(a, {"type": "candidate", "to": "peer-expert-1", "candidate": cand})
        assert recv(b)["candidate"] == cand
        send(a, {"type": "ping"})
        assert recv(a, skip=()) == {"type": "pong"}
        send(a, {"type": "leave"})
        assert recv(b) == {"type": "peer-left", "peer": "peer-doctor-1"}


def test_joins_and_leaves_are_recorded_on_the_encounter_and_audited(services, server, call):
    from tests.consultation.test_service import read

    (doctor, dtoken), _ = _pair(services, server, call)
    with connect(server, doctor, call.cid) as a:
        join(a, dtoken, "peer-doctor-2")
        send(a, {"type": "leave"})
        time.sleep(0.5)
    deadline = time.time() + 5
    while time.time() < deadline:
        enc = read(services, call.net.ctx("requester"), "Encounter", call.encounter)
        stays = [p for p in enc.get("participant", []) if p.get("period")]
        if stays and "end" in stays[0]["period"]:
            break
        time.sleep(0.1)
    assert stays[0]["individual"]["reference"] == f"Practitioner/{call.net.requester}"
    assert stays[0]["period"]["start"] <= stays[0]["period"]["end"]
    audits = video_audits(services, call.cid)
    assert (call.net.requester, "0", f"video room: joined (Practitioner/{call.net.requester})") in audits
    assert (call.net.requester, "0", f"video room: left (Practitioner/{call.net.requester})") in audits


def test_chat_is_relayed_and_saved_as_a_communication(services, server, call):
    from telemed.consultation import service
    from tests.consultation.test_service import run

    (doctor, dtoken), (expert, etoken) = _pair(services, server, call)
    with connect(server, doctor, call.cid) as a, connect(server, expert, call.cid) as b:
        join(a, dtoken, "peer-doctor-3")
        join(b, etoken, "peer-expert-3")
        recv(a)  # peer-joined
        send(b, {"type": "chat", "text": "请看第二张CT"})
        for ws in (a, b):
            got = recv(ws)
            assert got["type"] == "chat" and got["text"] == "请看第二张CT" and got["from"] == "peer-expert-3"
    texts = [
        m.resource["payload"][0]["contentString"]
        for m in run(services, call.net.ctx("requester"), lambda repo, env, ctx: service.messages(repo, call.cid))
    ]
    assert "请看第二张CT" in texts  # fmt: skip


def test_forged_expired_foreign_and_stolen_tokens_are_refused_and_audited(services, server, call):
    other = scheduled(services, net=call.net)
    doctor, csrf = portal(services, server, call.net.requester)
    good = join_token(doctor, csrf, call.cid).json()["token"]
    claims = jwt.decode(good, options={"verify_signature": False})
    forged = jwt.encode({**claims, "cid": call.cid}, "not-the-secret-" + "y" * 40, algorithm="HS256")
    now = services.clock.now()
    grant = join_tokens.Grant(call.cid, call.net.requester, call.net.requester, "x", call.encounter, 4)
    expired = join_tokens.mint(services.secret_key, grant, now - timedelta(minutes=10))
    foreign = join_token(doctor, csrf, other.cid).json()["token"]  # a valid token, for another room
    expert, ecsrf = portal(services, server, call.net.experts[0])
    stolen = join_token(expert, ecsrf, call.cid).json()["token"]  # valid for this room, but not this user's
    with connect(server, doctor, call.cid) as ws:
        for token in (forged, expired, foreign, stolen, "garbage", ""):
            answer = join(ws, token, "peer-doctor-4")
            assert answer["type"] == "error" and answer["code"] in ("refused", "malformed"), answer
        assert join(ws, good, "peer-doctor-4")["type"] == "joined"  # the socket survived the refusals
    refusals = [a for a in video_audits(services, call.cid) if a[1] == "4"]
    assert len(refusals) >= 4


def test_no_session_cookie_is_refused(services, server, call):
    from websockets.sync.client import connect as ws_connect

    from tests.video.helpers import ws_url

    with ws_connect(ws_url(server, call.cid)) as ws:
        assert recv(ws)["code"] == "refused"
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=5)


def test_a_participant_of_another_consultation_cannot_open_or_join_the_room(services, server, call):
    # Expert e2 is a participant of another consultation, not of this one.
    other = scheduled(services, net=call.net)
    from telemed.consultation import service
    from tests.consultation.test_service import run

    run(services, call.net.ctx("triage"), service.act, other.cid, "assign", experts=(call.net.experts[1],))
    outsider, csrf = portal(services, server, call.net.experts[1])
    page = outsider.get(f"/portal/consultations/{call.cid}/video")
    assert page.status_code in (403, 404)
    assert join_token(outsider, csrf, call.cid).status_code in (403, 404)
    # ...and the requester of both cannot use this room's token for the other room's socket.
    doctor, dcsrf = portal(services, server, call.net.requester)
    token = join_token(doctor, dcsrf, call.cid).json()["token"]
    with connect(server, doctor, other.cid) as ws:
        assert join(ws, token, "peer-doctor-5") == {"type": "error", "code": "refused", "detail": "invalid-token"}


def test_the_room_is_refused_before_it_opens_and_after_it_closes_with_a_localized_reason(services, server):
    early = scheduled(services, start_in=timedelta(hours=2))
    doctor, csrf = portal(services, server, early.net.requester)
    page = doctor.get(f"/portal/consultations/{early.cid}/video")
    assert page.status_code == 403 and "视频会诊室在会诊开始前15分钟" in page.text
    refused = join_token(doctor, csrf, early.cid)
    assert refused.status_code == 403 and "15分钟" in refused.json()["detail"]
    en, en_csrf = portal(services, server, early.net.requester, lang="en")
    assert "opens 15 minutes before the session" in join_token(en, en_csrf, early.cid).json()["detail"]

    from telemed.consultation import service
    from tests.consultation.test_service import run

    closed = scheduled(services)
    run(services, closed.net.ctx("triage"), service.act, closed.cid, "cancel", reason="患者转院")
    doctor, csrf = portal(services, server, closed.net.requester)
    page = doctor.get(f"/portal/consultations/{closed.cid}/video")
    assert page.status_code == 403 and "视频会诊室已关闭" in page.text
    assert join_token(doctor, csrf, closed.cid).status_code == 403


def test_malformed_and_flooding_clients_are_refused_while_another_room_keeps_working(services, server, call):
    quiet = scheduled(services)
    (doctor, dtoken), (expert, etoken) = _pair(services, server, call)
    q1, q1csrf = portal(services, server, quiet.net.requester)
    q2, q2csrf = portal(services, server, quiet.net.experts[0])
    with connect(server, doctor, call.cid) as bad, connect(server, expert, call.cid) as victim, \
         connect(server, q1, quiet.cid) as a, connect(server, q2, quiet.cid) as b:  # fmt: skip
        join(a, join_token(q1, q1csrf, quiet.cid).json()["token"], "quiet-peer-a")
        join(b, join_token(q2, q2csrf, quiet.cid).json()["token"], "quiet-peer-b")
        recv(a)
        join(victim, etoken, "peer-victim-1")
        send(bad, {"type": "offer", "to": "peer-victim-1", "sdp": SDP})  # before joining
        assert recv(bad)["code"] == "not-joined"
        join(bad, dtoken, "peer-bad-1")
        cases = ["{not json", "[]", json.dumps({"type": "explode"}), json.dumps({"type": "offer", "to": "x"}),
                 json.dumps({"type": "offer", "to": "peer-victim-1", "sdp": 42}),
                 json.dumps({"type": "candidate", "to": "peer-victim-1", "candidate": {"sdpMLineIndex": "a"}}),
                 json.dumps({"type": "chat", "text": ""}), "x" * 70_000,
                 json.dumps({"type": "offer", "to": "quiet-peer-a", "sdp": SDP})]  # another room's peer  # fmt: skip
        for case in cases:
            send(bad, case)
            assert recv(bad)["type"] == "error", case
        # A flood: the token bucket refuses, then the server disconnects the client.
        with pytest.raises(ConnectionClosed):
            for _ in range(2000):
                send(bad, {"type": "state", "audio": True})
            for _ in range(2000):
                recv(bad, timeout=5, skip=("state", "pong", "error"))
        assert bad.close_code == 1008
        # The other room still relays.
        send(a, {"type": "offer", "to": "quiet-peer-b", "sdp": SDP})
        assert recv(b)["from"] == "quiet-peer-a"
        # Nothing of the bad client's reached another room; the victim got at most its state messages.
    audits = video_audits(services, call.cid)
    assert any(a[1] == "4" and "flood" in a[2] for a in audits)


def test_a_page_that_reconnects_within_the_grace_period_keeps_its_place(services, server, call):
    (doctor, dtoken), (expert, etoken) = _pair(services, server, call)
    from tests.portal.conftest import csrf_of

    dcsrf = csrf_of(doctor.get("/portal/consultations"))
    with connect(server, expert, call.cid) as b:
        join(b, etoken, "peer-expert-6")
        with connect(server, doctor, call.cid) as a:
            join(a, dtoken, "peer-doctor-6")
            assert recv(b)["type"] == "peer-joined"
        # the socket dropped (closed without a leave)
        time.sleep(0.3)
        fresh = join_token(doctor, dcsrf, call.cid)
        with connect(server, doctor, call.cid) as a2:
            again = join(a2, fresh.json()["token"], "peer-doctor-6", rejoin=True)
            assert again["resumed"] is True and [p["peer"] for p in again["peers"]] == ["peer-expert-6"]
            send(a2, {"type": "offer", "to": "peer-expert-6", "sdp": SDP, "restart": True})
            got = recv(b)
            assert got["type"] == "offer" and got["restart"] is True  # no peer-left in between


def test_the_invited_external_expert_joins_with_the_guest_session(services, server):
    from telemed.consultation import service
    from tests.consultation.network import build
    from tests.consultation.test_service import run
    from tests.portal.conftest import csrf_of
    from tests.portal.test_invitation_pages import _accepted, _invite, _redeem

    net = build(services)
    cid = _accepted(services, net)
    path, code = _invite(services, server, net, cid)
    run(services, net.ctx("triage"), service.act, cid, "schedule", start=services.clock.now() + timedelta(minutes=10))
    guest, case = _redeem(server, path, code)
    page = guest.get(f"/portal/consultations/{cid}/video")
    assert page.status_code == 200 and 'id="video-call"' in page.text
    token = join_token(guest, csrf_of(guest.get(case)), cid).json()["token"]
    with connect(server, guest, cid) as ws:
        joined = join(ws, token, "peer-guest-1")
        assert joined["type"] == "joined"
    # The guest session is bound to its consultation: another room is as if it did not exist.
    other = scheduled(services, net=net)
    assert guest.get(f"/portal/consultations/{other.cid}/video").status_code == 404


def test_sfu_requests_in_a_mesh_room_and_unanswerable_record_messages_are_refused_without_closing(
    services, server, call
):
    (doctor, dtoken), (expert, etoken) = _pair(services, server, call)
    with connect(server, doctor, call.cid) as a, connect(server, expert, call.cid) as b:
        join(a, dtoken, "peer-doctor-2")
        join(b, etoken, "peer-expert-2")
        assert recv(a)["type"] == "peer-joined"
        send(a, {"type": "sfu-publish", "sdp": SDP})
        assert recv(a) == {"type": "error", "code": "no-sfu", "detail": "this room has no media server"}
        send(b, {"type": "record", "action": "consent"})  # nothing was asked
        assert recv(b)["code"] == "record"
        # Asked by the doctor, answered by the expert: both pages see it go on, then off.
        send(a, {"type": "record", "action": "request"})
        asked = recv(b)
        assert asked["state"] == "asking" and asked["consented"] == ["peer-doctor-2"]
        assert recv(a)["state"] == "asking"
        send(b, {"type": "record", "action": "consent"})
        on = recv(a)
        assert on["state"] == "on" and on["recorder"] == "peer-doctor-2" and recv(b)["state"] == "on"
        send(b, {"type": "record", "action": "stop"})
        assert recv(a)["state"] == "off"
        send(a, {"type": "ping"})
        assert recv(a, skip=("record",)) == {"type": "pong"}  # the socket is still open
