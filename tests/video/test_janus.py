"""MDT rooms on Janus (VideoRoom): three aiortc participants each publish once and receive the
other two through the SFU. Janus is started by the test with its own config folder and port."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from telemed.video.janus import Janus, JanusBackend, room_number
from telemed.video.room import RoomSpec
from tests.conftest import free_port

aiortc = pytest.importorskip("aiortc")
KEEP_PLUGINS = ("libjanus_videoroom.so",)
KEEP_TRANSPORTS = ("libjanus_http.so",)


@pytest.fixture(scope="module")
def janus_url(tmp_path_factory):
    binary = shutil.which("janus")
    if binary is None or not Path("/etc/janus/janus.jcfg").exists():
        pytest.skip("Janus is not installed (make system-deps)")
    folder = tmp_path_factory.mktemp("janus")
    port = free_port()
    plugins = [p.name for p in Path("/usr/lib/x86_64-linux-gnu/janus/plugins").glob("*.so")]
    transports = [p.name for p in Path("/usr/lib/x86_64-linux-gnu/janus/transports").glob("*.so")]
    events = [p.name for p in Path("/usr/lib/x86_64-linux-gnu/janus/events").glob("*.so")]
    loggers = [p.name for p in Path("/usr/lib/x86_64-linux-gnu/janus/loggers").glob("*.so")]
    main = Path("/etc/janus/janus.jcfg").read_text()
    disable = (f'plugins: {{\n\tdisable = "{",".join(p for p in plugins if p not in KEEP_PLUGINS)}"\n}}\n'
               f'transports: {{\n\tdisable = "{",".join(t for t in transports if t not in KEEP_TRANSPORTS)}"\n}}\n'
               f'events: {{\n\tdisable = "{",".join(events)}"\n}}\n'
               f'loggers: {{\n\tdisable = "{",".join(loggers)}"\n}}\n')  # fmt: skip
    main = re.sub(r"^plugins: \{.*?^\}", "", main, flags=re.S | re.M)
    main = re.sub(r"^transports: \{.*?^\}", "", main, flags=re.S | re.M)
    main = re.sub(r"^events: \{.*?^\}", "", main, flags=re.S | re.M)
    main = re.sub(r"^loggers: \{.*?^\}", "", main, flags=re.S | re.M)
    (folder / "janus.jcfg").write_text(main + disable)
    (folder / "janus.transport.http.jcfg").write_text(
        f'general: {{\n\tbase_path = "/janus"\n\thttp = true\n\tport = {port}\n\tip = "127.0.0.1"\n'
        '\thttps = false\n}\nadmin: {\n\tadmin_http = false\n}\n'
    )  # fmt: skip
    (folder / "janus.plugin.videoroom.jcfg").write_text("general: {\n}\n")
    log = folder / "janus.log"
    proc = subprocess.Popen([binary, "-F", str(folder), "-L", str(log), "-N", "-r", f"{port + 1000}-{port + 1200}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    url = f"http://127.0.0.1:{port}/janus"
    deadline = time.time() + 15
    while True:
        try:
            if httpx.get(url + "/info", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            pytest.fail(f"Janus did not start: {log.read_text()[-3000:] if log.exists() else ''}")
        time.sleep(0.2)
    yield url
    proc.terminate()
    proc.wait(10)


SPEC = RoomSpec("c-janus-test", "room-mdt", frozenset({"a", "b", "c"}), datetime.now(UTC), live=True, group=True)


def test_the_backend_creates_the_consultations_room_once(janus_url):
    backend = JanusBackend(janus_url)
    config = backend.client_config(SPEC)
    assert config == {"mode": "sfu", "janus": janus_url, "room": room_number("c-janus-test")}
    assert backend.ensure_room(SPEC) == config["room"]  # exists already: not created twice
    backend.destroy_room(SPEC)


async def _participant(url: str, room: int, name: str):
    from aiortc import RTCPeerConnection, RTCSessionDescription
    from aiortc.mediastreams import VideoStreamTrack

    janus = await asyncio.to_thread(lambda: Janus(url).connect())
    pub = await asyncio.to_thread(janus.attach)
    await asyncio.to_thread(janus.send, pub, {"request": "join", "ptype": "publisher", "room": room, "display": name})
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
    return {"janus": janus, "pc": pc, "id": joined["plugindata"]["data"]["id"], "name": name, "subs": []}


async def _subscribe(url: str, room: int, me: dict, feed: int) -> asyncio.Future:
    from aiortc import RTCPeerConnection, RTCSessionDescription

    janus = me["janus"]
    handle = await asyncio.to_thread(janus.attach)
    body = {"request": "join", "ptype": "subscriber", "room": room, "streams": [{"feed": feed}]}
    await asyncio.to_thread(janus.send, handle, body)
    offer = await asyncio.to_thread(janus.event, handle, 10, lambda e: "jsep" in e)
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
    room = await asyncio.to_thread(JanusBackend(url).ensure_room, SPEC)
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
