"""The library's application recorders, plus an index of event ids written in the same
transaction as the events: it makes ``event_id`` unique within its workspace (the idempotency
key) and lets an event be found by (workspace, id) in the store itself.

The index is keyed by (workspace_id, event_id): one workspace's ids never collide with, and so
never reveal, another's. Stores made before that (an index keyed by ``event_id`` alone) are
migrated when the tables are created: each row gets its event's workspace (read from the stored
event) in one transaction, under the lock that serialises table creation; a failure leaves the
old index as it was. Stop writers of the older version first: they know only the old index.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any
from uuid import UUID

from eventsourcing.persistence import InterfaceError, OperationalError, StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore
from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteCursor, SQLiteDatastore
from eventsourcing.utils import retry
from psycopg import Cursor
from psycopg.errors import DuplicateObject
from psycopg.rows import DictRow
from psycopg.sql import SQL, Identifier

from auditcore.store.mapper import event_key_of

# An arbitrary, fixed key for the advisory lock taken while creating tables.
_CREATE_TABLES_LOCK = 0x41554449545F4342

BULK_APPEND_MIN = 32
"""Below this many events, the library's insert (one statement with RETURNING) is as fast as
``COPY``."""

EventLocation = tuple[UUID, int]
"""(stream_id, version) of a stored event."""

EventKey = tuple[str, UUID]
"""(workspace_id, event_id): what names an event (ids are unique per workspace)."""


class EventIdIndex(ABC):
    """Finds where events with given ids are stored."""

    @abstractmethod
    def locate_events(self, keys: Sequence[EventKey]) -> dict[EventKey, EventLocation]:
        """Map each given (workspace_id, event_id) that is stored to its (stream_id, version)."""

    @abstractmethod
    def holds_workspace(self, workspace_id: str) -> bool:
        """Whether any event of the workspace is stored (one index lookup)."""

    @abstractmethod
    def select_event(self, key: EventKey) -> StoredEvent | None:
        """The stored event named by (workspace_id, event_id), or None: one statement through
        the index (a pruned event is gone from both tables, so it is None too)."""


class BulkAppender(ABC):
    """Appends a batch of events in one transaction and one attempt, by the fastest means for
    its size; the caller retries transient errors on its own terms (the dispatcher shrinks a
    batch that keeps failing, and gives up when it is closed)."""

    @abstractmethod
    def append_once(self, stored_events: Sequence[StoredEvent]) -> None:
        """Store all events, or none: ``IntegrityError`` on a duplicate stream version or id,
        ``InterfaceError`` / ``OperationalError`` when the database could not be reached."""


class PostgresAuditRecorder(PostgresApplicationRecorder, EventIdIndex, BulkAppender):
    def __init__(self, datastore: PostgresDatastore, events_table_name: str = "stored_events"):
        super().__init__(datastore, events_table_name=events_table_name)
        self.event_ids_table_name = events_table_name.removesuffix("_events") + "_event_ids"
        self.check_identifier_length(self.event_ids_table_name)
        table = SQL("{0}.{1}").format(
            Identifier(self.datastore.schema), Identifier(self.event_ids_table_name)
        )
        self.sql_create_statements.append(
            SQL(
                "CREATE TABLE IF NOT EXISTS {0} ("
                "workspace_id text NOT NULL, "
                "event_id uuid NOT NULL, "
                "originator_id uuid NOT NULL, "
                "originator_version bigint NOT NULL, "
                "PRIMARY KEY (workspace_id, event_id))"
            ).format(table)
        )
        self._event_ids_table = table
        self._insert_event_ids = SQL(
            "INSERT INTO {0} (workspace_id, event_id, originator_id, originator_version) "
            "SELECT * FROM unnest(%s::text[], %s::uuid[], %s::uuid[], %s::bigint[])"
        ).format(table)
        events = SQL("{0}.{1}").format(
            Identifier(self.datastore.schema), Identifier(self.events_table_name)
        )
        self._copy_events = SQL(
            "COPY {0} (originator_id, originator_version, topic, state) FROM STDIN (FORMAT BINARY)"
        ).format(events)
        self._copy_event_ids = SQL(
            "COPY {0} (workspace_id, event_id, originator_id, originator_version) "
            "FROM STDIN (FORMAT BINARY)"
        ).format(table)
        self._connections_suspect = False
        self._notify = SQL("NOTIFY {0}").format(Identifier(self.channel_name))
        self._locate_event_ids = SQL(
            "SELECT workspace_id, event_id, originator_id, originator_version FROM {0} "
            "WHERE (workspace_id, event_id) IN (SELECT * FROM unnest(%s::text[], %s::uuid[]))"
        ).format(table)
        self._select_event = SQL(
            "SELECT e.originator_id, e.originator_version, e.topic, e.state FROM {0} AS i "
            "JOIN {1} AS e ON e.originator_id = i.originator_id "
            "AND e.originator_version = i.originator_version "
            "WHERE i.workspace_id = %s AND i.event_id = %s"
        ).format(table, events)

    def create_table(self) -> None:
        """Create the tables, one process at a time: processes starting together on an empty
        database would otherwise race in the catalog ("tuple concurrently updated").

        The library's statements, run on the connection holding the lock: taking a second one
        from the pool would wait for ever on a one-connection pool.
        """
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute("SELECT pg_advisory_lock(%s)", (_CREATE_TABLES_LOCK,))
            try:
                for statement in self.sql_create_statements:
                    # No CREATE TYPE IF NOT EXISTS: each type in a transaction of its own.
                    if "CREATE TYPE" in statement.as_string():
                        with contextlib.suppress(DuplicateObject), conn.transaction():
                            curs.execute(statement, prepare=False)
                with conn.transaction():
                    self._create_table(curs)
                    self._migrate_event_ids(curs)
            finally:
                curs.execute("SELECT pg_advisory_unlock(%s)", (_CREATE_TABLES_LOCK,))
        self.datastore.register_type_adapters()

    def _migrate_event_ids(self, curs: Cursor[DictRow]) -> None:
        """An index keyed by event id alone (stores made before ids were scoped per workspace)
        gets its events' workspaces and the (workspace_id, event_id) key."""
        curs.execute(
            "SELECT 1 FROM information_schema.columns "
            "WHERE table_schema = %s AND table_name = %s AND column_name = 'workspace_id'",
            (self.datastore.schema, self.event_ids_table_name),
            prepare=False,
        )
        if curs.fetchone() is not None:
            return
        events = SQL("{0}.{1}").format(
            Identifier(self.datastore.schema), Identifier(self.events_table_name)
        )
        table = self._event_ids_table
        for statement in (
            SQL("ALTER TABLE {0} ADD COLUMN workspace_id text").format(table),
            SQL(
                "UPDATE {0} AS ids SET workspace_id = "
                "convert_from(e.state, 'UTF8')::jsonb ->> 'workspace_id' FROM {1} AS e "
                "WHERE e.originator_id = ids.originator_id "
                "AND e.originator_version = ids.originator_version"
            ).format(table, events),
            # Fails (and rolls all of this back) if an index row had no event: never written so.
            SQL("ALTER TABLE {0} ALTER COLUMN workspace_id SET NOT NULL").format(table),
            SQL("ALTER TABLE {0} DROP CONSTRAINT {1}").format(
                table, Identifier(f"{self.event_ids_table_name}_pkey")
            ),
            SQL("ALTER TABLE {0} ADD PRIMARY KEY (workspace_id, event_id)").format(table),
        ):
            curs.execute(statement, prepare=False)

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        """The library's insert (retried as the library does), with the event-id index."""
        return self._insert_once(stored_events)

    def append_once(self, stored_events: Sequence[StoredEvent]) -> None:
        if self._connections_suspect:
            # The last attempt lost its connection, so the pool's idle ones may be dead too
            # (a restarted server, a dropped network): handing out one of those would fail
            # this attempt as well, and the next, for as long as connections die faster than
            # the caller retries. Checked only then: a healthy pool costs nothing.
            self.datastore.pool.check()
        try:
            if len(stored_events) >= BULK_APPEND_MIN:
                self.append_bulk(stored_events)
            else:
                self._insert_once(stored_events)
        except (InterfaceError, OperationalError):
            self._connections_suspect = True
            raise
        self._connections_suspect = False

    def _insert_once(self, stored_events: Sequence[StoredEvent]) -> Sequence[int] | None:
        """The library's locked, pipelined insert, with the event ids written beside the events.

        Made safe to refuse (a version conflict, a reused id): everything that can fail in
        Python is computed before anything is sent, and an error raised after that rolls the
        transaction back (the library's version commits what was sent); no statement is
        auto-prepared behind one that can fail. psycopg prepares a statement at its sixth use
        on a connection, sending the ``Parse`` ahead of the execution in the pipeline; after a
        failed statement the server skips the rest of the pipeline, that ``Parse`` included,
        while psycopg counts the statement as prepared, so every later use on that pooled
        connection failed with ``prepared statement "_pg3_N" does not exist``. The lock
        statements, prepared on purpose by the library, come first and cannot be skipped.
        """
        if not stored_events:
            return None  # as the library's recorder
        events = [
            self.construct_pg_stored_event(s.originator_id, s.originator_version, s.topic, s.state)
            for s in stored_events
        ]
        ids = _event_id_columns(stored_events)
        with (
            self.datastore.get_connection() as conn,
            conn.pipeline() as pipeline,
            conn.transaction(),
            conn.cursor() as curs,
        ):
            self._lock_table(curs)
            self._notify_channel(curs)
            curs.execute(self.insert_events_statement, (events,), prepare=False)
            # Its own cursor: the events' RETURNING rows are read from ``curs`` below.
            with conn.cursor() as ids_cursor:
                ids_cursor.execute(self._insert_event_ids, ids, prepare=False)
            # Errors (a unique index refusing) are raised here, inside the transaction.
            pipeline.sync()
            return [row["notification_id"] for row in curs.fetchall()]

    def _notify_channel(self, curs: Cursor[DictRow]) -> None:
        curs.execute(self._notify, prepare=False)

    def append_bulk(self, stored_events: Sequence[StoredEvent]) -> None:
        """``COPY`` inside the library's locked transaction (one attempt).

        The same ``EXCLUSIVE`` table lock as the library's insert serialises writers, so
        notification ids are issued in commit order and readers following the log never pass
        an id that a slower transaction fills in later; the unique indexes still refuse a
        duplicate stream version or event id, and then nothing of the batch is stored.
        """
        # Each COPY goes as one pre-built payload: writing row by row would hand the
        # interpreter lock back and forth with busy producer threads for every few rows.
        events, ids = copy_payloads(stored_events)
        with self.datastore.get_connection() as conn, conn.transaction(), conn.cursor() as curs:
            self._lock_table(curs)
            with curs.copy(self._copy_events) as copy:
                copy.write(events)
            with curs.copy(self._copy_event_ids) as copy:
                copy.write(ids)
            self._notify_channel(curs)

    def locate_events(self, keys: Sequence[EventKey]) -> dict[EventKey, EventLocation]:
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(
                self._locate_event_ids,
                ([workspace for workspace, _ in keys], [event_id for _, event_id in keys]),
            )
            return {
                (row["workspace_id"], row["event_id"]): (
                    row["originator_id"],
                    row["originator_version"],
                )
                for row in curs.fetchall()
            }

    def select_event(self, key: EventKey) -> StoredEvent | None:
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            # Prepared (a fixed statement on pooled connections): parsed once per connection.
            curs.execute(self._select_event, key, prepare=True)
            row = curs.fetchone()
        if row is None:
            return None
        return StoredEvent(
            originator_id=row["originator_id"],
            originator_version=row["originator_version"],
            topic=row["topic"],
            state=bytes(row["state"]),
        )

    def holds_workspace(self, workspace_id: str) -> bool:
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(
                SQL("SELECT 1 FROM {0} WHERE workspace_id = %s LIMIT 1").format(
                    self._event_ids_table
                ),
                (workspace_id,),
            )
            return curs.fetchone() is not None


_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # signature, flags, no header extension
_COPY_TRAILER = b"\xff\xff"
_UUID = b"\x00\x00\x00\x10"  # a field's length: 16 bytes
_BIGINT = b"\x00\x00\x00\x08"
_EVENT_ROW = b"\x00\x04" + _UUID  # four fields, the first a uuid
_EVENT_ID_ROW = b"\x00\x04"  # four fields: workspace (text), event id, stream id, version


def _uuid(value: UUID | str) -> UUID:
    return value if isinstance(value, UUID) else UUID(value)


def _event_id_columns(
    stored_events: Sequence[StoredEvent],
) -> tuple[list[str], list[UUID], list[UUID], list[int]]:
    """The event-id index's rows, column by column."""
    keys = [event_key_of(s) for s in stored_events]
    return (
        [workspace for workspace, _ in keys],
        [event_id for _, event_id in keys],
        [_uuid(s.originator_id) for s in stored_events],
        [s.originator_version for s in stored_events],
    )


def copy_payloads(stored_events: Sequence[StoredEvent]) -> tuple[bytes, bytes]:
    """PostgreSQL binary COPY data for the events table and for the event ids table.

    Binary spares the server from parsing text (bytea as hex above all): about half its time.
    """
    events, ids = [_COPY_HEADER], [_COPY_HEADER]
    for stored in stored_events:
        stream = _uuid(stored.originator_id).bytes
        version = stored.originator_version.to_bytes(8, "big", signed=True)
        topic = stored.topic.encode()
        state = stored.state
        events.append(
            b"".join(
                (
                    _EVENT_ROW,
                    stream,
                    _BIGINT,
                    version,
                    len(topic).to_bytes(4, "big"),
                    topic,
                    len(state).to_bytes(4, "big"),
                    state,
                )
            )
        )
        workspace, event_id = event_key_of(stored)
        workspace_bytes = workspace.encode()
        ids.append(
            b"".join(
                (
                    _EVENT_ID_ROW,
                    len(workspace_bytes).to_bytes(4, "big"),
                    workspace_bytes,
                    _UUID,
                    event_id.bytes,
                    _UUID,
                    stream,
                    _BIGINT,
                    version,
                )
            )
        )
    events.append(_COPY_TRAILER)
    ids.append(_COPY_TRAILER)
    return b"".join(events), b"".join(ids)


class SQLiteAuditRecorder(SQLiteApplicationRecorder, EventIdIndex):
    def __init__(self, datastore: SQLiteDatastore, events_table_name: str = "stored_events"):
        self.event_ids_table_name = events_table_name.removesuffix("_events") + "_event_ids"
        super().__init__(datastore, events_table_name)

    def construct_create_table_statements(self) -> list[str]:
        return [
            *super().construct_create_table_statements(),
            self._event_ids_table_statement(self.event_ids_table_name),
        ]

    @staticmethod
    def _event_ids_table_statement(name: str) -> str:
        return (
            f"CREATE TABLE IF NOT EXISTS {name} ("
            "workspace_id TEXT NOT NULL, event_id TEXT NOT NULL, originator_id TEXT NOT NULL, "
            "originator_version INTEGER NOT NULL, PRIMARY KEY (workspace_id, event_id)) "
            "WITHOUT ROWID"
        )

    def create_table(self) -> None:
        super().create_table()
        with self.datastore.transaction(commit=True) as c:
            self._migrate_event_ids(c)

    def _migrate_event_ids(self, c: SQLiteCursor) -> None:
        """An index keyed by event id alone (stores made before ids were scoped per workspace)
        is copied into one keyed by (workspace_id, event_id), each row with its event's
        workspace, and replaces it (one transaction)."""
        table = self.event_ids_table_name
        c.execute(f"PRAGMA table_info({table})")
        if any(row["name"] == "workspace_id" for row in c.fetchall()):
            return
        c.execute(self._event_ids_table_statement(f"{table}_scoped"))
        c.execute(
            f"INSERT INTO {table}_scoped "
            "SELECT json_extract(CAST(e.state AS TEXT), '$.workspace_id'), ids.event_id, "
            f"ids.originator_id, ids.originator_version FROM {table} AS ids "
            f"JOIN {self.events_table_name} AS e ON e.originator_id = ids.originator_id "
            "AND e.originator_version = ids.originator_version"
        )
        c.execute(f"DROP TABLE {table}")
        c.execute(f"ALTER TABLE {table}_scoped RENAME TO {table}")

    def _insert_events(
        self, c: SQLiteCursor, stored_events: Sequence[Any], **kwargs: Any
    ) -> Sequence[int] | None:
        # Computed first: nothing in Python can fail once the events are inserted.
        ids = [
            (workspace, event_id.hex, stream_id.hex, version)
            for workspace, event_id, stream_id, version in zip(
                *_event_id_columns(stored_events), strict=True
            )
        ]
        notification_ids = super()._insert_events(c, stored_events, **kwargs)
        c.executemany(
            f"INSERT INTO {self.event_ids_table_name} "
            "(workspace_id, event_id, originator_id, originator_version) VALUES (?, ?, ?, ?)",
            ids,
        )
        return notification_ids

    def locate_events(self, keys: Sequence[EventKey]) -> dict[EventKey, EventLocation]:
        found: dict[EventKey, EventLocation] = {}
        with self.datastore.transaction(commit=False) as c:
            for workspace, event_id in keys:
                c.execute(
                    f"SELECT originator_id, originator_version FROM {self.event_ids_table_name} "
                    "WHERE workspace_id = ? AND event_id = ?",
                    (workspace, event_id.hex),
                )
                row = c.fetchone()
                if row is not None:
                    found[workspace, event_id] = (
                        UUID(row["originator_id"]),
                        row["originator_version"],
                    )
        return found

    def select_event(self, key: EventKey) -> StoredEvent | None:
        workspace, event_id = key
        with self.datastore.transaction(commit=False) as c:
            c.execute(
                f"SELECT e.originator_id, e.originator_version, e.topic, e.state "
                f"FROM {self.event_ids_table_name} AS i JOIN {self.events_table_name} AS e "
                "ON e.originator_id = i.originator_id "
                "AND e.originator_version = i.originator_version "
                "WHERE i.workspace_id = ? AND i.event_id = ?",
                (workspace, event_id.hex),
            )
            row = c.fetchone()
        if row is None:
            return None
        return StoredEvent(
            originator_id=UUID(row["originator_id"]),
            originator_version=row["originator_version"],
            topic=row["topic"],
            state=row["state"],
        )

    def holds_workspace(self, workspace_id: str) -> bool:
        with self.datastore.transaction(commit=False) as c:
            c.execute(
                f"SELECT 1 FROM {self.event_ids_table_name} WHERE workspace_id = ? LIMIT 1",
                (workspace_id,),
            )
            return c.fetchone() is not None
