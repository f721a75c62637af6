"""R4 Subscriptions: rest-hook delivery (payloads, headers, retry), websocket, errors, restart, broker."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
import websockets

from telemed.app import Services, create_app
from telemed.db.engine import unit_of_work
from telemed.db.migrate import upgrade
from telemed.fhir.store.context import AccessContext
from tests.conftest import LiveServer, free_port, make_settings, token_for, unique


class Receiver:
    """A real HTTP endpoint that records notifications; ``fail_first`` answers 500 that many times."""

    def __init__(self, fail_first: int = 0):
        self.requests: list[dict] = []
        self.fail_first = fail_first
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server naming
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if receiver.fail_first > 0:
                    receiver.fail_first -= 1
                    self.send_response(500)
                else:
                    receiver.requests.append({"headers": dict(self.headers), "body": body})
                    self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait(self, n: int, timeout: float = 10) -> list[dict]:
        deadline = time.time() + timeout
        while len(self.requests) < n and time.time() < deadline:
            time.sleep(0.05)
        return self.requests

    def close(self):
        self.server.shutdown()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def subscription(code: str, endpoint: str, **channel) -> dict:
    return {
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "test",
        "criteria": f"Observation?code=http://loinc.org|{code}",
        "channel": {"type": "rest-hook", "endpoint": endpoint, **channel},
    }


def observation(code: str, value: float = 1) -> dict:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "valueQuantity": {"value": value, "unit": "mmHg"},
    }


def test_rest_hook_full_resource_with_headers(client, receiver):
    code = unique("c")
    sub = client.post(
        "/Subscription",
        json=subscription(code, receiver.url, payload="application/fhir+json", header=["Authorization: Bearer hook"]),
    )
    assert sub.status_code == 201, sub.text
    assert sub.json()["status"] == "active"
    client.post("/Observation", json=observation("other-code"))
    created = client.post("/Observation", json=observation(code, 142)).json()
    got = receiver.wait(1)
    assert len(got) == 1
    assert got[0]["headers"]["Authorization"] == "Bearer hook"
    body = json.loads(got[0]["body"])
    assert body["id"] == created["id"] and body["valueQuantity"]["value"] == 142
    time.sleep(0.5)
    assert len(receiver.requests) == 1  # the non-matching Observation was not notified


def test_rest_hook_empty_and_id_only_payloads(client, receiver):
    code = unique("c")
    client.post("/Subscription", json=subscription(code, receiver.url))
    ext = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-payload-content"
    id_only = subscription(code, receiver.url, payload="application/fhir+json")
    id_only["channel"]["_payload"] = {"extension": [{"url": ext, "valueCode": "id-only"}]}
    client.post("/Subscription", json=id_only)
    obs = client.post("/Observation", json=observation(code)).json()
    got = receiver.wait(2)
    bodies = sorted((r["body"] for r in got), key=len)
    assert bodies[0] == b""  # R4: no payload, the notification is a ping
    bundle = json.loads(bodies[1])
    assert bundle["entry"][0]["fullUrl"].endswith(f"/Observation/{obs['id']}")
    assert "resource" not in bundle["entry"][0]


def test_retry_with_backoff_then_success(client, services):
    services.dispatcher.base_backoff = timedelta(milliseconds=100)
    flaky = Receiver(fail_first=2)
    try:
        code = unique("c")
        client.post("/Subscription", json=subscription(code, flaky.url, payload="application/fhir+json"))
        client.post("/Observation", json=observation(code))
        assert len(flaky.wait(1, timeout=15)) == 1
        assert flaky.fail_first == 0
    finally:
        flaky.close()


def test_failing_endpoint_sets_error_status(client, services):
    services.dispatcher.base_backoff = timedelta(milliseconds=50)
    code = unique("c")
    port = free_port()  # nothing listens here
    sub = client.post("/Subscription", json=subscription(code, f"http://127.0.0.1:{port}/hook")).json()
    client.post("/Observation", json=observation(code))
    deadline = time.time() + 20
    current = {}
    while time.time() < deadline:
        current = client.get(f"/Subscription/{sub['id']}").json()
        if current["status"] == "error":
            break
        time.sleep(0.2)
    assert current["status"] == "error"
    assert "Delivery failed" in current["error"]


def test_invalid_subscriptions_are_rejected(client, receiver):
    bad_criteria = subscription("x", receiver.url) | {"criteria": "Observation?nonsense=1"}
    assert client.post("/Subscription", json=bad_criteria).status_code == 400
    email = subscription("x", receiver.url)
    email["channel"] = {"type": "email", "endpoint": "mailto:a@b.c"}
    assert client.post("/Subscription", json=email).status_code == 422
    no_endpoint = subscription("x", "ftp://example.org")
    assert client.post("/Subscription", json=no_endpoint).status_code == 400


def _ws_url(server, token: str) -> str:
    return server.url.replace("http", "ws") + f"/fhir/websocket?access_token={token}"


def test_websocket_bind_and_ping(server, services, client):
    code = unique("c")
    sub = client.post(
        "/Subscription",
        json={
            "resourceType": "Subscription",
            "status": "requested",
            "reason": "ws",
            "criteria": f"Observation?code=http://loinc.org|{code}",
            "channel": {"type": "websocket"},
        },
    ).json()
    token = token_for(services, "ws-user")

    async def scenario() -> list[str]:
        async with websockets.connect(_ws_url(server, token)) as ws:
            await ws.send("bind nope")
            assert (await ws.recv()).startswith("error")
            await ws.send(f"bind {sub['id']}")
            assert await ws.recv() == f"bound {sub['id']}"
            await asyncio.to_thread(client.post, "/Observation", json=observation(code))
            return [await asyncio.wait_for(ws.recv(), 10)]

    assert asyncio.run(scenario()) == [f"ping {sub['id']}"]


def test_websocket_requires_a_valid_token(server, client):
    async def scenario() -> str:
        async with websockets.connect(server.url.replace("http", "ws") + "/fhir/websocket") as ws:
            await ws.send("bind x")
            return await ws.recv()

    assert asyncio.run(scenario()).startswith("error")


def test_notification_survives_a_restart(tmp_path, receiver):
    """A write acknowledged while no dispatcher runs is delivered when the server (re)starts."""
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path}/restart.db")
    writer = Services.from_settings(settings)
    upgrade(writer.engine)
    code = unique("c")
    with unit_of_work(writer.engine) as conn:
        repo = writer.repository(conn, AccessContext.system())
        repo.create("Subscription", subscription(code, receiver.url, payload="application/fhir+json"))
    with unit_of_work(writer.engine) as conn:  # the "old" server: writes, then dies before delivering
        obs = writer.repository(conn, AccessContext.system()).create("Observation", observation(code)).resource
    writer.engine.dispose()
    assert receiver.requests == []
    restarted = Services.from_settings(settings)
    with LiveServer(create_app(restarted)):
        got = receiver.wait(1)
    assert json.loads(got[0]["body"])["id"] == obs["id"]


def test_fan_out_between_instances_through_redis(tmp_path, backend, request):
    """Two instances share the database and Redis: a socket bound on B hears a write made on A."""
    import redis

    try:
        redis.Redis.from_url("redis://127.0.0.1:6379/0").ping()
    except redis.ConnectionError:
        pytest.skip("Redis is not running on 127.0.0.1:6379")
    url = f"sqlite:///{tmp_path}/shared.db" if backend == "sqlite" else request.getfixturevalue("own_pg_database")
    settings = make_settings(tmp_path, url).model_copy(update={"broker_url": "redis://127.0.0.1:6379/0"})
    a, b = Services.from_settings(settings), Services.from_settings(settings)
    upgrade(a.engine)
    code = unique("c")
    with LiveServer(create_app(a)) as server_a, LiveServer(create_app(b)) as server_b:
        b.dispatcher.stop()  # only A delivers, so B can only hear it through the broker
        token = token_for(a, "fan-out")
        headers = {"Authorization": f"Bearer {token}"}
        sub = httpx.post(
            server_a.url + "/fhir/Subscription",
            headers=headers,
            json={
                "resourceType": "Subscription",
                "status": "requested",
                "reason": "fan-out",
                "criteria": f"Observation?code=http://loinc.org|{code}",
                "channel": {"type": "websocket"},
            },
        ).json()

        async def scenario() -> str:
            async with websockets.connect(_ws_url(server_b, token)) as ws:
                await ws.send(f"bind {sub['id']}")
                assert await ws.recv() == f"bound {sub['id']}"
                await asyncio.to_thread(
                    httpx.post, server_a.url + "/fhir/Observation", headers=headers, json=observation(code)
                )
                return await asyncio.wait_for(ws.recv(), 10)

        assert asyncio.run(scenario()) == f"ping {sub['id']}"
