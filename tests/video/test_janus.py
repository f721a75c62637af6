"""MDT rooms on Janus (VideoRoom): three aiortc participants each publish once and receive the
other two through the SFU. Janus is started by the test with its own config folder and port."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from telemed.video.janus import Janus, JanusBackend, room_number
from telemed.video.room import RoomSpec
from tests.video.janus_server import janus

aiortc = pytest.importorskip("aiortc")


@pytest.fixture(scope="module")
def janus_url(tmp_path_factory):
    with janus(tmp_path_factory.mktemp("janus")) as url:
        yield url


SPEC = RoomSpec("c-janus-test", "room-mdt", frozenset({"a", "b", "c"}), datetime.now(UTC), live=True, group=True)
PIN = JanusBackend("", key="k" * 32).pin(SPEC)


def test_the_backend_creates_the_consultations_room_once(janus_url):
    backend = JanusBackend(janus_url, key="k" * 32)
    config = backend.client_config(SPEC)
    assert config == {"mode": "sfu"}  # the page never learns Janus's address, the room number or its pin
    assert backend.ensure_room(SPEC) == room_number("c-janus-test")  # exists already: not created twice
    # Without the room's pin Janus refuses a publisher (a client that reached Janus directly).
    client = Janus(janus_url).connect()
    try:
        handle = client.attach()
        client.send(handle, {"request": "join", "ptype": "publisher", "room": room_number("c-janus-test")})
        refused = client.event(handle, 10)
        assert "error" in refused["plugindata"]["data"]
    finally:
        client.close()
    backend.destroy_room(SPEC)


async def _participant(url: str, room: int, name: str):
    from aiortc import RTCPeerConnection, RTCSessionDescription
    from aiortc.mediastreams import VideoStreamTrack

    janus = await asyncio.to_thread(lambda: Janus(url).connect())
    pub = await asyncio.to_thread(janus.attach)
    await asyncio.to_thread(janus.send, pub, {"request": "join", "ptype": "publisher", "room": room, "display": name,
                                                "pin": PIN})
    joined = await asyncio.to_thread(
        janus.event, pub, 10, lambda e: e["plugindata"]["data"].get("videoroom") == "joined"
    )
    pc = RTCPeerConnection()
    pc.addTrack(VideoStreamTrack())
    await pc.setLocalDescription(await pc.createOffer())
    offer = {"type": "offer", "sdp": pc.localDescription.sdp}
    await asyncio.to_thread(janus.send, pub, {"request": "configure", "audio": False, "video": True}, offer)
    answer = await asyncio.to_thread(janus.event, pub, 10, lambda e: "jsep" in e)
    await pc.setRemoteDescription(RTCSessionDescription(answer["jsep"]["sdp"], "answer"))
    # Janus offers a feed to subscribers only once its publisher's media is up (ICE + DTLS), which
    # takes a while on a loaded machine; a browser subscribes when Janus announces the publisher.
    for _ in range(300):
        if pc.connectionState == "connected":
            break
        await asyncio.sleep(0.1)
    assert pc.connectionState == "connected", f"{name} did not connect to Janus: {pc.connectionState}"
    return {"janus": janus, "pc": pc, "id": joined["plugindata"]["data"]["id"], "name": name, "subs": []}


async def _subscribe(url: str, room: int, me: dict, feed: int) -> asyncio.Future:
    from aiortc import RTCPeerConnection, RTCSessionDescription

    janus = me["janus"]
    handle = await asyncio.to_thread(janus.attach)
    body = {"request": "join", "ptype": "subscriber", "room": room, "pin": PIN, "streams": [{"feed": feed}]}
    await asyncio.to_thread(janus.send, handle, body)
    reply = await asyncio.to_thread(
        janus.event, handle, 20, lambda e: "jsep" in e or "error" in e["plugindata"]["data"]
    )
    assert "jsep" in reply, reply["plugindata"]["data"]
    offer = reply
    pc = RTCPeerConnection()
    got = asyncio.get_running_loop().create_future()

    @pc.on("track")
    def on_track(track):
        async def frames():
            for _ in range(3):
                await track.recv()
            if not got.done():
                got.set_result(feed)

        asyncio.ensure_future(frames())

    await pc.setRemoteDescription(RTCSessionDescription(offer["jsep"]["sdp"], "offer"))
    await pc.setLocalDescription(await pc.createAnswer())
    answer = {"type": "answer", "sdp": pc.localDescription.sdp}
    await asyncio.to_thread(janus.send, handle, {"request": "start"}, answer)
    me["subs"].append(pc)
    return got


async def _mdt(url: str) -> dict[str, set[int]]:
    backend = JanusBackend(url, key="k" * 32)
    room = await asyncio.to_thread(backend.ensure_room, SPEC)
    people = [await _participant(url, room, n) for n in ("requester", "expert-1", "expert-2")]
    try:
        waits = {p["name"]: [await _subscribe(url, room, p, q["id"]) for q in people if q is not p] for p in people}
        received = {}
        for name, futures in waits.items():
            received[name] = set(await asyncio.wait_for(asyncio.gather(*futures), 30))
        return {"ids": {p["name"]: p["id"] for p in people}, **received}
    finally:
        for p in people:
            for pc in (p["pc"], *p["subs"]):
                await pc.close()
            await asyncio.to_thread(p["janus"].close)


def test_three_participants_each_receive_the_other_two_through_janus(janus_url):
    out = asyncio.run(_mdt(janus_url))
    ids = out.pop("ids")
    for name, feeds in out.items():
        assert feeds == {i for n, i in ids.items() if n != name}, name


async def _watcher(url: str) -> list[dict]:
    from telemed.video.sfu import SfuParticipant

    backend = JanusBackend(url, key="k" * 32)
    room = await asyncio.to_thread(backend.ensure_room, SPEC)
    speaker = await _participant(url, room, "expert-1")
    got: asyncio.Queue = asyncio.Queue()

    async def deliver(msg: dict) -> None:
        await got.put(msg)

    async def next_of(kind: str) -> dict:
        while True:
            msg = await asyncio.wait_for(got.get(), 20)
            assert msg["type"] != "error", msg
            if msg["type"] == kind:
                return msg

    watcher = SfuParticipant(url, room, PIN, "no-camera-page", deliver)
    try:
        await watcher.watch()  # the page has no camera nor microphone: it sends no offer
        listed = await next_of("sfu-publishers")
        await watcher.subscribe(speaker["id"])
        offer = await next_of("sfu-offer")
        return [listed, offer]
    finally:
        await watcher.close()
        await speaker["pc"].close()
        await asyncio.to_thread(speaker["janus"].close)


def test_a_page_without_camera_or_microphone_receives_the_others(janus_url):
    listed, offer = asyncio.run(_watcher(janus_url))
    feed = listed["feeds"][0]["feed"]
    assert [f["peer"] for f in listed["feeds"]] == ["expert-1"]
    assert offer["feed"] == feed and offer["sdp"].startswith("v=0")
