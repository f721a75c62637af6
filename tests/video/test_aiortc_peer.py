"""Browserless peers (aiortc) make a real WebRTC call through the platform's signalling: the
newcomer offers, the other answers, and video frames arrive (host candidates on loopback)."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.video.helpers import join_token, portal, scheduled, ws_url

aiortc = pytest.importorskip("aiortc")


async def _recv(ws, *types: str) -> dict:
    while True:
        msg = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if msg["type"] in types:
            return msg


async def _call(server, sessions, cid: str) -> int:
    from aiortc import RTCPeerConnection, RTCSessionDescription
    from aiortc.mediastreams import VideoStreamTrack
    from websockets.asyncio.client import connect

    (doctor, dtoken), (expert, etoken) = sessions
    cookie = lambda c: "; ".join(f"{k}={v}" for k, v in c.cookies.items())  # noqa: E731
    async with connect(ws_url(server, cid), additional_headers={"Cookie": cookie(expert)}) as b, \
               connect(ws_url(server, cid), additional_headers={"Cookie": cookie(doctor)}) as a:  # fmt: skip
        await b.send(json.dumps({"type": "join", "token": etoken, "peer": "aiortc-expert"}))
        await _recv(b, "joined")
        await a.send(json.dumps({"type": "join", "token": dtoken, "peer": "aiortc-doctor"}))
        joined = await _recv(a, "joined")
        assert [p["peer"] for p in joined["peers"]] == ["aiortc-expert"]

        caller, callee = RTCPeerConnection(), RTCPeerConnection()
        got = asyncio.get_running_loop().create_future()

        @callee.on("track")
        def on_track(track):
            async def frames():
                for _ in range(3):
                    frame = await track.recv()
                if not got.done():
                    got.set_result(frame.width)

            asyncio.ensure_future(frames())

        try:
            caller.addTrack(VideoStreamTrack())
            await caller.setLocalDescription(await caller.createOffer())  # aiortc gathers before returning
            await a.send(json.dumps({"type": "offer", "to": "aiortc-expert", "sdp": caller.localDescription.sdp}))
            offer = await _recv(b, "offer")
            assert offer["from"] == "aiortc-doctor"
            await callee.setRemoteDescription(RTCSessionDescription(offer["sdp"], "offer"))
            await callee.setLocalDescription(await callee.createAnswer())
            await b.send(json.dumps({"type": "answer", "to": "aiortc-doctor", "sdp": callee.localDescription.sdp}))
            answer = await _recv(a, "answer")
            await caller.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
            width = await asyncio.wait_for(got, 20)
            assert caller.connectionState == "connected"
            return width
        finally:
            await caller.close()
            await callee.close()


def test_two_aiortc_peers_connect_through_the_signalling(services, server, backend):
    if backend != "sqlite":
        pytest.skip("the media path does not depend on the store")
    call = scheduled(services)
    sessions = []
    for user in (call.net.requester, call.net.experts[0]):
        client, csrf = portal(services, server, user)
        sessions.append((client, join_token(client, csrf, call.cid).json()["token"]))
    assert asyncio.run(_call(server, sessions, call.cid)) == 640
