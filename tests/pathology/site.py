"""A county hospital of its own for each pathology test: its gateway's OAuth client and a viewer's token."""

from __future__ import annotations

import asyncio
import socket
import threading
from dataclasses import dataclass
from pathlib import Path

from telemed.db.engine import unit_of_work
from telemed.fhir.store.context import AccessContext
from telemed.identity import ensure_account, issue_token
from telemed.identity.oauth_clients import register_client
from telemed.kernel.clock import SystemClock
from telemed.pathology.gateway import SCOPES, Gateway, GatewayConfig
from tests.conftest import unique


@dataclass
class Site:
    org: str
    client_id: str
    secret: str
    viewer: str
    viewer_token: str


def make_site(services, name: str = "青山县人民医院") -> Site:
    org = unique("org-path")
    viewer = unique("doc")
    with unit_of_work(services.engine) as conn:
        services.repository(conn, AccessContext.system()).update(
            "Organization", org, {"resourceType": "Organization", "id": org, "active": True, "name": name}
        )
        client_id, secret = register_client(
            conn, f"{name} 切片网关", scopes=SCOPES.split(), roles=["requesting-doctor"], organization_id=org
        )
        ensure_account(conn, viewer, "病理医生", ["pathologist"], services.clock.now(), None, org)
    token = issue_token(services.token_keys, viewer, ["user/*.*"], 3600, SystemClock().now(), ["pathologist"],
                        organization=org)  # fmt: skip
    return Site(org, client_id, secret, viewer, token)


class GatewayThread:
    """A gateway running in its own thread and event loop, like the process at the site."""

    def __init__(self, config: GatewayConfig):
        self.gateway = Gateway(config)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        self.loop.run_until_complete(self.gateway.run())

    def __enter__(self) -> Gateway:
        self.thread.start()
        return self.gateway

    def __exit__(self, *exc) -> None:
        self.loop.call_soon_threadsafe(self.gateway.stop)
        self.thread.join(15)


def gateway_config(server, site: Site, folder: Path, state: Path, rate: float | None = None) -> GatewayConfig:
    return GatewayConfig(centre=server.url if hasattr(server, "url") else server, client_id=site.client_id,
                         client_secret=site.secret, folder=folder, state_dir=state, rate=rate, poll=0.3)  # fmt: skip


class Proxy:
    """A TCP relay standing for the county's link: ``cut()`` drops every connection and refuses new
    ones until ``restore()``."""

    def __init__(self, target_port: int):
        self.target = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.up = True
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.up:
                client.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target))
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self) -> None:
        self.up = False
        with self._lock:
            for s in self._conns:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                    s.close()
                except OSError:
                    pass
            self._conns.clear()

    def restore(self) -> None:
        self.up = True

    def close(self) -> None:
        self.cut()
        self.listener.close()
