"""Point questions (one event by id, one stream's history) are answered by the event store,
and the answer is the very JSON the ``audit_events`` read model gives, for hostile data: every
script, the first and last moments the read side holds, empty and maximal sizes, erased
subjects. Another workspace's id, and a pruned event, are not found."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest
import sqlalchemy
from pydantic import BaseModel, ConfigDict

from auditcore import AuditCore, Settings
from auditcore.api import ApiConfig
from auditcore.api.config import ResourceLimits
from auditcore.errors import NotFoundError
from auditcore.events.actions import ActionRegistry
from auditcore.events.envelope import AuditEvent
from auditcore.lifecycle.master import MasterKeys, new_master_key
from auditcore.lifecycle.prune import delete_events, delete_rows
from auditcore.projection.log import LogReader
from auditcore.readmodel.queries import WorkspaceReader
from auditcore.store.points import StorePoints
from auditcore.tenancy import Directory, Scope
from auditcore.tenancy.keycache import VerifiedKeys
from tests.test_api import Deployment, deploy

SCRIPTS = [
    "Émile Zola",
    "E\u0301MILE",
    "Straße",
    "İstanbul \u0131",
    "ΣΊΣΥΦΟΣ",
    "ПРИВЕТ мир",
    "東京タワー",
    "مرحبا بالعالم",
    "שלום",
    "नमस्ते",
    "🔥👩‍👩‍👧‍👦",
    "\u200b\u200d\ufeff",
    'tab\there\nnewline \\ "quotes" </script>',
    "\U0010fffd",
]


class Anything(BaseModel):
    model_config = ConfigDict(extra="allow")


def registry() -> ActionRegistry:
    actions = ActionRegistry(max_future=timedelta(days=300 * 366))
    actions.register("probe.noted", Anything)
    return actions


@pytest.fixture
def sealed(store_settings: Settings) -> Iterator[AuditCore]:
    """A store that encrypts personal fields (so erasure applies), with a free-form action."""
    masters = MasterKeys.parse(new_master_key(), "test")
    with AuditCore(store_settings, registry=registry(), master_keys=masters) as core:
        yield core


def projected_reader(audit: AuditCore, workspace: str) -> WorkspaceReader:
    """A reader whose point questions go to the ``audit_events`` read model (no store)."""
    return WorkspaceReader(
        audit.clickhouse_clients, audit.read_models, workspace, cursor_key=lambda: b"k" * 32
    )


def hostile_drafts(workspace: str) -> list[dict[str, Any]]:
    drafts: list[dict[str, Any]] = []
    for index, text in enumerate(SCRIPTS):
        drafts.append(
            {
                "action": "probe.noted",
                "workspace_id": workspace,
                "metadata": {"text": text, "nested": {"list": [text, 1, 2.5, None, True]}},
                "actor": {"id": f"user_{index}", "type": "user", "name": text},
                "targets": [{"type": "doc", "id": text, "name": text}, {"type": "t", "id": "2"}],
                "context": {"ip": "2001:db8::1", "user_agent": text, "request_id": text},
            }
        )
    drafts += [
        # The first and last moments the read side holds.
        {"action": "probe.noted", "workspace_id": workspace, "occurred_at": moment}
        for moment in (
            datetime(1900, 1, 1, tzinfo=UTC),
            datetime(2299, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        )
    ]
    # Empty everywhere, and as large as the bounds allow.
    drafts.append({"action": "probe.noted", "workspace_id": workspace, "metadata": {}})
    drafts.append(
        {
            "action": "probe.noted",
            "workspace_id": workspace,
            "metadata": {f"k{i:02}": "é" * 250 for i in range(50)},
            "actor": {"id": "a" * 256, "type": "service", "name": "n" * 256},
            "targets": [{"type": "x", "id": str(i), "name": "字" * 60} for i in range(50)],
        }
    )
    return drafts


def json_of(events: list[AuditEvent]) -> list[bytes]:
    return [event.model_dump_json().encode() for event in events]


def test_store_answers_are_the_read_models_json_for_hostile_data(sealed: AuditCore) -> None:
    audit = sealed
    ours = audit.record_many(hostile_drafts("acme"))
    theirs = audit.record_many(hostile_drafts("globex"))
    # An erased subject reads as erased on both paths.
    audit.erase("acme", "user_3")
    audit.project()
    store, projected = audit.reader("acme"), projected_reader(audit, "acme")
    assert store.points is not None
    assert projected.points is None
    for event in ours:
        assert json_of([store.get(event.event_id)]) == json_of([projected.get(event.event_id)])
        assert json_of(store.history(event.stream_id)) == json_of(
            projected.history(event.stream_id)
        )
    erased = store.get(ours[3].event_id)
    assert erased.actor.name != SCRIPTS[3]
    assert erased.context.user_agent != SCRIPTS[3]
    # Another workspace's ids and streams: not found, exactly like unknown ones.
    for reader in (store, projected):
        for event in theirs[:3]:
            with pytest.raises(NotFoundError):
                reader.get(event.event_id)
            with pytest.raises(NotFoundError):
                reader.history(event.stream_id)
        with pytest.raises(NotFoundError):
            reader.get(uuid4())


def test_fresh_events_are_found_before_they_are_projected(audit: AuditCore) -> None:
    event = audit.record("incident.comment_added", workspace_id="acme", metadata={"body": "x"})
    reader = audit.reader("acme")
    assert reader.get(event.event_id) == event
    assert reader.history(event.stream_id) == [event]
    with pytest.raises(NotFoundError):
        projected_reader(audit, "acme").get(event.event_id)


def test_a_pruned_event_is_not_found_on_either_path(audit: AuditCore) -> None:
    first = audit.record("incident.comment_added", workspace_id="acme", metadata={"body": "0"})
    doomed, kept = (
        audit.record("incident.comment_added", workspace_id="acme", metadata={"body": str(i)})
        for i in (1, 2)
    )
    audit.project()
    store, projected = audit.reader("acme"), projected_reader(audit, "acme")
    at = {(UUID(str(e.stream_id)), e.version): e.position for e in LogReader(audit.app).after(0, 9)}
    positions = {event.event_id: at[event.stream_id, event.version] for event in (first, doomed)}
    assert delete_events(audit.app, "acme", [(positions[doomed.event_id], doomed.event_id)]) == 1
    # The store forgets it at once; the read model until retention deletes its rows.
    with pytest.raises(NotFoundError):
        store.get(doomed.event_id)
    with pytest.raises(NotFoundError):
        store.history(doomed.stream_id)
    assert projected.get(doomed.event_id) == doomed
    assert (
        delete_rows(
            audit.clickhouse,
            audit.settings.clickhouse_target,
            audit.read_models,
            {"acme": positions[doomed.event_id]},
            keep=positions[first.event_id],
        )
        == []
    )
    for reader in (store, projected):
        with pytest.raises(NotFoundError):
            reader.get(doomed.event_id)
        assert reader.get(kept.event_id) == kept
        assert reader.get(first.event_id) == first


def test_points_of_one_workspace_never_read_another_workspaces_stream(audit: AuditCore) -> None:
    """Even a stream holding two workspaces' events (the store's key is the stream alone)
    answers only the asking workspace's events."""
    stream = uuid4()
    a = audit.record("incident.comment_added", workspace_id="acme", metadata={"body": "a"})
    points = StorePoints(audit.app)
    assert points.history("acme", a.stream_id) == [a]
    assert points.history("globex", a.stream_id) == []
    assert points.event("globex", a.event_id) is None
    assert points.history("acme", stream) == []
    assert isinstance(a.stream_id, UUID)


@pytest.fixture
def api(pg_settings: Settings) -> Iterator[Deployment]:
    yield from deploy(pg_settings, ApiConfig(limits=ResourceLimits(rate_per_second=0)))


def test_over_http_the_store_answers_with_the_read_models_json(api: Deployment) -> None:
    drafts = [
        {key: value for key, value in draft.items() if key != "workspace_id"}
        for draft in hostile_drafts("acme")
        if draft.get("action") == "probe.noted" and "occurred_at" not in draft
    ]
    drafts = [{**draft, "action": "incident.comment_added", "metadata": {"body": "é"}}
              for draft in drafts]  # fmt: skip
    with api.client("acme") as client:
        response = client.post("/v1/events", json=drafts)
        assert response.status_code == 201, response.text
        ids = response.json()["ids"]
    api.audit.project()
    projected = projected_reader(api.audit, "acme")
    with api.client("acme_read") as ours, api.client("globex") as theirs:
        for event_id in ids:
            expected = projected.get(UUID(event_id))
            answer = ours.get(f"/v1/events/{event_id}")
            assert answer.status_code == 200
            assert answer.json() == expected.model_dump(mode="json")
            history = ours.get(f"/v1/streams/{expected.stream_id}/events")
            assert history.json() == [expected.model_dump(mode="json")]
            # Another workspace's id: the same 404 as an id nobody used.
            foreign, unknown = (
                theirs.get(f"/v1/events/{event_id}"),
                theirs.get(f"/v1/events/{uuid4()}"),
            )
            assert foreign.status_code == unknown.status_code == 404
            assert foreign.json()["error"]["type"] == unknown.json()["error"]["type"]
            assert theirs.get(f"/v1/streams/{expected.stream_id}/events").status_code == 404


def test_a_revoked_key_is_refused_within_two_seconds(api: Deployment) -> None:
    issued = api.directory.create_key("acme", "short-lived", [Scope.READ])
    api.keys["short"] = issued.token
    with api.client("short") as client:
        assert client.get("/v1/models").status_code == 200  # now remembered
        # Revoked by another process's directory, as `auditcore keys revoke` does.
        other = Directory(api.audit.settings)
        try:
            other.revoke_key(issued.info.id)
        finally:
            other.close()
        revoked_at = time.monotonic()
        deadline = revoked_at + 20  # bounds the loop on a loaded machine, not the promise
        while True:
            sent = time.monotonic()
            status = client.get("/v1/models").status_code
            if status == 401:
                break
            assert status == 200
            assert sent - revoked_at < 2.0, "a request sent 2 s after revocation was accepted"
            assert sent < deadline
            time.sleep(0.05)


def test_a_verified_key_is_not_looked_up_again_at_once(api: Deployment) -> None:
    statements: list[str] = []
    directory = Directory(api.audit.settings)
    try:
        sqlalchemy.event.listen(
            directory.engine, "before_cursor_execute", lambda *a: statements.append(a[2])
        )
        keys = VerifiedKeys(directory, ttl=60)
        token = api.keys["acme"]
        first = keys.authenticate(token)
        looked_up = len(statements)
        assert looked_up >= 1
        assert first is not None
        assert all(keys.authenticate(token) == first for _ in range(50))
        assert len(statements) == looked_up
        # Failures are never remembered: each one is asked of the database.
        for _ in range(3):
            assert keys.authenticate(token[:-1] + ("A" if token[-1] != "A" else "B")) is None
        assert len(statements) == looked_up + 3
    finally:
        directory.close()
