"""The pure parts: room opening hours, join tokens, TURN credentials, message validation."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from telemed.video import join, protocol, recording, room, turn

START = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
SPEC = room.RoomSpec("c1", "room-1", frozenset({"doc", "exp"}), START, live=True, encounter="c1")


@pytest.mark.parametrize(
    ("who", "now", "spec", "code"),
    [
        ("doc", START - timedelta(minutes=15), SPEC, None),
        ("exp", START + timedelta(hours=3), SPEC, None),  # a long session: open until the consultation ends
        ("doc", START - timedelta(minutes=16), SPEC, room.TOO_EARLY),
        ("nurse", START, SPEC, room.NOT_PARTICIPANT),
        (None, START, SPEC, room.NOT_PARTICIPANT),
        ("doc", START, room.RoomSpec("c1", "room-1", frozenset({"doc"}), START, live=False), room.CLOSED),
        ("doc", START, room.RoomSpec("c1", None, frozenset({"doc"}), None, live=True), room.NOT_SCHEDULED),
    ],
)
def test_who_may_join_and_when(who, now, spec, code):
    if code is None:
        room.admit(spec, who, now)
    else:
        with pytest.raises(room.Refused) as refused:
            room.admit(spec, who, now)
        assert refused.value.code == code


def test_join_tokens_are_bound_to_room_and_time():
    grant = join.Grant("c1", "doc", "doc", "王医生", "c1", 4)
    token = join.mint("s" * 40, grant, START)
    assert join.verify("s" * 40, token, "c1", START + timedelta(seconds=60)) == grant
    for secret, cid, at in (("t" * 40, "c1", START), ("s" * 40, "c2", START),
                            ("s" * 40, "c1", START + timedelta(seconds=join.TTL_SECONDS))):  # fmt: skip
        with pytest.raises(join.InvalidJoinToken):
            join.verify(secret, token, cid, at)


def test_turn_rest_api_credentials():
    username, password = turn.credential("sekrit", "doc", START, 600)
    assert username == f"{int(START.timestamp()) + 600}:doc"
    assert password == base64.b64encode(hmac.new(b"sekrit", username.encode(), hashlib.sha1).digest()).decode()
    servers = turn.ice_servers(["stun:t.example:3478", "turn:t.example:3478", "turns:t.example:5349?transport=tcp"],
                               "sekrit", "doc", START)  # fmt: skip
    assert servers[0] == {"urls": ["stun:t.example:3478"]}
    assert servers[1]["urls"] == ["turn:t.example:3478", "turns:t.example:5349?transport=tcp"]
    assert turn.ice_servers(["turn:t.example:3478"], None, "doc", START) == []  # no secret, no TURN
    assert turn.ice_servers([], "sekrit", "doc", START) == []


def test_valid_messages_keep_only_their_fields():
    msg = protocol.parse('{"type":"offer","to":"peer-abcdef","sdp":"v=0\\r\\n","extra":1}')
    assert msg == {"type": "offer", "to": "peer-abcdef", "sdp": "v=0\r\n", "restart": False}
    assert protocol.parse('{"type":"candidate","to":"peer-abcdef","candidate":null}')["candidate"] is None


def test_sfu_messages_name_a_feed_and_an_sdp_but_never_a_room():
    assert protocol.parse('{"type":"sfu-publish","sdp":"v=0\\r\\n","room":1234,"pin":"x"}') == {
        "type": "sfu-publish", "sdp": "v=0\r\n"}  # a room or pin from the page is dropped: the server names them
    assert protocol.parse('{"type":"sfu-subscribe","feed":42}') == {"type": "sfu-subscribe", "feed": 42}
    assert protocol.parse('{"type":"sfu-start","feed":42,"sdp":"v=0"}')["feed"] == 42
    for bad in ('{"type":"sfu-subscribe","feed":"42"}', '{"type":"sfu-subscribe","feed":true}',
                '{"type":"sfu-subscribe","feed":-1}', '{"type":"sfu-start","feed":42}', '{"type":"sfu-publish"}'):
        with pytest.raises(protocol.ProtocolError):
            protocol.parse(bad)


def test_join_tokens_carry_the_media_mode():
    grant = join.Grant("c1", "doc", "doc", "王医生", "c1", 12, mode="sfu")
    assert join.verify("s" * 40, join.mint("s" * 40, grant, START), "c1", START).mode == "sfu"


@given(st.one_of(st.text(max_size=300), st.binary(max_size=300).map(lambda b: b.decode("latin-1")),
                 st.recursive(st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=20),
                              lambda c: st.lists(c, max_size=4) | st.dictionaries(st.sampled_from(
                                  ["type", "to", "sdp", "candidate", "token", "peer", "text", "audio"]), c, max_size=5),
                              max_leaves=12).map(protocol.dumps)))  # fmt: skip
def test_any_input_is_either_a_valid_message_or_a_protocol_error(text):
    try:
        msg = protocol.parse(text)
    except protocol.ProtocolError as exc:
        assert exc.code in ("malformed", "unknown-type", "too-large")
    else:
        assert msg["type"] in protocol.TYPES


def test_the_token_bucket_allows_bursts_then_the_rate():
    now = [0.0]
    bucket = protocol.TokenBucket(rate=10, burst=5, clock=lambda: now[0])
    assert [bucket.allow() for _ in range(6)] == [True] * 5 + [False]
    now[0] += 0.5
    assert sum(bucket.allow() for _ in range(10)) == 5


def test_recording_needs_everyone_present_to_consent():
    recs = recording.Recordings()
    rec = recs.request("c1", "pa", "doc", {"pa", "pb", "pc"})
    assert rec.state == recording.ASKING and rec.consented == {"pa"}  # asking is the requester's consent
    assert recs.accepted(rec.id, "c1", "doc") is None
    assert recs.consent("c1", "pb", "e1").state == recording.ASKING
    assert recs.consent("c1", "px", "intruder") is None  # not in the room when asked
    assert recs.consent("c1", "pc", "e2").state == recording.ON
    assert recs.accepted(rec.id, "c1", "doc") is rec
    assert recs.accepted(rec.id, "c1", "e1") is None and recs.accepted(rec.id, "c2", "doc") is None
    assert recs.joined("c1", "pd").state == recording.OFF  # a newcomer has not consented
    again = recs.request("c1", "pb", "e1", {"pa", "pb"})
    assert again.id != rec.id
    assert recs.decline("c1", "pa").state == recording.OFF
    assert recs.accepted(again.id, "c1", "e1") is None
    third = recs.request("c1", "pa", "doc", {"pa", "pb"})
    assert third.consented == {"pa"}
    assert recs.left("c1", "pb").state == recording.ON  # the only one left to ask went away
    assert recs.left("c1", "pa").state == recording.OFF  # the recorder left


def test_record_messages_need_a_known_action():
    assert protocol.parse('{"type":"record","action":"consent"}') == {"type": "record", "action": "consent"}
    with pytest.raises(protocol.ProtocolError):
        protocol.parse('{"type":"record","action":"force"}')
