"""Events the read side cannot hold, put straight into the store's table: as if stored before
the envelope checked them, or edited behind our back."""

from __future__ import annotations

from uuid import uuid4

import orjson
from psycopg import sql

from auditcore import AuditCore


def store_unprojectable(
    audit: AuditCore,
    workspace_id: str,
    *,
    occurred_at: str = "1850-01-01T00:00:00Z",
    action: str = "incident.comment_added",
) -> str:
    """Append an event whose ``occurred_at`` no read model holds (ClickHouse refuses it);
    return its event id. PostgreSQL only: written under the recorder's own table lock, so
    it takes its place in the log's commit order like any event."""
    event_id = str(uuid4())
    state = {
        "event_id": event_id,
        "workspace_id": workspace_id,
        "schema_version": 1,
        "actor": {"id": "system", "type": "system", "name": "System"},
        "targets": [],
        "source": "system",
        "occurred_at": occurred_at,
        "recorded_at": "2026-01-01T00:00:00Z",
        "context": {"ip": None, "user_agent": None, "request_id": None},
        "metadata": {"body": "from before the checks"},
    }
    recorder = audit.app.recorder
    schema = recorder.datastore.schema  # type: ignore[attr-defined]
    table = sql.Identifier(schema, recorder.events_table_name)  # type: ignore[attr-defined]
    ids = sql.Identifier(schema, recorder.event_ids_table_name)  # type: ignore[attr-defined]
    stream_id = uuid4()
    with recorder.datastore.get_connection() as conn, conn.transaction():  # type: ignore[attr-defined]
        conn.execute(sql.SQL("LOCK TABLE {} IN EXCLUSIVE MODE").format(table))
        conn.execute(
            sql.SQL(
                "INSERT INTO {} (originator_id, originator_version, topic, state) "
                "VALUES (%s, 1, %s, %s)"
            ).format(table),
            (stream_id, action, orjson.dumps(state)),
        )
        # Its id in the index, as every stored event has (written in the same transaction).
        conn.execute(
            sql.SQL(
                "INSERT INTO {} (workspace_id, event_id, originator_id, originator_version) "
                "VALUES (%s, %s, %s, 1)"
            ).format(ids),
            (workspace_id, event_id, stream_id),
        )
        conn.execute(sql.SQL("NOTIFY {}").format(sql.Identifier(recorder.channel_name)))  # type: ignore[attr-defined]
    return event_id


def mend(audit: AuditCore, event_id: str, occurred_at: str = "1999-12-31T23:59:59Z") -> None:
    """Give a stored event a time the read side holds (the fix an operator would make)."""
    recorder = audit.app.recorder
    table = sql.Identifier(recorder.datastore.schema, recorder.events_table_name)  # type: ignore[attr-defined]
    with recorder.datastore.get_connection() as conn, conn.transaction():  # type: ignore[attr-defined]
        row = conn.execute(
            sql.SQL(
                "SELECT notification_id, state FROM {} "
                "WHERE convert_from(state, 'UTF8')::jsonb ->> 'event_id' = %s"
            ).format(table),
            (event_id,),
        ).fetchone()
        assert row is not None, event_id
        state = orjson.loads(row["state"]) | {"occurred_at": occurred_at}
        conn.execute(
            sql.SQL("UPDATE {} SET state = %s WHERE notification_id = %s").format(table),
            (orjson.dumps(state), row["notification_id"]),
        )
