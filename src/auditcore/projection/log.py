"""Reading the store's log in order, in batches, as plainly as possible.

On PostgreSQL this skips the library's per-row dicts and Notification objects: processors
read every event ever recorded, so each microsecond per row counts. On SQLite (the embedded
default) the library's own reader is used.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple
from uuid import UUID

from eventsourcing.postgres import PostgresApplicationRecorder
from psycopg.rows import tuple_row
from psycopg.sql import SQL, Identifier

from auditcore.store.application import AuditApplication


class LoggedEvent(NamedTuple):
    position: int
    stream_id: str
    version: int
    action: str
    state: bytes


class LogReader:
    """Reads events after a position, in the store's global (commit) order."""

    def __init__(self, app: AuditApplication) -> None:
        self.app = app
        recorder = app.recorder
        self._postgres = recorder if isinstance(recorder, PostgresApplicationRecorder) else None
        if self._postgres is not None:
            self._select = SQL(
                "SELECT notification_id, originator_id::text, originator_version, topic, state "
                "FROM {}.{} WHERE notification_id > %s ORDER BY notification_id LIMIT %s"
            ).format(
                Identifier(self._postgres.datastore.schema),
                Identifier(self._postgres.events_table_name),
            )
            self._select_stream = SQL(
                "SELECT notification_id, originator_id::text, originator_version, topic, state "
                "FROM {}.{} WHERE originator_id = %s ORDER BY originator_version"
            ).format(
                Identifier(self._postgres.datastore.schema),
                Identifier(self._postgres.events_table_name),
            )

    def after(self, position: int, limit: int) -> Sequence[LoggedEvent]:
        if self._postgres is None:
            return [
                LoggedEvent(n.id, str(n.originator_id), n.originator_version, n.topic, n.state)
                for n in self.app.recorder.select_notifications(
                    start=position, limit=limit, inclusive_of_start=False
                )
            ]
        with (
            self._postgres.datastore.get_connection() as conn,
            conn.cursor(row_factory=tuple_row) as curs,
        ):
            curs.execute(self._select, (position, limit), prepare=True)
            return [LoggedEvent(*row) for row in curs.fetchall()]

    def between(self, after: int, last: int, batch_size: int = 20_000) -> list[LoggedEvent]:
        """Every event in (after, last], however many: the exact range of a batch."""
        events: list[LoggedEvent] = []
        position = after
        while position < last and (batch := self.after(position, batch_size)):
            events += [event for event in batch if event.position <= last]
            position = batch[-1].position
        return events

    def stream(self, stream_id: UUID) -> Sequence[LoggedEvent]:
        """One stream's events, in version order, with their positions."""
        if self._postgres is None:
            recorder = self.app.recorder
            with recorder.datastore.transaction(commit=False) as cursor:  # type: ignore[attr-defined]
                cursor.execute(
                    "SELECT rowid, originator_id, originator_version, topic, state FROM "
                    f"{recorder.events_table_name} WHERE originator_id = ? "  # type: ignore[attr-defined]
                    "ORDER BY originator_version",
                    (stream_id.hex,),
                )
                return [
                    LoggedEvent(row[0], str(UUID(row[1])), row[2], row[3], row[4])
                    for row in cursor.fetchall()
                ]
        with (
            self._postgres.datastore.get_connection() as conn,
            conn.cursor(row_factory=tuple_row) as curs,
        ):
            curs.execute(self._select_stream, (stream_id,))
            return [LoggedEvent(*row) for row in curs.fetchall()]


def source_line(event: LoggedEvent) -> bytes:
    """An event as a JSON line for ClickHouse to compute rows from (see
    ``auditcore.readmodel.fields``): the stored state with the store's columns spliced in
    front, not re-encoded.

    The state is a JSON object with at least the envelope's required keys, so splicing after
    its opening brace keeps it valid; action names and stream ids need no escaping.
    """
    return b'{"_position":%d,"_stream_id":"%s","_version":%d,"_action":"%s",%s' % (
        event.position,
        event.stream_id.encode(),
        event.version,
        event.action.encode(),
        event.state[1:],
    )
