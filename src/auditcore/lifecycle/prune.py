"""Deleting archived events from the event store and from the read models.

Store: events are deleted by store position in small batches, each batch (its events and
their rows in the event-id index) in one short transaction of its own. Writers take the events
table's lock for each insert, so a batch holds them up for one batch's deletion only. A
deletion repeated after a crash deletes what is left and nothing else (positions that are gone
are simply not found).

Read models: rows of the pruned events are deleted with one lightweight delete per table for
every range pruned in a run, ``position <= P(workspace_id)`` (but the store's first event's: see
``retention``) — within a workspace, log order is store order,
so those are exactly the rows made only from events of the pruned prefix (a state-table row
whose stream has a newer event has a newer position and stays). Roll-ups are kept: their
counts are the figures that outlive raw events. A read model that has not yet reached ``P`` is
left for the next run (a batch it read before the deletion could write those rows again).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from uuid import UUID

from clickhouse_connect.driver.client import Client
from eventsourcing.postgres import PostgresApplicationRecorder
from psycopg.sql import SQL, Identifier

from auditcore.clickhouse.connection import ClickHouseTarget
from auditcore.projection import tracking
from auditcore.readmodel.model import EventTable
from auditcore.readmodel.registry import ReadModelRegistry
from auditcore.store.application import AuditApplication


def delete_events(
    app: AuditApplication, workspace_id: str, events: Sequence[tuple[int, str | None]]
) -> int:
    """Delete these (store position, event id) of one workspace, in one transaction; return
    how many events were still there."""
    positions = [position for position, _ in events]
    ids = [UUID(str(event_id)) for _, event_id in events if event_id]
    recorder = app.recorder
    if isinstance(recorder, PostgresApplicationRecorder):
        schema = recorder.datastore.schema
        events_table = Identifier(schema, recorder.events_table_name)
        ids_table = Identifier(schema, recorder.event_ids_table_name)  # type: ignore[attr-defined]
        with recorder.datastore.transaction(commit=True) as cursor:
            cursor.execute(
                SQL("DELETE FROM {} WHERE notification_id = ANY(%s)").format(events_table),
                (positions,),
            )
            deleted = cursor.rowcount
            cursor.execute(
                SQL("DELETE FROM {} WHERE workspace_id = %s AND event_id = ANY(%s)").format(
                    ids_table
                ),
                (workspace_id, ids),
            )
        return deleted
    marks = ", ".join("?" * len(positions))
    id_marks = ", ".join("?" * len(ids))
    with recorder.datastore.transaction(commit=True) as cursor:  # type: ignore[attr-defined]
        cursor.execute(
            f"DELETE FROM {recorder.events_table_name} WHERE rowid IN ({marks})",  # type: ignore[attr-defined]
            positions,
        )
        cursor.execute("SELECT changes()")  # the library's cursor has no rowcount
        deleted = cursor.fetchone()[0]
        cursor.execute(
            f"DELETE FROM {recorder.event_ids_table_name} "  # type: ignore[attr-defined]
            f"WHERE workspace_id = ? AND event_id IN ({id_marks})",
            [workspace_id, *(event_id.hex for event_id in ids)],
        )
    return int(deleted)


def delete_rows(
    client: Client,
    target: ClickHouseTarget,
    models: ReadModelRegistry,
    pruned: Mapping[str, int],
    *,
    keep: int = 0,
) -> list[str]:
    """Delete the read models' rows made only from each workspace's events up to its store
    position in ``pruned`` (but the row of the event at store position ``keep``, which stays in
    the store), one lightweight delete per table; return the read models that have not reached
    those positions yet (left alone)."""
    candidates = [
        model for model in models if not (isinstance(model, EventTable) and model.group_by)
    ]
    tracked = tracking.tracked_tables(client, [model.table_name for model in candidates])
    workspaces = sorted(pruned)
    waiting = []
    for model in candidates:
        reached = tracked.get(model.table_name)
        if reached is None:
            continue  # never written: it holds no rows
        if reached.position < max(pruned.values()):
            waiting.append(model.name)
            continue
        client.command(
            target.ddl.delete(
                model.table_name,
                "position <= transform(workspace_id, {workspaces:Array(String)}, "
                "{lasts:Array(UInt64)}, toUInt64(0)) AND position != {keep:UInt64}",
            ),
            parameters={
                "workspaces": workspaces,
                "lasts": [pruned[workspace] for workspace in workspaces],
                "keep": keep,
            },
        )
    return waiting
