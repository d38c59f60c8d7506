"""Event ids (idempotency keys) are scoped per workspace, on PostgreSQL and SQLite: the same id
in two workspaces is two events, a reused id names only the writer's own event, and a store
made when ids were unique store-wide (stream id = first event id, index keyed by id alone) is
migrated and stays readable and idempotent."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest

from auditcore import AuditCore, EventIdReusedError, Incident, Settings, StreamNotFoundError
from auditcore.events.ids import stream_id_for
from tests.integrity_support import Store, make_store


def comment(workspace: str, body: str, event_id: UUID) -> dict[str, Any]:
    return {
        "action": "incident.comment_added",
        "workspace_id": workspace,
        "metadata": {"body": body},
        "event_id": event_id,
    }


def test_one_id_in_two_workspaces_is_two_events(audit: AuditCore) -> None:
    key = uuid4()
    ours = audit.record(**comment("acme", "acme's", key))
    theirs = audit.record(**comment("globex", "globex's", key))
    assert ours.stream_id == stream_id_for("acme", key) != theirs.stream_id
    assert audit.event(key, workspace_id="acme").metadata == {"body": "acme's"}
    assert audit.event(key, workspace_id="globex").metadata == {"body": "globex's"}
    # A retry is idempotent in each workspace; a reuse names only the writer's own event.
    assert audit.record(**comment("globex", "globex's", key)) == theirs
    with pytest.raises(EventIdReusedError) as reused:
        audit.record(**comment("globex", "other", key))
    assert str(theirs.stream_id) in str(reused.value)
    assert str(ours.stream_id) not in str(reused.value)
    # The same through every other way in: a batch, the dispatcher, an aggregate.
    batch_key, dispatched_key, opened_key = uuid4(), uuid4(), uuid4()
    both = audit.record_many([comment(w, w, batch_key) for w in ("acme", "globex")])
    assert {e.workspace_id for e in both} == {"acme", "globex"}
    handles = [audit.dispatch(**comment(w, w, dispatched_key)) for w in ("acme", "globex")]
    assert {h.result(timeout=30).workspace_id for h in handles} == {"acme", "globex"}
    for workspace in ("acme", "globex"):
        opened = Incident.open(
            workspace, title="t", severity="sev3", service="s", event_id=opened_key
        )
        audit.save(opened)
        assert opened.id == stream_id_for(workspace, opened_key)
        assert audit.event(opened_key, workspace_id=workspace).workspace_id == workspace


def legacy_store(settings: Settings, tmp_path: Path) -> tuple[Store, list[UUID]]:
    """A store as the version before scoping left it: each standalone event's stream is its
    own id, and the index is keyed by event id alone."""
    store = make_store(settings, tmp_path)
    with AuditCore(settings) as audit:
        ids = [audit.record(**comment("acme", f"old {n}", uuid4())).event_id for n in range(3)]
        ids_table = store.table(audit.app.recorder.event_ids_table_name)  # type: ignore[attr-defined]
    uuid = "uuid" if store.postgres else "TEXT"
    with store.sql() as cur:
        cur.execute(f"DROP TABLE {ids_table}")
        cur.execute(
            f"CREATE TABLE {ids_table} (event_id {uuid} PRIMARY KEY, originator_id {uuid} "
            "NOT NULL, originator_version BIGINT NOT NULL)"
        )
        for event_id in ids:
            stream = stream_id_for("acme", event_id)
            old = event_id if store.postgres else event_id.hex
            cur.execute(
                f"UPDATE {store.table(store.events_table)} SET originator_id = ? "
                "WHERE originator_id = ?",
                (old, stream if store.postgres else stream.hex),
            )
            cur.execute(f"INSERT INTO {ids_table} VALUES (?, ?, 1)", (old, old))
    return store, ids


def test_a_store_from_before_scoping_is_migrated(store_settings: Settings, tmp_path: Path) -> None:
    _, ids = legacy_store(store_settings, tmp_path)
    with AuditCore(store_settings) as audit:  # migrates the index
        old = audit.event(ids[0], workspace_id="acme")
        assert old.stream_id == ids[0]  # stored streams keep their ids
        assert audit.history(ids[0]) == [old]
        with pytest.raises(StreamNotFoundError):
            audit.event(ids[0], workspace_id="globex")
        # A retry after the upgrade is still idempotent: the first event, nothing new stored.
        before = audit.app.recorder.max_notification_id()
        assert audit.record(**comment("acme", "old 0", ids[0])) == old
        assert audit.app.recorder.max_notification_id() == before
        with pytest.raises(EventIdReusedError):
            audit.record(**comment("acme", "other", ids[1]))
        # Another workspace may use the same id: its own event, on a stream of its own.
        theirs = audit.record(**comment("globex", "globex's", ids[2]))
        assert theirs.stream_id == stream_id_for("globex", ids[2])
        assert audit.event(ids[2], workspace_id="acme").metadata == {"body": "old 2"}
    with AuditCore(store_settings) as audit:  # opening a migrated store again changes nothing
        assert audit.event(ids[1], workspace_id="acme").metadata == {"body": "old 1"}
