"""Login throttling per client address, on top of the account lockout: the client's address
(socket, or X-Forwarded-For from a trusted proxy only), the window, and 429 + Retry-After on
/api/auth/login, the portal login page (zh-CN and English) and the OAuth authorize login, enforced
together by two app instances sharing one database (and, when Redis runs, through Redis)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import select

from telemed.app import Services, create_app
from telemed.db.engine import unit_of_work
from telemed.db.migrate import upgrade
from telemed.db.schema import audit_event
from telemed.identity import throttle
from telemed.identity.throttle import DatabaseThrottle, RedisThrottle, client_address, parse_networks
from tests.conftest import LiveServer, make_settings, unique
from tests.identity.test_authentication import PASSWORD, make_user
from tests.identity.test_oauth import REDIRECT, _authorize_params, _client, _pkce
from tests.portal.conftest import csrf_of

LIMIT = 3
WINDOW = 120


def test_client_address_trusts_forwarded_for_only_from_trusted_proxies():
    proxies = parse_networks("10.0.0.0/8, 192.168.1.5,2001:db8::/32")
    # a direct client cannot choose its address
    assert client_address("203.0.113.9", "198.51.100.1", proxies) == "203.0.113.9"
    assert client_address("203.0.113.9", None, proxies) == "203.0.113.9"
    # through a trusted proxy: the address it saw (the rightmost entry)
    assert client_address("10.1.2.3", "198.51.100.1", proxies) == "198.51.100.1"
    # a client's forged entry on the left is ignored; chained trusted proxies are skipped
    assert client_address("10.1.2.3", "1.2.3.4, 198.51.100.1, 192.168.1.5", proxies) == "198.51.100.1"
    assert client_address("2001:db8::1", "2001:db9::7", proxies) == "2001:db9::7"
    # a malformed entry ends the walk at the last good hop
    assert client_address("10.1.2.3", "198.51.100.1, junk", proxies) == "10.1.2.3"
    assert client_address("10.1.2.3", "10.9.9.9", proxies) == "10.9.9.9"  # only proxies: the farthest
    assert client_address(None, "198.51.100.1", proxies) is None
    assert parse_networks(None) == () and parse_networks("") == ()
    with pytest.raises(ValueError):
        parse_networks("not-a-network")


def test_settings_check_reports_a_bad_proxy_list(tmp_path):
    settings = make_settings(tmp_path, "sqlite:///x.db").model_copy(update={"trusted_proxies": "10.0.0.0/8,nope"})
    assert any("TELEMED_TRUSTED_PROXIES" in p for p in settings.problems())


def test_database_throttle_window(services):
    t = DatabaseThrottle(services.engine, failures=3, window=timedelta(minutes=10))
    address = unique("addr")
    t0 = datetime(2026, 1, 1, 8, 0, tzinfo=UTC)
    assert t.wait(address, t0) == 0
    t.failed(address, t0)
    t.failed(address, t0 + timedelta(minutes=1))
    assert t.wait(address, t0 + timedelta(minutes=2)) == 0
    t.failed(address, t0 + timedelta(minutes=2))  # the third within the window: blocked for a window
    assert t.wait(address, t0 + timedelta(minutes=2)) == 600
    assert t.wait(address, t0 + timedelta(minutes=11, seconds=30)) == 30
    assert t.wait(address, t0 + timedelta(minutes=12)) == 0
    # a new window starts with the next failure; old failures no longer count
    t.failed(address, t0 + timedelta(minutes=13))
    assert t.wait(address, t0 + timedelta(minutes=13)) == 0
    # failures spread wider than the window never block
    other = unique("addr")
    for minute in (0, 11, 22, 33):
        t.failed(other, t0 + timedelta(minutes=minute))
        assert t.wait(other, t0 + timedelta(minutes=minute)) == 0
    assert t.wait(None, t0) == 0
    t.failed(None, t0)  # no address (a test transport): nothing to count


def test_the_throttle_follows_the_settings(tmp_path, services):
    settings = make_settings(tmp_path, "sqlite:///x.db")
    assert isinstance(throttle.from_settings(settings, services.engine), DatabaseThrottle)
    with_redis = settings.model_copy(update={"broker_url": "redis://127.0.0.1:6379/0", "login_throttle_failures": 7})
    chosen = throttle.from_settings(with_redis, services.engine)
    assert isinstance(chosen, RedisThrottle) and chosen.failures == 7


def test_redis_throttle():
    import redis

    url = "redis://127.0.0.1:6379/0"
    try:
        redis.Redis.from_url(url).ping()
    except redis.ConnectionError:
        pytest.skip("Redis is not running on 127.0.0.1:6379")
    a, b = RedisThrottle(url, 2, timedelta(seconds=60)), RedisThrottle(url, 2, timedelta(seconds=60))  # two instances
    address, now = unique("addr"), datetime.now(UTC)
    a.failed(address, now)
    assert b.wait(address, now) == 0
    b.failed(address, now)
    assert 0 < a.wait(address, now) <= 60 and 0 < b.wait(address, now) <= 60
    assert a.wait(unique("addr"), now) == 0


@pytest.fixture
def instances(tmp_path, backend, request) -> Iterator[tuple[LiveServer, LiveServer, Services]]:
    """Two app instances on one database, behind a proxy on 127.0.0.1 (so tests choose the client's
    address with X-Forwarded-For), refusing an address after LIMIT failures in WINDOW seconds."""
    url = f"sqlite:///{tmp_path}/shared.db" if backend == "sqlite" else request.getfixturevalue("own_pg_database")
    settings = make_settings(tmp_path, url).model_copy(
        update={"trusted_proxies": "127.0.0.1/32", "login_throttle_failures": LIMIT,
                "login_throttle_window_seconds": WINDOW}
    )  # fmt: skip
    a, b = Services.from_settings(settings), Services.from_settings(settings)
    upgrade(a.engine)
    with LiveServer(create_app(a)) as server_a, LiveServer(create_app(b)) as server_b:
        yield server_a, server_b, a
    a.engine.dispose()
    b.engine.dispose()


def _from(address: str) -> dict:
    return {"X-Forwarded-For": address}


def _api_login(server, username: str, password: str, address: str) -> httpx.Response:
    body = {"username": username, "password": password}
    return httpx.post(f"{server.url}/api/auth/login", json=body, headers=_from(address))


def test_api_login_is_throttled_across_instances(instances):
    server_a, server_b, services = instances
    users = [make_user(services) for _ in range(LIMIT + 1)]
    attacker, neighbour = "203.0.113.7", "203.0.113.8"
    # a spray: one wrong password on each of several accounts (no account reaches its lockout)
    for user in users[:LIMIT]:
        assert _api_login(server_a, user, "Wrong-Password-1", attacker).status_code == 401
    refused = _api_login(server_b, users[LIMIT], PASSWORD, attacker)  # the other instance knows
    assert refused.status_code == 429, refused.text
    assert 0 < int(refused.headers["retry-after"]) <= WINDOW
    assert refused.headers["content-type"] == "application/problem+json"
    assert _api_login(server_a, users[LIMIT], PASSWORD, neighbour).status_code == 200  # another address
    # the refusal is audited, with the client's address (not the proxy's)
    with unit_of_work(services.engine, write=False) as conn:
        rows = conn.execute(select(audit_event.c.content).where(audit_event.c.username == users[LIMIT])).all()
    failed = [r.content for r in rows if r.content["outcome"] == "4"]
    assert failed and failed[0]["agent"][0]["network"]["address"] == attacker
    assert "Too many failed sign-ins" in failed[0]["outcomeDesc"]


def test_forwarded_for_from_an_untrusted_peer_is_ignored(tmp_path, services):
    """The session's server trusts no proxy: the socket's address counts, whatever the header says."""
    settings = services.settings
    assert settings.trusted_proxies is None
    request = type("R", (), {})()
    request.client = type("C", (), {"host": "127.0.0.1"})()
    request.headers = {"x-forwarded-for": "198.51.100.1"}
    request.app = type("A", (), {"state": type("S", (), {"services": services})()})()
    assert throttle.request_address(request) == "127.0.0.1"


def _portal_login(http: httpx.Client, username: str, password: str) -> httpx.Response:
    page = http.get("/portal/login")
    return http.post("/portal/login", data={"username": username, "password": password,
                                            "csrf_token": csrf_of(page), "next": ""})  # fmt: skip


def test_portal_login_page_is_throttled_with_a_readable_message(instances):
    server_a, server_b, services = instances
    user = make_user(services)
    address = "198.51.100.23"
    with httpx.Client(base_url=server_a.url, headers=_from(address), follow_redirects=False) as http:
        for _ in range(LIMIT):
            assert _portal_login(http, unique("nobody"), "Wrong-Password-1").status_code == 200
    with httpx.Client(base_url=server_b.url, headers=_from(address), follow_redirects=False) as http:
        r = _portal_login(http, user, PASSWORD)
        assert r.status_code == 429 and 0 < int(r.headers["retry-after"]) <= WINDOW
        assert "来自您所在网络的登录失败次数过多" in r.text and "分钟后再试" in r.text
        http.get("/portal/lang/en", params={"next": "/portal/login"})
        r = _portal_login(http, user, PASSWORD)
        assert r.status_code == 429 and "Too many failed sign-ins from your network" in r.text
    with httpx.Client(base_url=server_b.url, headers=_from("198.51.100.24"), follow_redirects=False) as http:
        assert _portal_login(http, user, PASSWORD).status_code == 303  # another address signs in


def test_oauth_authorize_login_is_throttled(instances):
    server_a, server_b, services = instances
    cid = _client(services, grant_types=["authorization_code"], scopes=["user/*.rs"], redirect_uris=[REDIRECT],
                  public=True)[0]  # fmt: skip
    user = make_user(services)
    address = "192.0.2.77"

    def attempt(server, password: str, lang: str = "zh") -> httpx.Response:
        params = _authorize_params(server, cid, _pkce()[1], lang=lang)
        with httpx.Client(headers=_from(address)) as http:
            page = http.get(f"{server.url}/oauth/authorize", params=params)
            csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
            hidden = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', page.text))
            form = {**hidden, "csrf_token": csrf, "username": user, "password": password, "code": ""}
            return http.post(f"{server.url}/oauth/authorize", data=form)

    for _ in range(LIMIT):
        assert attempt(server_a, "Wrong-Password-1").status_code == 401
    r = attempt(server_b, PASSWORD)
    assert r.status_code == 429 and 0 < int(r.headers["retry-after"]) <= WINDOW
    assert "登录失败次数过多" in r.text
    r = attempt(server_a, PASSWORD, "en")
    assert r.status_code == 429 and "Too many failed sign-ins from your network" in r.text
