"""Noisy neighbours: per-key rates, per-workspace concurrency, failed-authentication throttling
(recorded in the audit trail) and ClickHouse's per-query limits, through a real server."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from auditcore import Settings
from auditcore.api import ApiConfig
from auditcore.api.config import ResourceLimits
from auditcore.api.sessions import SessionKind
from auditcore.readmodel.queries import EventQuery
from auditcore.tenancy.directory import Principal, Scope
from tests.apiserver import eventually
from tests.test_api import INCIDENT, Deployment, deploy

PROXY = ApiConfig.networks(["127.0.0.1"])
"""The test client is a trusted proxy, so ``X-Forwarded-For`` names the client address."""


def _deployed(settings: Settings, **limits: Any) -> Iterator[Deployment]:
    yield from deploy(
        settings,
        ApiConfig(trusted_proxies=PROXY, live_keepalive=0.2, limits=ResourceLimits(**limits)),
    )


@pytest.fixture
def rated(pg_settings: Settings) -> Iterator[Deployment]:
    # A token every 2 s: the burst of 3 is spent well within it, even on a loaded machine.
    yield from _deployed(pg_settings, rate_per_second=0.5, rate_burst=3)


def _error(response: httpx.Response) -> str:
    kind: str = response.json()["error"]["type"]
    return kind


def test_a_key_over_its_rate_gets_429_with_retry_after_and_others_are_unaffected(
    rated: Deployment,
) -> None:
    with rated.client("acme") as acme, rated.client("globex") as globex:
        statuses = [acme.get("/v1/events").status_code for _ in range(3)]
        assert statuses == [200, 200, 200]  # the burst
        refused = acme.get("/v1/events")
        assert refused.status_code == 429
        assert _error(refused) == "rate_limited"
        wait = int(refused.headers["Retry-After"])
        assert 1 <= wait <= 2
        # Another key of the same workspace has its own bucket; another workspace too.
        with rated.client("acme_read") as other:
            assert other.get("/v1/events").status_code == 200
        assert globex.get("/v1/events").status_code == 200
        time.sleep(wait)
        assert acme.get("/v1/events").status_code == 200
    spec = httpx.get(f"{rated.url}/openapi.json").json()
    documented = spec["paths"]["/v1/events"]["get"]["responses"]["429"]
    assert "Retry-After" in documented["headers"]


@pytest.fixture
def limited(pg_settings: Settings) -> Iterator[Deployment]:
    yield from _deployed(
        pg_settings, exports_per_workspace=1, live_per_workspace=2, reports_per_workspace=1
    )


def test_concurrent_exports_live_streams_and_reports_are_limited_per_workspace(
    limited: Deployment,
) -> None:
    api = limited
    assert api.services is not None
    sessions = api.services.sessions
    with api.client("acme_read") as acme, api.client("globex") as globex:
        # Finished exports and reports give their slot back, however many run one by one.
        for _ in range(3):
            assert acme.get("/v1/events/export").status_code == 200
            assert acme.get("/v1/reports", params={"since": "1d"}).status_code == 200

        # An export (or report) in progress holds acme's only slot of its kind (the
        # revocation tests hold a real one open; here it is taken directly).
        principal = Principal("acme", "key_held", "held", frozenset({Scope.READ}), None)
        for kind, path, params in [
            (SessionKind.EXPORT, "/v1/events/export", {}),
            (SessionKind.REPORT, "/v1/reports", {"since": "1d"}),
        ]:
            held = sessions.open(kind, principal)
            refused = acme.get(path, params=params)
            assert refused.status_code == 429
            assert _error(refused) == "too_many_concurrent"
            assert int(refused.headers["Retry-After"]) >= 1
            # Another workspace is not held back by acme's.
            assert globex.get(path, params=params).status_code == 200
            held.close()
            assert acme.get(path, params=params).status_code == 200

        clients = [api.client("acme") for _ in range(3)]
        opened = [c.send(c.build_request("GET", "/v1/live"), stream=True) for c in clients[:2]]
        assert [r.status_code for r in opened] == [200, 200]
        third = clients[2].get("/v1/live")
        assert third.status_code == 429
        assert _error(third) == "too_many_concurrent"
        assert globex.send(globex.build_request("GET", "/v1/live"), stream=True).status_code == 200
        opened[0].close()
        clients[0].close()
        # The slot is freed when the stream ends (the server notices at its next keep-alive).
        eventually(lambda: sessions.counts()[(SessionKind.LIVE, "acme")] == 1)
        reopened = clients[2].send(clients[2].build_request("GET", "/v1/live"), stream=True)
        assert reopened.status_code == 200
        for response in (opened[1], reopened):
            response.close()
        for client in clients:
            client.close()


@pytest.fixture
def throttled(pg_settings: Settings) -> Iterator[Deployment]:
    yield from _deployed(pg_settings, auth_failures=5, auth_window=60.0)


def _bad_key_for(api: Deployment, key: str) -> str:
    """A token naming ``key``'s real key id with a wrong secret."""
    prefix = api.keys[key][: len("ack_") + 12]
    return f"{prefix}_{'A' * 43}"


def _throttle_events(api: Deployment, workspace_id: str) -> list[Any]:
    reader = api.audit.reader(workspace_id)
    query = EventQuery(filters={"action": ["auditcore.auth.failures_throttled"]})
    return reader.events(query).items


def test_failed_authentication_is_throttled_per_address_and_recorded(
    throttled: Deployment,
) -> None:
    api = throttled
    attacker = {"X-Forwarded-For": "203.0.113.9"}
    guesses = [_bad_key_for(api, "acme"), "ack_000000000000_" + "B" * 43, "not-a-key"]
    for n in range(5):
        response = httpx.get(
            f"{api.url}/v1/events",
            headers={**attacker, "Authorization": f"Bearer {guesses[n % 3]}"},
        )
        assert response.status_code == 401
    refused = httpx.get(
        f"{api.url}/v1/events", headers={**attacker, "Authorization": f"Bearer {guesses[1]}"}
    )
    assert refused.status_code == 429
    assert _error(refused) == "too_many_failed_authentications"
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    # Refused before the key is looked at: a valid key from that address waits too, so a
    # guess cannot be told apart from a hit.
    with api.client("acme", **attacker) as blocked:
        assert blocked.get("/v1/events").status_code == 429
    # Everyone else is served.
    with api.client("acme", **{"X-Forwarded-For": "198.51.100.7"}) as other:
        assert other.get("/v1/events").status_code == 200
    # More failures in the same window make no further summaries.
    for _ in range(10):
        httpx.get(f"{api.url}/v1/events", headers={**attacker, "Authorization": "Bearer x"})

    # One summary in the security workspace (every key id named) and one in acme's trail,
    # whose real key id was presented (only its own key ids).
    (security,) = eventually(lambda: _throttle_events(api, "auditcore"))
    (tenant,) = eventually(lambda: _throttle_events(api, "acme"))
    acme_key_id = "key_" + api.keys["acme"][4:16]
    assert security.metadata["address"] == "203.0.113.9"
    assert security.metadata["failures"] == 5
    assert sorted(security.metadata["key_ids"]) == sorted([acme_key_id, "key_000000000000"])
    assert tenant.metadata["key_ids"] == [acme_key_id]
    assert tenant.context.ip == "203.0.113.9"
    assert tenant.actor.type == "system"
    assert not _throttle_events(api, "globex")
    assert api.directory.workspace("auditcore").id == "auditcore"


def test_ipv6_failures_count_per_64(throttled: Deployment) -> None:
    api = throttled
    for host in range(1, 6):
        response = httpx.get(
            f"{api.url}/v1/events",
            headers={"X-Forwarded-For": f"2001:db8:1:2::{host}", "Authorization": "Bearer x"},
        )
        assert response.status_code == 401
    neighbour = {"X-Forwarded-For": "2001:db8:1:2:ffff::1", "Authorization": "Bearer x"}
    assert httpx.get(f"{api.url}/v1/events", headers=neighbour).status_code == 429
    elsewhere = {"X-Forwarded-For": "2001:db8:1:3::1", "Authorization": "Bearer x"}
    assert httpx.get(f"{api.url}/v1/events", headers=elsewhere).status_code == 401


def _minutes_apart(count: int) -> list[dict[str, Any]]:
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=count + 5)
    return [
        {**INCIDENT, "occurred_at": (start + timedelta(minutes=n)).isoformat()}
        for n in range(count)
    ]


@contextmanager
def _serving(settings: Settings, config: ApiConfig) -> Iterator[Deployment]:
    yield from deploy(settings, config)


@pytest.mark.parametrize(
    ("limits", "status", "kind"),
    [
        ({"query_result_rows": 10}, 400, "query_too_broad"),
        ({"query_timeout": 0.000001}, 503, "query_timeout"),
        ({"query_memory_bytes": 1}, 503, "query_too_heavy"),
    ],
)
def test_clickhouse_limits_refuse_with_a_clear_4xx_or_503(
    pg_settings: Settings, limits: dict[str, Any], status: int, kind: str
) -> None:
    config = ApiConfig(limits=replace(ResourceLimits(rate_per_second=0), **limits))
    with _serving(pg_settings, config) as api, api.client("acme") as client:
        assert client.post("/v1/events", json=_minutes_apart(30)).status_code == 201
        eventually(lambda: len(api.audit.reader("acme").events(EventQuery()).items) == 30)
        for path, params in [
            ("/v1/events", {"limit": 50}),
            ("/v1/stats", {"interval": "minute", "since": "2h"}),
            ("/v1/reports", {"since": "1d"}),
        ][: 1 if kind == "query_too_heavy" else None]:
            # (A 1-byte memory limit stops only queries that allocate tracked memory:
            # the page of events does, a tiny aggregation may not.)
            response = client.get(path, params=params)
            assert response.status_code == status, (path, response.text)
            assert _error(response) == kind
            if status == 503:
                assert int(response.headers["Retry-After"]) >= 1
        if kind == "query_too_heavy":
            # Whichever query the 1-byte limit stops first (on embedded chDB the export's
            # first check is too small to be stopped, and its page query is; a server stops
            # the check): refused before the first byte, or cut off halfway; never a short
            # "complete" file.
            try:
                refused = client.get("/v1/events/export", params={"format": "jsonl"})
            except httpx.RemoteProtocolError:
                return
            assert refused.status_code == 503, refused.text
            assert _error(refused) == kind
            return
        export = client.get("/v1/events/export", params={"format": "jsonl"})
        if status == 503:  # Refused before the first byte, like any bad query.
            assert export.status_code == 503
            assert _error(export) == kind
        else:  # Pages are bounded by their size, not by the result-rows limit.
            assert export.status_code == 200
            assert len(export.text.splitlines()) == 30
        # The same workspace read by a trusted caller (no API limits) still answers. (Its
        # incidents only: the export itself was recorded in the workspace, and may be projected
        # by now or not.)
        opened = EventQuery(filters={"action": ["incident.opened"]}, limit=50)
        assert len(api.audit.reader("acme").events(opened).items) == 30


def test_no_limit_is_hit_by_ordinary_use(pg_settings: Settings) -> None:
    """The defaults leave an ordinary session alone: a burst of reads, a few exports, a
    report and live streams at once."""
    with _serving(pg_settings, ApiConfig()) as api, api.client("acme") as client:
        assert client.post("/v1/events", json=_minutes_apart(30)).status_code == 201
        statuses = [client.get("/v1/events").status_code for _ in range(60)]
        assert set(statuses) == {200}
        results: list[int] = []

        def export() -> None:
            with api.client("acme") as own:
                results.append(own.get("/v1/events/export").status_code)

        threads = [threading.Thread(target=export) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert results == [200, 200]
        assert client.get("/v1/reports", params={"since": "1d"}).status_code == 200


@pytest.fixture
def few_writes(pg_settings: Settings) -> Iterator[Deployment]:
    yield from _deployed(pg_settings, rate_per_second=0, writes_per_workspace=3)


def test_slow_bodies_of_one_workspace_cannot_hold_every_connection(
    few_writes: Deployment,
) -> None:
    """An attacker's find: a write key trickling request bodies (a byte every few seconds,
    under every timeout) held every connection, and every tenant got 503. Now a workspace holds
    at most ``writes_per_workspace`` recording requests at once, bodies included."""
    api = few_writes
    host, port = api.url.removeprefix("http://").split(":")
    held = []
    try:
        for _ in range(3):
            conn = socket.create_connection((host, int(port)))
            conn.sendall(
                b"POST /v1/events HTTP/1.1\r\nHost: x\r\n"
                + f"Authorization: Bearer {api.keys['globex']}\r\n".encode()
                + b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n["
            )
            held.append(conn)
        assert api.services is not None
        eventually(lambda: api.services.sessions.counts()[(SessionKind.WRITE, "globex")] == 3)
        with api.client("globex") as globex, api.client("acme") as acme:
            refused = globex.post("/v1/events", json=INCIDENT)
            assert refused.status_code == 429, refused.text
            assert _error(refused) == "too_many_concurrent"
            assert int(refused.headers["Retry-After"]) >= 1
            # Another workspace writes as usual.
            assert acme.post("/v1/events", json=INCIDENT).status_code == 201
    finally:
        for conn in held:
            conn.close()
    # The slots come back once those requests are over.
    eventually(lambda: api.services.sessions.counts()[(SessionKind.WRITE, "globex")] == 0)
    with api.client("globex") as globex:
        assert globex.post("/v1/events", json=INCIDENT).status_code == 201
