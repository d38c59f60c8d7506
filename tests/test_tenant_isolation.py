"""No response to one workspace depends on another workspace's data, on every route of the API.

Workspace B (globex) probes workspace A (acme) through a real server: every route is called with
A's event ids, stream ids, cursors, live ids, idempotency keys, key id and ids A has not used
yet, and each answer is compared with the answer to the same request carrying an identifier
that A does not hold (a random one, or for a cursor one issued to a third workspace). Both must
be equal once the probed value itself and the moment of the request are blanked out, and no
answer to B may contain anything of A's that B did not send. The routes are enumerated from the
app itself, so a route added later fails this test until it is probed here. Afterwards A uses
the ids B tried to squat, and gets its own events.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4, uuid5

import httpx
import pytest
from fastapi import FastAPI
from starlette.routing import Mount, Route

from auditcore import AuditCore, Incident, Settings
from auditcore.api import ApiConfig, create_app
from auditcore.api.config import ResourceLimits
from auditcore.api.routes.events import _IDEMPOTENCY_NAMESPACE
from auditcore.events.ids import stream_id_for
from auditcore.tenancy import Directory, Scope
from tests.apiserver import ServerThread, eventually
from tests.test_api import Deployment
from tests.test_live import Tail

A, B, C = "acme", "globex", "initech"
SECRET = "zq7-acme-private"
"""A word that only workspace A's events hold."""

# Moments and per-request values: blanked before answers are compared.
_VOLATILE = {"recorded_at", "occurred_at", "request_id", "since", "until", "failed_at"}
_MOMENT = re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)?")


@dataclass
class Victim:
    """What workspace A holds, and what it means to use next."""

    event_id: UUID
    stream_id: UUID
    incident_event_id: UUID
    incident_id: UUID
    actor_id: str
    target_id: str
    service: str
    cursor: str
    position: int
    used_key: str
    used_key_ids: list[str]
    future_id: UUID = field(default_factory=uuid4)
    future_key: str = field(default_factory=lambda: f"a-next-{uuid4().hex}")
    key_id: str = ""
    viewer_token_id: str = ""
    """A viewer token A minted (its id names it in routes; its origins are A's)."""
    action: str = ""
    """An action A registered as JSON Schema, for A only."""
    log_stream: str = ""
    """A's log stream's id."""

    def markers(self) -> set[str]:
        """Strings of A's that no answer to B may hold (unless B sent that very string)."""
        return {
            SECRET,
            str(self.event_id),
            str(self.stream_id),
            str(self.incident_event_id),
            str(self.incident_id),
            self.actor_id,
            self.target_id,
            self.service,
            self.key_id,
            self.viewer_token_id,
            "https://acme-private.example",
            self.action,
            self.log_stream,
            *self.used_key_ids,
        }


@dataclass
class Probe:
    """One request of B's, made once with A's value and once with a control value."""

    route: str
    name: str
    theirs: object
    control: object
    request: Callable[[object], dict[str, Any]]
    """``value -> httpx.request`` arguments (method, url, params, headers, json)."""


@dataclass
class World:
    api: Deployment
    app: FastAPI
    victim: Victim
    cursor_elsewhere: str
    answers: list[tuple[str, str]] = field(default_factory=list)
    """(route, text) of every answer B got, for the marker check."""


@pytest.fixture
def world(pg_settings: Settings) -> Iterator[World]:
    # Rate and failed-authentication limits off: this test sends many requests from one place.
    config = ApiConfig(
        live_keepalive=0.2,
        limits=ResourceLimits(rate_per_second=0, auth_failures=0, security_workspace=None),
    )
    with AuditCore(pg_settings) as audit:
        directory = Directory(pg_settings)
        keys = {}
        for workspace in (A, B, C):
            directory.create_workspace(workspace)
            keys[workspace] = directory.create_key(
                workspace, "rw", [Scope.READ, Scope.WRITE, Scope.EMBED]
            ).token
            keys[f"{workspace}_admin"] = directory.create_key(workspace, "ops", [Scope.ADMIN]).token
        app = create_app(audit, directory, config)
        try:
            with ServerThread(app) as server:
                services = app.state.services
                api = Deployment(server.url, audit, directory, services.hub, keys, services)
                victim, elsewhere = _populate(api)
                yield World(api, app, victim, elsewhere)
        finally:
            directory.close()


def _event(title: str, **extra: Any) -> dict[str, Any]:
    return {
        "action": "incident.opened",
        "metadata": {"title": title, "severity": "sev2", "service": "api"},
        **extra,
    }


def _post(api: Deployment, key: str, body: object, **headers: str) -> httpx.Response:
    with api.client(key, **headers) as client:
        response = client.post("/v1/events", json=body)
    assert response.status_code == 201, response.text
    return response


def _populate(api: Deployment) -> tuple[Victim, str]:
    """B's own events first, then A's (so A's live ids come after B's), then C's."""
    a_day_ago = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    _post(api, B, [_event(f"globex {n}", occurred_at=a_day_ago) for n in range(2)])
    actor_id, target_id, service = f"user-{SECRET}", f"doc-{SECRET}", f"svc-{SECRET}"
    event_id = uuid4()
    _post(
        api,
        A,
        _event(
            SECRET,
            event_id=str(event_id),
            actor={"id": actor_id, "type": "user", "name": SECRET},
            targets=[{"type": "document", "id": target_id, "name": SECRET}],
        ),
    )
    action = f"zq7.acme_private_{uuid4().hex[:8]}"
    with api.client(f"{A}_admin") as admin:
        registered = admin.post(
            f"/v1/actions/{action}/schemas",
            json={
                "schema": {
                    "properties": {"zq7": {"type": "string"}},
                    "x-display-template": f"{SECRET} {{metadata.zq7}}",
                },
                "description": SECRET,
            },
        )
        assert registered.status_code == 201, registered.text
        streamed = admin.post(
            "/v1/streams",
            json={"name": SECRET, "settings": {"url": "http://127.0.0.1:9/zq7",
                  "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}},
        )  # fmt: skip
        assert streamed.status_code == 201, streamed.text
    used_key = f"a-used-{uuid4().hex}"
    used = _post(api, A, [_event(f"{SECRET} keyed")], **{"Idempotency-Key": used_key})
    incident = Incident.open(A, title=SECRET, severity="sev1", service=service)
    incident.acknowledge(SECRET)
    incident_events = api.audit.save(incident)
    position = api.audit.app.recorder.max_notification_id() or 0
    # C's events are older than B's, A's newer: a page of B's after A's cursor would differ
    # from one after C's.
    long_ago = (datetime.now(UTC) - timedelta(days=2)).isoformat()
    _post(api, C, [_event(f"initech {n}", occurred_at=long_ago) for n in range(2)])
    api.projected(B, 2)
    api.projected(C, 2)
    api.projected(A, 4)
    victim = Victim(
        event_id=event_id,
        stream_id=stream_id_for(A, event_id),
        incident_event_id=incident_events[0].event_id,
        incident_id=incident.id,
        actor_id=actor_id,
        target_id=target_id,
        service=service,
        cursor=_cursor(api, A),
        position=position,
        used_key=used_key,
        used_key_ids=used.json()["ids"],
        key_id=api.keys[A].split("_")[1],
        action=action,
        log_stream=streamed.json()["id"],
    )
    with api.client(A) as client:
        minted = client.post(
            "/v1/viewer-tokens",
            json={"filters": {"actor_id": actor_id}, "origins": ["https://acme-private.example"]},
        )
        assert minted.status_code == 201, minted.text
        victim.viewer_token_id = minted.json()["id"]
    return victim, _cursor(api, C)


def _cursor(api: Deployment, key: str) -> str:
    with api.client(key) as client:
        cursor: str = client.get("/v1/events", params={"limit": 1}).json()["next_cursor"]
    assert cursor
    return cursor


def _workos(action: object, **headers: str) -> dict[str, Any]:
    event = {
        "action": action,
        "occurred_at": datetime.now(UTC).isoformat(),
        "actor": {"type": "user", "id": "user_b"},
        "targets": [],
        "metadata": {"body": "hello"},
    }
    body = {"organization_id": B, "event": event}
    return {"method": "POST", "url": "/audit_logs/events", "json": body, "headers": headers}


def _probes(victim: Victim, cursor_elsewhere: str, admin: str) -> list[Probe]:
    def get(url: str, **params: object) -> Callable[[object], dict[str, Any]]:
        return lambda value: {
            "method": "GET",
            "url": url.format(value=value),
            "params": {
                k: (v.format(value=value) if isinstance(v, str) else v) for k, v in params.items()
            },
        }

    def post(value: object, **headers: str) -> dict[str, Any]:
        body = _event("globex probe", event_id=str(value)) if not headers else _event("globex")
        return {"method": "POST", "url": "/v1/events", "json": body, "headers": headers}

    v = victim
    reads = [
        Probe(
            "/v1/events/{event_id}", "A's event id", v.event_id, uuid4(), get("/v1/events/{value}")
        ),
        Probe(
            "/v1/events/{event_id}",
            "A's aggregate event id",
            v.incident_event_id,
            uuid4(),
            get("/v1/events/{value}"),
        ),
        Probe(
            "/v1/events/{event_id}/proof",
            "A's event id",
            v.event_id,
            uuid4(),
            get("/v1/events/{value}/proof"),
        ),
        Probe(
            "/v1/streams/{stream_id}/events",
            "A's stream id",
            v.stream_id,
            uuid4(),
            get("/v1/streams/{value}/events"),
        ),
        Probe(
            "/v1/streams/{stream_id}/events",
            "A's incident id",
            v.incident_id,
            uuid4(),
            get("/v1/streams/{value}/events"),
        ),
        Probe(
            "/v1/events",
            "A's stream id",
            v.incident_id,
            uuid4(),
            get("/v1/events", stream_id="{value}"),
        ),
        Probe(
            "/v1/events",
            "A's actor id",
            v.actor_id,
            f"user-{uuid4().hex}",
            get("/v1/events", actor_id="{value}"),
        ),
        Probe(
            "/v1/events",
            "A's target id",
            v.target_id,
            f"doc-{uuid4().hex}",
            get("/v1/events", target_id="{value}"),
        ),
        Probe("/v1/events", "A's word", SECRET, uuid4().hex, get("/v1/events", text="{value}")),
        Probe(
            "/v1/events",
            "A's cursor (control: a third workspace's)",
            v.cursor,
            cursor_elsewhere,
            get("/v1/events", limit=1, cursor="{value}"),
        ),
        Probe(
            "/v1/stats",
            "A's actor id",
            v.actor_id,
            f"user-{uuid4().hex}",
            get("/v1/stats", actor_id="{value}", group_by="actor"),
        ),
        Probe(
            "/v1/models/{name}/rows",
            "A's service",
            v.service,
            f"svc-{uuid4().hex}",
            get("/v1/models/incidents/rows", service="{value}"),
        ),
        Probe(
            "/v1/events/export",
            "A's stream id",
            v.incident_id,
            uuid4(),
            get("/v1/events/export", stream_id="{value}", format="jsonl"),
        ),
        Probe(
            "/v1/events/export",
            "A's actor id",
            v.actor_id,
            f"user-{uuid4().hex}",
            get("/v1/events/export", actor_id="{value}", format="csv"),
        ),
        Probe(
            "/v1/events",
            "A's key id, with a wrong secret, as the key",
            v.key_id,
            uuid4().hex[:12],
            lambda value: {
                "method": "GET",
                "url": "/v1/events",
                "headers": {"Authorization": f"Bearer ack_{value}_{'x' * 43}"},
            },
        ),
    ]
    reads.append(
        Probe(
            "/audit_logs/events",
            "A's own action, registered for A only",
            v.action,
            f"zq7.other_{uuid4().hex[:8]}",
            _workos,
        )
    )
    writes = [
        Probe(
            "/audit_logs/events",
            "A's idempotency key",
            v.used_key,
            f"b-{uuid4().hex}",
            lambda value: _workos("incident.comment_added", **{"Idempotency-Key": str(value)}),
        ),
        Probe(
            "/v1/actions/{name}/schemas",
            "A's action name, registered by B's admin key for B",
            v.action,
            f"zq7.other_{uuid4().hex[:8]}",
            lambda value: {
                "method": "POST",
                "url": f"/v1/actions/{value}/schemas",
                "json": {"schema": {"additionalProperties": True}},
                "headers": {"Authorization": f"Bearer {admin}"},
            },
        ),
        # Erasure needs the admin scope (refused to B's key either way) and names only B's
        # own workspace's subjects; tests/test_erasure.py erases with admin keys.
        Probe(
            "/v1/erasures",
            "A's actor id as the subject",
            v.actor_id,
            f"user-{uuid4().hex}",
            lambda value: {"method": "POST", "url": "/v1/erasures", "json": {"subject_id": value}},
        ),
        Probe("/v1/events", "A's event id", v.event_id, uuid4(), post),
        Probe("/v1/events", "A's aggregate event id", v.incident_event_id, uuid4(), post),
        Probe("/v1/events", "an id A is about to use", v.future_id, uuid4(), post),
        Probe(
            "/v1/events",
            "A's idempotency key",
            v.used_key,
            f"b-{uuid4().hex}",
            lambda value: post(None, **{"Idempotency-Key": str(value)}),
        ),
        Probe(
            "/v1/events",
            "an idempotency key A is about to use",
            v.future_key,
            f"b-{uuid4().hex}",
            lambda value: post(None, **{"Idempotency-Key": str(value)}),
        ),
    ]
    streams = [
        Probe(
            f"/v1/streams/{{log_stream_id}}{suffix}",
            "A's log stream id, by B's admin key",
            v.log_stream,
            f"ls_{uuid4().hex[:24]}",
            lambda value, method=method, suffix=suffix, body=body: {
                "method": method,
                "url": f"/v1/streams/{value}{suffix}",
                "json": body,
                "headers": {"Authorization": f"Bearer {admin}"},
            },
        )
        for method, suffix, body in (
            ("GET", "", None),
            ("POST", "/pause", None),
            ("POST", "/resume", None),
            ("POST", "/replay", {"from": "1h"}),
            ("DELETE", "", None),
        )
    ]
    viewer = [
        Probe(
            "/v1/viewer-tokens",
            "A's viewer tokens, listed by B's embed key",
            v.viewer_token_id,
            f"vt_{uuid4().hex[:12]}",
            lambda _: {"method": "GET", "url": "/v1/viewer-tokens"},
        ),
        Probe(
            "/v1/viewer-tokens/{token_id}",
            "A's viewer token id, revoked by B",
            v.viewer_token_id,
            f"vt_{uuid4().hex[:12]}",
            lambda value: {"method": "DELETE", "url": f"/v1/viewer-tokens/{value}"},
        ),
        # The link's secret is A's credential itself; B knows only the token's id.
        Probe(
            "/v1/viewer-sessions",
            "A's viewer token id in a link with a guessed secret",
            v.viewer_token_id,
            f"vt_{uuid4().hex[:12]}",
            lambda value: {
                "method": "POST",
                "url": "/v1/viewer-sessions",
                "json": {"link": f"avl_{str(value)[3:]}_{'A' * 43}"},
            },
        ),
        Probe(
            "/embed/{token_id}",
            "A's viewer token id: the page is the same (its frame-ancestors are A's, by design)",
            v.viewer_token_id,
            f"vt_{uuid4().hex[:12]}",
            get("/embed/{value}"),
        ),
    ]
    return reads + writes + streams + viewer


def _normalised(text: str, values: dict[str, str]) -> Any:
    """The answer with the probed value (and what B derives from it) and moments blanked."""
    for value, placeholder in values.items():
        text = text.replace(value, placeholder)
    text = _MOMENT.sub("<moment>", text)
    try:
        parsed = json.loads(text)
    except ValueError:
        return text

    def blank(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: "<volatile>" if k in _VOLATILE else blank(item) for k, item in node.items()}
        if isinstance(node, list):
            return [blank(item) for item in node]
        return node

    return blank(parsed)


def _derived(value: object) -> dict[str, str]:
    """What B's answer may carry because B sent ``value``: the value itself, the stream id and
    event ids it names in B's workspace."""
    text = str(value)
    derived = {text: "<probed>"}
    try:
        derived[str(stream_id_for(B, UUID(text)))] = "<probed stream>"
    except ValueError:
        derived[str(uuid5(_IDEMPOTENCY_NAMESPACE, f"{B}\n{text}\n0"))] = "<keyed id>"
        derived[str(uuid5(_IDEMPOTENCY_NAMESPACE, f"{B}\n{text}\nworkos"))] = "<keyed id>"
        derived[str(stream_id_for(B, uuid5(_IDEMPOTENCY_NAMESPACE, f"{B}\n{text}\n0")))] = (
            "<keyed stream>"
        )
    return derived


def _ask(world: World, client: httpx.Client, probe: Probe, value: object) -> tuple[int, Any]:
    arguments = probe.request(value)
    response = client.request(**arguments)
    world.answers.append((probe.route, response.text))
    # A probe may echo its own value; nothing else of A's may be in the answer.
    mine = set(_derived(value))
    for marker in world.victim.markers() - mine:
        assert marker not in response.text, (probe.route, probe.name, marker, response.text)
    assert response.status_code < 500, (probe.route, response.text)
    return response.status_code, _normalised(response.text, _derived(value))


def _routes(app: FastAPI) -> set[str]:
    """Every path the app serves: the documented API (its OpenAPI schema, which FastAPI builds
    from every included router) and the app's own routes and mounts (viewer, assets, docs)."""
    paths = set(app.openapi()["paths"])
    paths |= {route.path for route in app.routes if isinstance(route, Route | Mount)}
    return paths


# Routes whose answers carry no identifier a caller chooses: each is called by B and must not
# hold anything of A's (the marker check), but there is no A-value to compare with.
_PLAIN = {
    "/": "/",
    "/assets": "/assets/viewer.js",
    "/openapi.json": "/openapi.json",
    "/docs": "/docs",
    "/docs/assets": "/docs/assets/swagger-ui-bundle.js",
    "/healthz": "/healthz",
    "/readyz": "/readyz",
    "/v1/models": "/v1/models",
    "/v1/actions": "/v1/actions",
    "/v1/dead-letters": "/v1/dead-letters?status=all",
    "/v1/checkpoints/latest": "/v1/checkpoints/latest",
    "/v1/checkpoints/public-key": "/v1/checkpoints/public-key",
    "/v1/checkpoints/consistency": "/v1/checkpoints/consistency?from=1&to=2",
    "/v1/reports": "/v1/reports?since=30d",
    "/v1/retention": "/v1/retention",
    "/v1/streams": "/v1/streams",
    "/v1/me": "/v1/me",
    "/v1/display-templates": "/v1/display-templates",
}


def test_no_answer_to_one_workspace_depends_on_anothers_data(world: World) -> None:
    api, victim = world.api, world.victim
    probes = _probes(victim, world.cursor_elsewhere, api.keys[f"{B}_admin"])
    probed = {p.route for p in probes} | set(_PLAIN) | {"/v1/live"}
    assert probed == _routes(world.app), "probe every route of the API here"

    # First, while B has no events after A's: B's answers below add some.
    _live_resume_from_their_position(world)
    differences = []
    with api.client(B) as client:
        for path in _PLAIN.values():
            response = client.get(path)
            world.answers.append((path, response.text))
            assert response.status_code < 500, (path, response.text)
            for marker in victim.markers():
                assert marker not in response.text, (path, marker)
        for probe in probes:
            theirs = _ask(world, client, probe, probe.theirs)
            control = _ask(world, client, probe, probe.control)
            if theirs != control:
                differences.append((probe.route, probe.name, theirs, control))
    assert not differences, "answers to B depend on A's data:\n" + "\n".join(
        f"{route} with {name}: {theirs} but otherwise {control}"
        for route, name, theirs, control in differences
    )

    # A then uses what B tried to squat, and gets its own events.
    mine = _post(api, A, _event(f"{SECRET} next", event_id=str(victim.future_id))).json()
    assert mine["items"][0]["metadata"]["title"] == f"{SECRET} next"
    assert mine["items"][0]["workspace_id"] == A
    again = _post(api, A, [_event(f"{SECRET} keyed")], **{"Idempotency-Key": victim.used_key})
    assert again.json()["ids"] == victim.used_key_ids
    keyed = _post(api, A, [_event(f"{SECRET} k2")], **{"Idempotency-Key": victim.future_key})
    assert keyed.json()["items"][0]["metadata"]["title"] == f"{SECRET} k2"
    with api.client(A) as client:
        found = client.get(f"/v1/events/{victim.future_id}")
        assert found.status_code == 200, found.text
        assert found.json()["metadata"]["title"] == f"{SECRET} next"


def _live_resume_from_their_position(world: World) -> None:
    """``Last-Event-ID`` at one of A's events, as A's live id or as its store position: B is
    refused either way (a 400, as any id not of its stream), and sees nothing of A's."""
    api, victim = world.api, world.victim
    theirs = Tail(api, A, {})
    try:
        _post(api, A, _event(f"{SECRET} live"))
        eventually(lambda: theirs.ids)
    finally:
        theirs.close()
    with api.client(B) as client:
        for last_id in (theirs.ids[0], str(victim.position), str(10**15)):
            response = client.get("/v1/live", headers={"Last-Event-ID": last_id})
            assert response.status_code == 400, (last_id, response.text)
            assert SECRET not in response.text
