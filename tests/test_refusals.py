"""Ordinary refusals (a version conflict, an idempotent retry, a reused event id) leave the
store's connections healthy: every later write on the same pooled connection succeeds.

PostgreSQL runs here on a one-connection pool, so every refusal and every later write share
one server session; the pipelined insert once left psycopg believing in a prepared statement
the server had skipped (``prepared statement "_pg3_N" does not exist`` on later writes).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest
from eventsourcing.persistence import StoredEvent

from auditcore import (
    AuditCore,
    AuditEvent,
    ConflictError,
    EventIdReusedError,
    Incident,
    Settings,
)
from auditcore.events.ids import stream_id_for
from tests.conftest import fresh_postgres_store

pytestmark = pytest.mark.store_only  # the event store alone: one ClickHouse engine is enough

ROUNDS = 60
STREAK = 8


@pytest.fixture(params=["postgres", "sqlite"])
def one_connection(
    request: pytest.FixtureRequest, tmp_path: Path, clickhouse_url: str
) -> Iterator[AuditCore]:
    if request.param == "sqlite":
        settings = Settings(str(tmp_path / "events.sqlite"), clickhouse_url)
    else:
        store = fresh_postgres_store(request.getfixturevalue("postgres_database"))
        settings = Settings(f"{store}&pool_size=1&max_overflow=0", clickhouse_url)
    with AuditCore(settings) as audit:
        if settings.uses_postgres:
            pool = audit.app.recorder.datastore.pool  # type: ignore[attr-defined]
            assert (pool.min_size, pool.max_size) == (1, 1)
        yield audit


def comment(body: str, **provenance: object) -> dict[str, Any]:
    return {
        "action": "incident.comment_added",
        "workspace_id": "acme",
        "metadata": {"body": body},
        **provenance,
    }


class Writes:
    """Runs a random mix of refusals and fresh writes through one entry point, checking each
    outcome and what the store then holds."""

    def __init__(
        self,
        audit: AuditCore,
        write: Callable[[list[dict[str, Any]]], list[AuditEvent]],
        *,
        atomic: bool = False,
    ) -> None:
        self.audit = audit
        self.write = write
        self.atomic = atomic  # one write stores all its drafts or none
        self.stored: dict[UUID, Any] = {}  # every event id known stored, with its body

    def fresh(self, n: int, size: int) -> None:
        drafts = [comment(f"fresh {n}.{i}", event_id=uuid4()) for i in range(size)]
        results = self.write(drafts)
        assert [r.metadata["body"] for r in results] == [d["metadata"]["body"] for d in drafts]
        self.stored.update({d["event_id"]: d["metadata"]["body"] for d in drafts})

    def retry(self) -> None:
        key, body = random.choice(list(self.stored.items()))
        (again,) = self.write([comment(body, event_id=key)])
        assert (again.event_id, again.metadata["body"]) == (key, body)

    def reuse(self, n: int) -> None:
        key = random.choice(list(self.stored))
        draft = comment(f"other content {n}", event_id=key)
        # In one transaction, behind a fresh event: nothing of it may be stored.
        drafts = [comment(f"never stored {n}", event_id=uuid4()), draft] if self.atomic else [draft]
        with pytest.raises(EventIdReusedError, match=str(key)):
            self.write(drafts)

    def conflict(self) -> None:
        incident = Incident.open("acme", title="t", severity="sev3", service="api")
        self.audit.save(incident)
        first, second = (self.audit.get(Incident, incident.id) for _ in range(2))
        first.comment("first")
        second.comment("second")
        self.audit.save(first)
        with pytest.raises(ConflictError):
            self.audit.save(second)

    def run(self, seed: int) -> None:
        random.seed(seed)
        self.fresh(0, 1)
        for n in range(1, ROUNDS + 1):
            # Refused writes only at first (a conflict stores two events before its refusal):
            # psycopg prepares a statement at its sixth use on a connection, so that use
            # certainly falls on a refused write.
            refusals: list[Callable[[], None]] = [self.retry, partial(self.reuse, n)]
            random.choice(refusals if n <= STREAK else [*refusals, self.conflict])()
            if n > STREAK:
                # Mostly the pipelined insert; now and then a batch large enough for COPY.
                self.fresh(n, random.choice((1, 1, 2, 40)))
        bodies = {e.event_id: e.metadata["body"] for e in self.everything()}
        assert {key: bodies.get(key) for key in self.stored} == self.stored
        assert not any(str(body).startswith(("never", "other")) for body in bodies.values())

    def everything(self) -> list[AuditEvent]:
        keys = [("acme", event_id) for event_id in self.stored]
        found = self.audit.app.event_ids.locate_events(keys)
        assert set(found) == set(keys)
        return [self.audit.event(event_id, workspace_id="acme") for _, event_id in found]


@pytest.mark.parametrize("seed", [1, 2])
def test_refusals_never_break_later_records(one_connection: AuditCore, seed: int) -> None:
    audit = one_connection

    def write(drafts: list[dict[str, Any]]) -> list[AuditEvent]:
        return [audit.record(**draft) for draft in drafts]

    Writes(audit, write).run(seed)


def test_refusals_never_break_later_record_many(one_connection: AuditCore) -> None:
    audit = one_connection
    Writes(audit, lambda drafts: list(audit.record_many(drafts)), atomic=True).run(3)


def test_refusals_never_break_later_dispatches(one_connection: AuditCore) -> None:
    audit = one_connection

    def write(drafts: list[dict[str, Any]]) -> list[AuditEvent]:
        handles = [audit.dispatch(**draft) for draft in drafts]
        return [handle.result(timeout=30) for handle in handles]

    Writes(audit, write).run(4)


def test_refusals_never_break_later_saves(one_connection: AuditCore) -> None:
    audit = one_connection
    random.seed(5)
    key = uuid4()
    audit.save(Incident.open("acme", title="t", severity="sev3", service="api", event_id=key))
    other = Incident.open("acme", title="other", severity="sev3", service="api")
    audit.save(other)
    saved: list[UUID] = [key]
    for n in range(1, ROUNDS + 1):
        refusals = ["retry", "reuse_stream", "reuse_id"]
        match random.choice(refusals if n <= STREAK else [*refusals, "conflict"]):
            case "conflict":
                Writes(audit, lambda _: []).conflict()
            case "retry":  # a retried "open" is the same stream, stored once
                again = audit.save(
                    Incident.open("acme", title="t", severity="sev3", service="api", event_id=key)
                )
                assert again[0].stream_id == stream_id_for("acme", key)
            case "reuse_stream":  # refused by the events' primary key
                reused = Incident.open(
                    "acme", title=f"other {n}", severity="sev3", service="api", event_id=key
                )
                with pytest.raises(EventIdReusedError):
                    audit.save(reused)
            case _:  # a new stream version, refused by the event-id index behind it
                loaded = audit.get(Incident, other.id)
                loaded.comment(f"reused {n}", event_id=key)
                with pytest.raises(EventIdReusedError):
                    audit.save(loaded)
        if n <= STREAK:
            continue
        incident = Incident.open("acme", title=f"fresh {n}", severity="sev3", service="api")
        incident.comment(f"note {n}")
        audit.save(incident)
        audit.update(Incident, incident.id, lambda i: i.acknowledge())
        saved.append(incident.id)
    for stream_id in saved[1:]:
        assert [e.action for e in audit.history(stream_id)] == [
            "incident.opened",
            "incident.comment_added",
            "incident.acknowledged",
        ]


def test_an_error_after_the_insert_was_sent_stores_nothing(one_connection: AuditCore) -> None:
    """A stored event without its event id (not from auditcore's mapper) fails once the events'
    insert could already be on its way; the transaction must not commit it without its id."""
    recorder = one_connection.app.recorder
    stream_id = uuid4()
    plain = StoredEvent(
        originator_id=stream_id, originator_version=1, topic="incident.comment_added", state=b"{}"
    )

    with pytest.raises(TypeError, match="expected an AuditStoredEvent"):
        recorder.insert_events([plain])

    assert recorder.select_events(stream_id) == []
    one_connection.record("incident.comment_added", workspace_id="acme", metadata={"body": "ok"})
