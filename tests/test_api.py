"""The HTTP API through a real server (uvicorn) on PostgreSQL + chDB: tenancy on every route,
keys and scopes, request context, idempotency, and every class of bad input."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from uuid import uuid4

import httpx
import psycopg
import pytest

from auditcore import AuditCore, Settings
from auditcore.api import ApiConfig, create_app
from auditcore.api.deps import Services
from auditcore.api.live import LiveHub
from auditcore.tenancy import Directory, Scope
from tests.apiserver import ServerThread, eventually

INCIDENT = {
    "action": "incident.opened",
    "actor": {"id": "user_alice", "type": "user", "name": "Alice"},
    "metadata": {"title": "API down", "severity": "sev1", "service": "api"},
}


@dataclass
class Deployment:
    url: str
    audit: AuditCore
    directory: Directory
    hub: LiveHub
    keys: dict[str, str]
    services: Services | None = None

    def client(self, key: str | None = "acme", **headers: str) -> httpx.Client:
        if key is not None:
            headers["Authorization"] = f"Bearer {self.keys[key]}"
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def stored(self) -> int:
        return self.audit.app.recorder.max_notification_id() or 0

    def projected(self, key: str, expected: int, **params: Any) -> list[dict[str, Any]]:
        """Events the read model returns once ``expected`` of them are there."""

        def page() -> list[dict[str, Any]] | None:
            with self.client(key) as client:
                items: list[dict[str, Any]] = client.get(
                    "/v1/events", params={"limit": 1000, **params}
                ).json()["items"]
            return items if len(items) >= expected else None

        return eventually(page)


def deploy(settings: Settings, config: ApiConfig) -> Iterator[Deployment]:
    with AuditCore(settings) as audit:
        directory = Directory(settings)
        directory.create_workspace("acme")
        directory.create_workspace("globex")
        keys = {
            "acme": directory.create_key("acme", "rw", [Scope.READ, Scope.WRITE]).token,
            "acme_read": directory.create_key("acme", "ro", [Scope.READ]).token,
            "acme_write": directory.create_key("acme", "wo", [Scope.WRITE]).token,
            "acme_events_only": directory.create_key(
                "acme", "events", [Scope.READ], ["audit_events:read"]
            ).token,
            "globex": directory.create_key("globex", "rw", [Scope.READ, Scope.WRITE]).token,
            "admin": directory.create_key("acme", "ops", [Scope.ADMIN]).token,
        }
        revoked = directory.create_key("acme", "old", [Scope.READ, Scope.WRITE])
        directory.revoke_key(revoked.info.id)
        keys["acme_revoked"] = revoked.token
        app = create_app(audit, directory, config)
        try:
            with ServerThread(app) as server:
                services = app.state.services
                yield Deployment(server.url, audit, directory, services.hub, keys, services)
        finally:
            directory.close()


@pytest.fixture
def api(pg_settings: Settings) -> Iterator[Deployment]:
    yield from deploy(
        pg_settings,
        ApiConfig(
            trusted_proxies=ApiConfig.networks(["127.0.0.1"]),
            max_body_bytes=20_000,
            max_batch=20,
            live_keepalive=0.2,
        ),
    )


def test_records_and_reads_back_with_request_context(api: Deployment) -> None:
    with api.client(**{"User-Agent": "audit-test/1.0", "X-Request-ID": "req-abc.1"}) as client:
        response = client.post("/v1/events", json=INCIDENT)
        assert response.status_code == 201, response.text
        assert response.headers["X-Request-ID"] == "req-abc.1"
        (event_id,) = response.json()["ids"]
        # No actor given: the API key is the actor.
        batch = [{"action": "monitor.paused", "metadata": {"reason": f"w{i}"}} for i in range(3)]
        assert client.post("/v1/events", json=batch).status_code == 201

    items = api.projected("acme_read", 4)
    assert [item["action"] for item in items].count("monitor.paused") == 3
    by_id = {item["event_id"]: item for item in items}
    opened = by_id[event_id]
    assert opened["actor"] == {"id": "user_alice", "type": "user", "name": "Alice"}
    assert opened["context"]["user_agent"] == "audit-test/1.0"
    assert opened["context"]["request_id"] == "req-abc.1"
    assert opened["source"] == "api"
    keyed = next(i for i in items if i["action"] == "monitor.paused")
    assert keyed["actor"]["type"] == "api_key"
    assert keyed["actor"]["name"] == "rw"
    assert keyed["actor"]["id"].startswith("key_")

    with api.client("acme_read") as client:
        assert client.get(f"/v1/events/{event_id}").json() == opened
        history = client.get(f"/v1/streams/{opened['stream_id']}/events").json()
        assert [e["event_id"] for e in history] == [event_id]
        # Filters, as the read model declares them.
        filtered = client.get("/v1/events", params={"action": "incident.opened"}).json()
        assert [e["event_id"] for e in filtered["items"]] == [event_id]
        incidents = eventually(
            lambda: client.get("/v1/models/incidents/rows").json()["items"] or None
        )
        assert incidents[0]["title"] == "API down"
        stats = client.get("/v1/stats", params={"since": "1h"}).json()
        assert sum(b["events"] for b in stats["buckets"]) >= 4


def test_forwarded_for_is_believed_only_from_trusted_proxies(
    api: Deployment, pg_settings: Settings
) -> None:
    forwarded = {"X-Forwarded-For": "6.6.6.6, 203.0.113.9"}
    with api.client(**forwarded) as client:
        (event,) = client.post("/v1/events", json=INCIDENT).json()["items"]
    # 127.0.0.1 is a trusted proxy here: the last untrusted hop is the client, never the
    # client-written one to its left.
    assert event["context"]["ip"] == "203.0.113.9"


def test_forwarded_for_from_an_untrusted_peer_is_ignored(pg_settings: Settings) -> None:
    for deployment in deploy(pg_settings, ApiConfig()):
        with deployment.client(**{"X-Forwarded-For": "203.0.113.9"}) as client:
            (event,) = client.post("/v1/events", json=INCIDENT).json()["items"]
        assert event["context"]["ip"] == "127.0.0.1"


def test_the_caller_may_describe_its_own_end_user(api: Deployment) -> None:
    given = {**INCIDENT, "context": {"ip": "2001:db8::1"}}
    with api.client(**{"User-Agent": "backend/2"}) as client:
        (event,) = client.post("/v1/events", json=given).json()["items"]
    assert event["context"]["ip"] == "2001:db8::1"
    assert event["context"]["user_agent"] == "backend/2"


def test_idempotency_key_records_once_and_refuses_other_content(api: Deployment) -> None:
    with api.client(**{"Idempotency-Key": "order-7"}) as client:
        first = client.post("/v1/events", json=[INCIDENT, INCIDENT])
        stored = api.stored()
        again = client.post("/v1/events", json=[INCIDENT, INCIDENT])
        assert first.status_code == again.status_code == 201
        assert first.json()["ids"] == again.json()["ids"]
        assert len(set(first.json()["ids"])) == 2
        assert api.stored() == stored
        other = {**INCIDENT, "metadata": {**INCIDENT["metadata"], "title": "Other"}}
        clash = client.post("/v1/events", json=[other, INCIDENT])
    assert clash.status_code == 409
    assert clash.json()["error"]["type"] == "event_id_reused"
    assert api.stored() == stored


def _acme_event(api: Deployment) -> dict[str, Any]:
    with api.client() as client:
        (event,) = client.post("/v1/events", json=INCIDENT).json()["items"]
    api.projected("acme", 1)
    return event


def test_another_workspace_is_invisible_on_every_route(api: Deployment) -> None:
    event = _acme_event(api)
    with api.client("globex") as client:
        client.post("/v1/events", json=INCIDENT)
        api.projected("globex", 1)
        unknown = client.get(f"/v1/events/{uuid4()}")
        foreign = client.get(f"/v1/events/{event['event_id']}")
        # 404 whether it exists elsewhere or nowhere: nothing tells the two apart.
        assert unknown.status_code == foreign.status_code == 404
        assert foreign.json()["error"]["message"].replace(event["event_id"], "X") == unknown.json()[
            "error"
        ]["message"].replace(unknown.url.path.rsplit("/", 1)[1], "X")
        assert client.get(f"/v1/streams/{event['stream_id']}/events").status_code == 404
        listed = client.get("/v1/events", params={"limit": 1000}).json()["items"]
        assert {e["workspace_id"] for e in listed} == {"globex"}
        assert event["event_id"] not in {e["event_id"] for e in listed}
        by_id_filter = client.get("/v1/events", params={"stream_id": event["stream_id"]}).json()
        assert by_id_filter["items"] == []
        stats = client.get("/v1/stats", params={"since": "1h", "interval": "minute"}).json()
        assert sum(b["events"] for b in stats["buckets"]) == 1
        rows = eventually(lambda: client.get("/v1/models/incidents/rows").json()["items"] or None)
        assert {r["workspace_id"] for r in rows} == {"globex"}
        # Writing into another workspace is refused, and stores nothing.
        stored = api.stored()
        wrong = client.post("/v1/events", json={**INCIDENT, "workspace_id": "acme"})
        assert wrong.status_code == 403
        assert api.stored() == stored
        # Resuming the live tail from position 0 replays history: still only globex's.
        with client.stream("GET", "/v1/live", headers={"Last-Event-ID": "0"}, timeout=10) as stream:
            first = _next_event(stream)
        assert first["workspace_id"] == "globex"


def _next_event(stream: httpx.Response) -> dict[str, Any]:
    kind = None
    for line in stream.iter_lines():
        if line.startswith("event: "):
            kind = line.removeprefix("event: ")
        elif line.startswith("data: ") and kind == "audit_event":
            event: dict[str, Any] = json.loads(line.removeprefix("data: "))
            return event
    raise AssertionError("the stream ended")


ROUTES = [
    ("GET", "/v1/events"),
    ("GET", f"/v1/events/{uuid4()}"),
    ("GET", f"/v1/streams/{uuid4()}/events"),
    ("GET", "/v1/stats"),
    ("GET", "/v1/live"),
    ("GET", "/v1/models"),
    ("GET", "/v1/models/incidents/rows"),
    ("GET", "/v1/events/export"),
    ("GET", "/v1/reports?since=1h"),
    ("POST", "/v1/events"),
]


@pytest.mark.parametrize("key", ["acme_revoked", None, "garbage"])
def test_every_route_refuses_missing_bad_and_revoked_keys(api: Deployment, key: str | None) -> None:
    api.keys["garbage"] = "ack_000000000000_" + "x" * 43
    stored = api.stored()
    with api.client(key) as client:
        for method, path in ROUTES:
            response = client.request(method, path, json=INCIDENT if method == "POST" else None)
            assert response.status_code == 401, (method, path)
            assert response.headers["WWW-Authenticate"] == "Bearer"
            assert response.json()["error"]["type"] == "unauthenticated"
    assert api.stored() == stored


def test_scopes_and_entitlements(api: Deployment) -> None:
    with api.client("acme_read") as client:
        refused = client.post("/v1/events", json=INCIDENT)
        assert refused.status_code == 403
        assert "'write' scope" in refused.json()["error"]["message"]
    with api.client("acme_write") as client:
        assert client.get("/v1/events").status_code == 403
        assert client.post("/v1/events", json=INCIDENT).status_code == 201
    with api.client("acme_events_only") as client:
        assert [m["name"] for m in client.get("/v1/models").json()] == ["audit_events"]
        denied = client.get("/v1/models/incidents/rows")
        assert denied.status_code == 403
        assert "incidents:read" in denied.json()["error"]["message"]
        assert client.get("/v1/stats").status_code == 403  # hourly counts need activity_hourly
        assert client.get("/v1/events").status_code == 200


def _problems(response: httpx.Response) -> dict[str, str]:
    return {p["location"]: p["message"] for p in response.json()["error"].get("problems", [])}


def test_bad_writes_are_refused_with_where_and_why_and_store_nothing(api: Deployment) -> None:
    stored = api.stored()
    with api.client() as client:
        too_big = client.post("/v1/events", json={**INCIDENT, "metadata": {"x": "y" * 30_000}})
        assert too_big.status_code == 413
        assert too_big.json()["error"]["type"] == "body_too_large"
        chunked = client.post(
            "/v1/events",
            content=iter([b"[" + b" " * 15_000, b" " * 15_000 + b"]"]),
            headers={"Content-Type": "application/json"},
        )
        assert chunked.status_code == 413
        batch = client.post("/v1/events", json=[INCIDENT] * 21)
        assert batch.status_code == 413
        assert "at most 20" in batch.json()["error"]["message"]
        bad_json = client.post(
            "/v1/events", content=b'{"action": ', headers={"Content-Type": "application/json"}
        )
        assert bad_json.status_code == 400
        assert bad_json.json()["error"]["type"] == "invalid_json"
        assert client.post("/v1/events", json=[]).status_code == 422
        assert client.post("/v1/events", json="incident.opened").status_code == 422
        unknown_field = client.post("/v1/events", json={**INCIDENT, "colour": "red"})
        assert unknown_field.status_code == 422
        assert "body.colour" in _problems(unknown_field)
        unknown_action = client.post("/v1/events", json={**INCIDENT, "action": "incident.opend"})
        assert unknown_action.status_code == 422
        assert "incident.opened" in _problems(unknown_action)["body.action"]
        bad_metadata = client.post(
            "/v1/events",
            json=[INCIDENT, {**INCIDENT, "metadata": {**INCIDENT["metadata"], "severity": "high"}}],
        )
        assert bad_metadata.status_code == 422
        assert list(_problems(bad_metadata)) == ["body[1].metadata.severity"]
        bad_actor = client.post("/v1/events", json={**INCIDENT, "actor": {"type": "robot arm"}})
        assert set(_problems(bad_actor)) == {"body.actor.id", "body.actor.type"}
        naive = client.post("/v1/events", json={**INCIDENT, "occurred_at": "2026-11-25T10:00:00"})
        assert "body.occurred_at" in _problems(naive)
        bad_key = client.post("/v1/events", json=INCIDENT, headers={"Idempotency-Key": "x" * 300})
        assert bad_key.status_code == 400
    assert api.stored() == stored


@pytest.mark.parametrize(
    ("params", "location"),
    [
        ({"cursor": "not-a-cursor"}, "query.cursor"),
        ({"since": "yesterday-ish"}, "query.since"),
        ({"until": "2026-13-45"}, "query.until"),
        ({"since": "1h", "until": "2h"}, "query.since"),
        ({"limit": "ten"}, "query.limit"),
        ({"limit": "0"}, "query.limit"),
        ({"colour": "red"}, "query.colour"),
        ({"stream_id": "42"}, "query.stream_id"),
        ({"target": "no-colon"}, "query.target"),
        ({"text": "x" * 201}, "query.text"),
    ],
)
def test_bad_queries_are_400_naming_the_parameter(
    api: Deployment, params: dict[str, str], location: str
) -> None:
    with api.client("acme_read") as client:
        response = client.get("/v1/events", params=params)
    assert response.status_code == 400, response.text
    assert location in _problems(response)


def test_bad_paths_and_stats_parameters(api: Deployment) -> None:
    with api.client("acme_read") as client:
        bad_id = client.get("/v1/events/not-a-uuid")
        assert bad_id.status_code == 400
        assert "path.event_id" in _problems(bad_id)
        assert client.get("/v1/stats", params={"group_by": "colour"}).status_code == 400
        assert client.get("/v1/stats", params={"interval": "fortnight"}).status_code == 400
        assert client.get("/v1/models/nonexistent/rows").status_code == 404
        assert client.get("/v1/models/audit_events/rows").status_code == 404
        assert client.get("/v1/live", params={"colour": "red"}).status_code == 400
        assert client.get("/v1/live", headers={"Last-Event-ID": "abc"}).status_code == 400
        assert client.get("/v1/nowhere").status_code == 404
        assert client.delete("/v1/events").status_code == 405


def test_a_cursor_pages_through_without_gaps(api: Deployment) -> None:
    with api.client() as client:
        batch = [
            {**INCIDENT, "metadata": {**INCIDENT["metadata"], "title": f"t{i}"}} for i in range(15)
        ]
        ids = set(client.post("/v1/events", json=batch).json()["ids"])
        api.projected("acme", 15)
        seen: list[str] = []
        cursor = None
        while True:
            page = client.get(
                "/v1/events", params={"limit": 4, **({"cursor": cursor} if cursor else {})}
            ).json()
            seen += [e["event_id"] for e in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert len(seen) == len(set(seen)) == 15
        assert set(seen) == ids
        foreign = client.get(
            "/v1/events", params={"limit": 4, "action": "x.y", "cursor": page_cursor(client)}
        )
        assert foreign.status_code == 400


def test_concurrent_reads_all_succeed(api: Deployment) -> None:
    """24 clients at once, 96 GETs over the read routes: each query takes the client of the
    thread running it (a server refuses two concurrent queries in one session, and a
    dependency runs on another worker thread than its endpoint)."""
    with api.client() as client:
        ids = client.post("/v1/events", json=[INCIDENT] * 5).json()["ids"]
    api.projected("acme", 5)
    paths = ["/v1/events", f"/v1/events/{ids[0]}", "/v1/stats", "/v1/models/incidents/rows"]
    start = threading.Barrier(24)

    def read(_: int) -> list[int]:
        with api.client() as client:
            start.wait(timeout=30)
            return [client.get(path).status_code for path in paths]

    with ThreadPoolExecutor(24) as pool:
        statuses = [status for replies in pool.map(read, range(24)) for status in replies]
    assert len(statuses) == 96
    assert statuses == [200] * 96


def page_cursor(client: httpx.Client) -> str:
    cursor: str = client.get("/v1/events", params={"limit": 1}).json()["next_cursor"]
    return cursor


def test_readiness_is_503_while_the_event_store_cannot_answer(
    api: Deployment, pg_settings: Settings
) -> None:
    schema, table = pg_settings.postgres_schema, api.audit.app.recorder.events_table_name
    with (
        psycopg.connect(pg_settings.postgres_conninfo(), autocommit=True) as admin,
        api.client("admin") as client,
    ):
        admin.execute(f'ALTER TABLE "{schema}"."{table}" RENAME TO hidden_events')
        try:
            down = client.get("/readyz")
            # Long enough for every processor's next read to fail too (they poll each second).
            time.sleep(1.5)
        finally:
            admin.execute(f'ALTER TABLE "{schema}".hidden_events RENAME TO "{table}"')

        def ready_again() -> httpx.Response | None:
            response = client.get("/readyz")
            return response if response.status_code == 200 else None

        # Nothing new is written: the processors must count as healthy once they read again.
        up = eventually(ready_again, timeout=30)

    assert down.status_code == 503
    body = down.json()
    assert not body["ready"]
    assert not body["event_store"]["ok"]
    assert "does not exist" in body["event_store"]["detail"]
    assert body["clickhouse"]["ok"], "a store failure is not ClickHouse's"
    assert up.json()["event_store"]["ok"]


def test_health_readiness_and_openapi(api: Deployment) -> None:
    with api.client("admin") as admin:
        ready = admin.get("/readyz")
    with api.client(None) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        assert ready.status_code == 200
        body = ready.json()
        assert body["ready"]
        assert body["event_store"]["ok"]
        assert body["clickhouse"]["ok"]
        assert {p["name"] for p in body["processors"]} == {
            "audit_events",
            "activity_hourly",
            "incidents",
            "monitors",
        }
        schema = client.get("/openapi.json").json()
        parameters = {p["name"] for p in schema["paths"]["/v1/events"]["get"]["parameters"]}
        assert {"action", "actor_id", "target", "since", "cursor"} <= parameters
        assert "EventIn" in schema["components"]["schemas"]
        viewer = client.get("/")
        assert viewer.status_code == 200
        assert "Sign in with an API key" in viewer.text


def test_readiness_tells_only_ready_or_not_without_an_admin_key(api: Deployment) -> None:
    """Paths, positions, counts and error texts are the operator's: without a key /readyz
    says only whether the service is ready; a key must have the ``admin`` scope."""
    with api.client(None) as anyone:
        assert anyone.get("/readyz").json() == {"ready": True}
    with api.client(None, Authorization="Bearer ack_000000000000_" + "x" * 43) as bad:
        assert bad.get("/readyz").status_code == 401
    with api.client("acme") as tenant:
        refused = tenant.get("/readyz")
        assert refused.status_code == 403
        assert refused.json()["error"]["type"] == "missing_scope"
    with api.client("admin") as admin:
        details = admin.get("/readyz").json()
    assert details["ready"]
    assert "head" in details["event_store"]["detail"]
    assert {p["name"] for p in details["processors"]} >= {"audit_events", "incidents"}


def test_moments_events_cannot_hold_are_refused_over_http(api: Deployment) -> None:
    stored = api.stored()
    with api.client() as client:
        for moment, says in [
            ("1899-12-31T23:59:59.999999Z", "outside the range events can hold"),
            ("2300-01-01T00:00:00Z", "outside the range events can hold"),
            ("2299-12-31T23:59:59Z", "is in the future"),
        ]:
            refused = client.post(
                "/v1/events", json=[INCIDENT, {**INCIDENT, "occurred_at": moment}]
            )
            assert refused.status_code == 422, refused.text
            assert says in _problems(refused)["body[1].occurred_at"]
        assert api.stored() == stored
        backdated = client.post(
            "/v1/events", json={**INCIDENT, "occurred_at": "1900-01-01T00:00:00Z"}
        )
        assert backdated.status_code == 201, backdated.text
        assert backdated.json()["items"][0]["occurred_at"].startswith("1900-01-01T00:00:00")
