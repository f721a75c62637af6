"""Two app instances sharing the database and Redis: the two participants of a call reach
different instances and still see each other join, exchange offer/answer and chat, and leave."""

from __future__ import annotations

import time

import pytest

from telemed.app import Services, create_app
from telemed.db.migrate import upgrade
from tests.conftest import LiveServer, make_settings
from tests.video.helpers import connect, join, join_token, portal, recv, scheduled, send

SDP = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"


def _two_instances(tmp_path, backend) -> tuple[Services, Services]:
    """Two app instances on one database and one Redis (skips without Redis; SQLite only)."""
    if backend != "sqlite":
        pytest.skip("the fan-out does not depend on the store")
    import redis

    try:
        redis.Redis.from_url("redis://127.0.0.1:6379/0").ping()
    except redis.ConnectionError:
        pytest.skip("Redis is not running on 127.0.0.1:6379")
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path}/shared.db").model_copy(
        update={"broker_url": "redis://127.0.0.1:6379/0"}
    )
    a, b = Services.from_settings(settings), Services.from_settings(settings)
    upgrade(a.engine)
    return a, b


def test_a_call_spans_two_instances_through_redis(tmp_path, backend):
    a, b = _two_instances(tmp_path, backend)
    call = scheduled(a)
    with LiveServer(create_app(a)) as server_a, LiveServer(create_app(b)) as server_b:
        doctor, dcsrf = portal(a, server_a, call.net.requester)
        expert, ecsrf = portal(b, server_b, call.net.experts[0])
        dtoken = join_token(doctor, dcsrf, call.cid).json()["token"]
        etoken = join_token(expert, ecsrf, call.cid).json()["token"]
        with connect(server_a, doctor, call.cid) as ws_a, connect(server_b, expert, call.cid) as ws_b:
            assert join(ws_a, dtoken, "peer-on-a")["peers"] == []
            time.sleep(0.3)  # A's presence crosses Redis (joins that cross are settled by the page: video.js)
            joined = join(ws_b, etoken, "peer-on-b")
            assert [p["peer"] for p in joined["peers"]] == ["peer-on-a"]  # known from instance A
            assert recv(ws_a)["peer"] == "peer-on-b"  # peer-joined, through Redis
            send(ws_b, {"type": "offer", "to": "peer-on-a", "sdp": SDP})
            assert recv(ws_a) == {"type": "offer", "sdp": SDP, "restart": False, "from": "peer-on-b"}
            send(ws_a, {"type": "answer", "to": "peer-on-b", "sdp": SDP})
            got = recv(ws_b)
            assert got.get("from") == "peer-on-a", got
            send(ws_a, {"type": "chat", "text": "两个实例之间"})
            assert recv(ws_b)["text"] == recv(ws_a)["text"] == "两个实例之间"
            send(ws_a, {"type": "leave"})
            assert recv(ws_b) == {"type": "peer-left", "peer": "peer-on-a"}


def test_recording_consent_spans_two_instances(tmp_path, backend):
    """The request reaches the instance holding one page, the consent the other's: both instances
    see it on, and the upload would be accepted by either."""
    from telemed.portal.video import switchboard

    a, b = _two_instances(tmp_path, backend)
    call = scheduled(a)
    app_a, app_b = create_app(a), create_app(b)
    with LiveServer(app_a) as server_a, LiveServer(app_b) as server_b:
        doctor, dcsrf = portal(a, server_a, call.net.requester)
        expert, ecsrf = portal(b, server_b, call.net.experts[0])
        dtoken = join_token(doctor, dcsrf, call.cid).json()["token"]
        etoken = join_token(expert, ecsrf, call.cid).json()["token"]
        with connect(server_a, doctor, call.cid) as ws_a, connect(server_b, expert, call.cid) as ws_b:
            join(ws_a, dtoken, "rec-peer-a")
            time.sleep(0.3)
            join(ws_b, etoken, "rec-peer-b")
            assert recv(ws_a)["peer"] == "rec-peer-b"
            send(ws_a, {"type": "record", "action": "request"})
            asking = recv(ws_b)
            assert asking["type"] == "record" and asking["state"] == "asking"
            assert asking["required"] == ["rec-peer-a", "rec-peer-b"] and recv(ws_a)["state"] == "asking"
            time.sleep(0.3)  # the request crosses Redis to instance B
            send(ws_b, {"type": "record", "action": "consent"})  # answered on the other instance
            on_b, on_a = recv(ws_b), recv(ws_a)
            assert on_a["state"] == on_b["state"] == "on" and on_a["id"] == asking["id"]
            time.sleep(0.3)
            for app in (app_a, app_b):  # the recorder's upload is accepted whichever instance it reaches
                assert switchboard(app).recordings.accepted(asking["id"], call.cid, call.net.requester) is not None
