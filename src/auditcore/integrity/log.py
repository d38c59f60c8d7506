"""Where the Merkle logs live: tables beside the events, in the event store's own database.

On PostgreSQL the tables are in the store's schema; on SQLite (the embedded default) they are
in the store's file. Five tables, all ``auditcore_integrity_*``:

- ``leaves``: per workspace and leaf index, the leaf hash, the event's store position
  (``notification_id``) and event id, and diagnostic field checksums. Leaf hashes stand on
  their own: a pruned event's leaf still proves what was there.
- ``nodes``: every complete perfect subtree above the leaves, ``(level, index) → hash``, with
  the store position of the leaf that completed it. Immutable once written.
- ``trees``: each workspace's current size and root hash.
- ``checkpoints``: every signed checkpoint (the signed note is the evidence; its size, root
  and time are copied into columns for lookups).
- ``follower``: the integrity follower's position in the store's global order.

Failure semantics: ``append`` writes a batch's leaves, nodes, tree heads and the follower's new
position in ONE transaction, and only if the recorded position is still the one the batch was
read after (a compare-and-set, under the row's lock). So a crash at any instant leaves either
the whole batch or none of it, never a skipped or a doubled leaf; and two followers that
somehow run at once cannot both append the same batch (the second one's compare-and-set fails,
and so would its primary keys).
"""

from __future__ import annotations

import hashlib
import sqlite3
import struct
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple
from uuid import UUID

import psycopg
from eventsourcing.postgres import PostgresApplicationRecorder
from psycopg.rows import tuple_row
from psycopg.sql import SQL, Identifier

from auditcore.integrity.merkle import Node
from auditcore.projection.log import LoggedEvent
from auditcore.store.application import AuditApplication
from auditcore.store.locks import FileLock, FollowerLock, PostgresLock

PREFIX = "auditcore_integrity_"
FOLLOWER = "integrity"


class Leaf(NamedTuple):
    """One leaf, its fields in the table's column order (the follower writes them as rows)."""

    workspace_id: str
    leaf_index: int
    hash: bytes
    position: int
    event_id: str | None
    fields: bytes


class StoredNode(NamedTuple):
    """One node, its fields in the table's column order."""

    workspace_id: str
    level: int
    node_index: int
    hash: bytes
    position: int


@dataclass(frozen=True, slots=True)
class TreeHead:
    workspace_id: str
    size: int
    root: bytes
    position: int
    """The store position of the tree's newest leaf."""
    updated_at: float


@dataclass(frozen=True, slots=True)
class StoredCheckpoint:
    workspace_id: str
    size: int
    root: bytes
    signed_at: int
    """POSIX seconds, as in the note's ``time`` line."""
    key_name: str
    key_id: int
    note: str


@dataclass(frozen=True)
class Batch:
    """What one step of the follower appends."""

    position: int
    """The follower's position after this batch."""
    leaves: Sequence[Leaf]
    nodes: Sequence[StoredNode]
    heads: Sequence[TreeHead]


_SCHEMA = [
    "CREATE TABLE IF NOT EXISTS {leaves} (workspace_id TEXT NOT NULL, leaf_index BIGINT NOT NULL, "
    "leaf_hash {blob} NOT NULL, position BIGINT NOT NULL, event_id {uuid}, fields {blob} NOT NULL, "
    "PRIMARY KEY (workspace_id, leaf_index))",
    "CREATE UNIQUE INDEX IF NOT EXISTS {leaves_position_index} ON {leaves} (position)",
    "CREATE INDEX IF NOT EXISTS {leaves_event_index} ON {leaves} (event_id)",
    "CREATE TABLE IF NOT EXISTS {nodes} (workspace_id TEXT NOT NULL, level INTEGER NOT NULL, "
    "node_index BIGINT NOT NULL, node_hash {blob} NOT NULL, position BIGINT NOT NULL, "
    "PRIMARY KEY (workspace_id, level, node_index))",
    "CREATE INDEX IF NOT EXISTS {nodes_position_index} ON {nodes} (position, level)",
    "CREATE TABLE IF NOT EXISTS {trees} (workspace_id TEXT PRIMARY KEY, size BIGINT NOT NULL, "
    "root_hash {blob} NOT NULL, position BIGINT NOT NULL, updated_at {real} NOT NULL)",
    "CREATE TABLE IF NOT EXISTS {checkpoints} (workspace_id TEXT NOT NULL, "
    "tree_size BIGINT NOT NULL, root_hash {blob} NOT NULL, signed_at BIGINT NOT NULL, "
    "key_name TEXT NOT NULL, key_id BIGINT NOT NULL, note TEXT NOT NULL, "
    "PRIMARY KEY (workspace_id, tree_size, key_id))",
    "CREATE TABLE IF NOT EXISTS {follower} (name TEXT PRIMARY KEY, position BIGINT NOT NULL, "
    "updated_at {real} NOT NULL)",
    "INSERT INTO {follower} (name, position, updated_at) VALUES ('integrity', 0, 0) "
    "ON CONFLICT (name) DO NOTHING",
]
_TABLES = ("leaves", "nodes", "trees", "checkpoints", "follower")
_INDEXES = ("leaves_position", "leaves_event", "nodes_position")
_RELATIONS = tuple(PREFIX + name for name in (*_TABLES, *_INDEXES))
"""Every table and index, by its name in the catalog."""
_LEAF_COLUMNS = "workspace_id, leaf_index, leaf_hash, position, event_id, fields"
_NODE_COLUMNS = "workspace_id, level, node_index, node_hash, position"
_HEAD_COLUMNS = "workspace_id, size, root_hash, position, updated_at"
_CHECKPOINT_COLUMNS = "workspace_id, tree_size, root_hash, signed_at, key_name, key_id, note"


class IntegrityLog(ABC):
    """The Merkle logs' tables: what the follower appends, and what proofs and ``verify`` read.

    Subclasses supply a connection and the few statements that differ by database; the SQL is
    shared (written with ``?`` parameters).
    """

    def __init__(self, names: dict[str, str]) -> None:
        self.names = names

    # What each database supplies.

    @abstractmethod
    @contextmanager
    def _cursor(self, *, write: bool = False) -> Iterator[Any]:
        """A cursor; with ``write``, inside one transaction committed on success."""

    @abstractmethod
    def _sql(self, statement: str) -> str:
        """The statement with this database's table names and parameter style."""

    @abstractmethod
    def _insert_rows(
        self, cursor: Any, table: str, columns: str, rows: Sequence[tuple[Any, ...]]
    ) -> None:
        """Bulk-insert rows (in the caller's transaction)."""

    @abstractmethod
    def events_at(self, positions: Sequence[int]) -> list[LoggedEvent]:
        """The stored events at these store positions, in position order (missing ones left
        out)."""

    @abstractmethod
    def lock(self) -> FollowerLock: ...

    def close(self) -> None:  # noqa: B027 - nothing to release unless a subclass holds it
        """Release connections."""

    # Writing.

    def create_tables(self) -> None:
        """Create what is missing. Once the tables exist this only reads the catalog: DDL
        (even ``IF NOT EXISTS``) would lock the tables against the follower's writes."""
        if self._tables_exist():
            return
        with self._cursor(write=True) as cursor:
            self._serialise_ddl(cursor)
            for statement in _SCHEMA:
                cursor.execute(self._sql(statement))

    def _serialise_ddl(self, cursor: Any) -> None:  # noqa: B027 - SQLite's write lock suffices
        """Keep processes that start together from racing in the catalog."""

    @abstractmethod
    def _tables_exist(self) -> bool: ...

    def position(self) -> int:
        with self._cursor() as cursor:
            cursor.execute(self._sql("SELECT position FROM {follower} WHERE name = 'integrity'"))
            row = cursor.fetchone()
        return int(row[0]) if row else 0

    def append(self, expected_position: int, batch: Batch) -> bool:
        """Append one batch atomically, if the follower's position is still
        ``expected_position``; False (and nothing written) if it has moved on."""
        try:
            self._append(expected_position, batch)
        except _MovedError:
            return False
        return True

    def _append(self, expected_position: int, batch: Batch) -> None:
        with self._cursor(write=True) as cursor:
            cursor.execute(
                self._sql(
                    "UPDATE {follower} SET position = ?, updated_at = ? "
                    "WHERE name = 'integrity' AND position = ?"
                ),
                (batch.position, time.time(), expected_position),
            )
            if cursor.rowcount != 1:
                raise _MovedError
            self._insert_rows(cursor, "leaves", _LEAF_COLUMNS, batch.leaves)
            self._insert_rows(cursor, "nodes", _NODE_COLUMNS, batch.nodes)
            cursor.executemany(
                self._sql(
                    f"INSERT INTO {{trees}} ({_HEAD_COLUMNS}) VALUES (?, ?, ?, ?, ?) "
                    "ON CONFLICT (workspace_id) DO UPDATE SET size = excluded.size, "
                    "root_hash = excluded.root_hash, position = excluded.position, "
                    "updated_at = excluded.updated_at"
                ),
                [(h.workspace_id, h.size, h.root, h.position, h.updated_at) for h in batch.heads],
            )

    def add_checkpoints(self, checkpoints: Sequence[StoredCheckpoint]) -> None:
        with self._cursor(write=True) as cursor:
            cursor.executemany(
                self._sql(
                    f"INSERT INTO {{checkpoints}} ({_CHECKPOINT_COLUMNS}) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
                ),
                [
                    (c.workspace_id, c.size, c.root, c.signed_at, c.key_name, c.key_id, c.note)
                    for c in checkpoints
                ],
            )

    # Reading.

    def heads(self, workspace_id: str | None = None) -> dict[str, TreeHead]:
        where = " WHERE workspace_id = ?" if workspace_id is not None else ""
        with self._cursor() as cursor:
            cursor.execute(
                self._sql(f"SELECT {_HEAD_COLUMNS} FROM {{trees}}{where} ORDER BY workspace_id"),
                (workspace_id,) if workspace_id is not None else (),
            )
            return {
                row[0]: TreeHead(row[0], int(row[1]), bytes(row[2]), int(row[3]), float(row[4]))
                for row in cursor.fetchall()
            }

    def node_hashes(self, workspace_id: str, wanted: Iterable[Node]) -> dict[Node, bytes]:
        """Stored perfect-subtree hashes; level 0 are the leaf hashes."""
        wanted = set(wanted)
        leaves = sorted(index for level, index in wanted if level == 0)
        inner = sorted((level, index) for level, index in wanted if level > 0)
        found: dict[Node, bytes] = {}
        with self._cursor() as cursor:
            for chunk in _chunks(leaves, 500):
                cursor.execute(
                    self._sql(
                        "SELECT leaf_index, leaf_hash FROM {leaves} WHERE workspace_id = ? "
                        f"AND leaf_index IN ({', '.join('?' * len(chunk))})"
                    ),
                    (workspace_id, *chunk),
                )
                found.update({(0, int(row[0])): bytes(row[1]) for row in cursor.fetchall()})
            for chunk in _chunks(inner, 250):
                pairs = " OR ".join("(level = ? AND node_index = ?)" for _ in chunk)
                cursor.execute(
                    self._sql(
                        "SELECT level, node_index, node_hash FROM {nodes} "
                        f"WHERE workspace_id = ? AND ({pairs})"
                    ),
                    (workspace_id, *(value for node in chunk for value in node)),
                )
                found.update({(int(r[0]), int(r[1])): bytes(r[2]) for r in cursor.fetchall()})
        return found

    def leaf_for_event(self, workspace_id: str, event_id: UUID | str) -> Leaf | None:
        try:
            event_id = UUID(str(event_id))
        except ValueError:
            return None
        with self._cursor() as cursor:
            cursor.execute(
                self._sql(
                    f"SELECT {_LEAF_COLUMNS} FROM {{leaves}} "
                    "WHERE event_id = ? AND workspace_id = ? ORDER BY leaf_index LIMIT 1"
                ),
                (str(event_id), workspace_id),
            )
            row = cursor.fetchone()
        return _leaf(row) if row else None

    def leaves_between(self, after: int, up_to: int) -> list[Leaf]:
        """Every workspace's leaves whose events are at store positions in ``(after, up_to]``,
        in store order — without their field checksums (``fields`` is empty; ``fields_at``
        reads them), as ``verify`` reads every leaf and needs those only for a changed one."""
        with self._cursor() as cursor:
            cursor.execute(
                self._sql(
                    "SELECT workspace_id, leaf_index, leaf_hash, position, {event_id_text}, "
                    "{empty} FROM {leaves} WHERE position > ? AND position <= ? "
                    "ORDER BY position"
                ),
                (after, up_to),
            )
            return list(map(Leaf._make, cursor.fetchall()))

    def fields_at(self, position: int) -> bytes:
        """The field checksums of the leaf at this store position."""
        with self._cursor() as cursor:
            cursor.execute(self._sql("SELECT fields FROM {leaves} WHERE position = ?"), (position,))
            row = cursor.fetchone()
        return bytes(row[0]) if row else b""

    def nodes_between(self, after: int, up_to: int) -> list[StoredNode]:
        """Nodes completed by leaves at store positions in ``(after, up_to]``, in the order
        they were completed (store position, then level)."""
        with self._cursor() as cursor:
            cursor.execute(
                self._sql(
                    f"SELECT {_NODE_COLUMNS} FROM {{nodes}} WHERE position > ? AND position <= ? "
                    "ORDER BY position, level, workspace_id"
                ),
                (after, up_to),
            )
            return list(map(StoredNode._make, cursor.fetchall()))

    def leaves_of(self, workspace_id: str, start: int, end: int) -> list[Leaf]:
        """One workspace's leaves ``[start, end)``, in index order."""
        with self._cursor() as cursor:
            cursor.execute(
                self._sql(
                    f"SELECT {_LEAF_COLUMNS} FROM {{leaves}} WHERE workspace_id = ? "
                    "AND leaf_index >= ? AND leaf_index < ? ORDER BY leaf_index"
                ),
                (workspace_id, start, end),
            )
            return [_leaf(row) for row in cursor.fetchall()]

    def max_leaf_position(self) -> int:
        with self._cursor() as cursor:
            cursor.execute(self._sql("SELECT MAX(position) FROM {leaves}"))
            row = cursor.fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    def checkpoints(self, workspace_id: str | None = None) -> list[StoredCheckpoint]:
        """Signed checkpoints, oldest first (per workspace)."""
        where = " WHERE workspace_id = ?" if workspace_id is not None else ""
        with self._cursor() as cursor:
            cursor.execute(
                self._sql(
                    f"SELECT {_CHECKPOINT_COLUMNS} FROM {{checkpoints}}{where} "
                    "ORDER BY workspace_id, tree_size, signed_at"
                ),
                (workspace_id,) if workspace_id is not None else (),
            )
            return [_checkpoint(row) for row in cursor.fetchall()]

    def latest_checkpoints(self) -> dict[str, StoredCheckpoint]:
        """Each workspace's largest checkpoint (the newest one at that size)."""
        with self._cursor() as cursor:
            cursor.execute(
                self._sql(
                    f"SELECT {_CHECKPOINT_COLUMNS} FROM {{checkpoints}} c WHERE tree_size = "
                    "(SELECT MAX(tree_size) FROM {checkpoints} m "
                    "WHERE m.workspace_id = c.workspace_id) ORDER BY workspace_id, signed_at"
                )
            )
            return {row[0]: _checkpoint(row) for row in cursor.fetchall()}

    def latest_checkpoint(self, workspace_id: str) -> StoredCheckpoint | None:
        with self._cursor() as cursor:
            cursor.execute(
                self._sql(
                    f"SELECT {_CHECKPOINT_COLUMNS} FROM {{checkpoints}} WHERE workspace_id = ? "
                    "ORDER BY tree_size DESC, signed_at DESC LIMIT 1"
                ),
                (workspace_id,),
            )
            row = cursor.fetchone()
        return _checkpoint(row) if row else None

    def checkpoint_at(self, workspace_id: str, size: int) -> StoredCheckpoint | None:
        with self._cursor() as cursor:
            cursor.execute(
                self._sql(
                    f"SELECT {_CHECKPOINT_COLUMNS} FROM {{checkpoints}} "
                    "WHERE workspace_id = ? AND tree_size = ? ORDER BY signed_at DESC LIMIT 1"
                ),
                (workspace_id, size),
            )
            row = cursor.fetchone()
        return _checkpoint(row) if row else None


class _MovedError(Exception):
    """The follower's position moved under a batch: nothing of it was written."""


def _leaf(row: Sequence[Any]) -> Leaf:
    event_id = str(row[4]) if row[4] is not None else None
    return Leaf(row[0], int(row[1]), bytes(row[2]), int(row[3]), event_id, bytes(row[5]))


def _checkpoint(row: Sequence[Any]) -> StoredCheckpoint:
    return StoredCheckpoint(
        row[0], int(row[1]), bytes(row[2]), int(row[3]), row[4], int(row[5]), row[6]
    )


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _table_names(quote: Any) -> dict[str, str]:
    names = {table: quote(PREFIX + table) for table in _TABLES}
    for index in _INDEXES:
        names[f"{index}_index"] = quote(f"{PREFIX}{index}", index=True)
    return names


# PostgreSQL.


class PostgresIntegrityLog(IntegrityLog):
    def __init__(self, app: AuditApplication, recorder: PostgresApplicationRecorder) -> None:
        self.datastore = recorder.datastore
        self.schema = self.datastore.schema
        self.conninfo = app.settings.postgres_conninfo()

        def quote(name: str, index: bool = False) -> str:
            if index:  # an index is named without its schema: it lives in its table's
                return SQL("{}").format(Identifier(name)).as_string(None)
            return SQL("{}.{}").format(Identifier(self.schema), Identifier(name)).as_string(None)

        names = _table_names(quote)
        names |= {"blob": "BYTEA", "real": "DOUBLE PRECISION", "uuid": "UUID"}
        names |= {"event_id_text": "event_id::text", "empty": "''::bytea"}
        names["events"] = quote(recorder.events_table_name)
        super().__init__(names)

    def _sql(self, statement: str) -> str:
        return statement.format(**self.names).replace("?", "%s")

    @contextmanager
    def _cursor(self, *, write: bool = False) -> Iterator[Any]:
        with self.datastore.get_connection() as conn:
            if not write:
                with conn.cursor(row_factory=tuple_row) as cursor:
                    yield cursor
                return
            try:
                with conn.transaction(), conn.cursor(row_factory=tuple_row) as cursor:
                    yield cursor
            except psycopg.errors.UniqueViolation:
                raise _MovedError from None

    def _serialise_ddl(self, cursor: Any) -> None:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", (_lock_key(self.schema, "ddl"),))

    def _tables_exist(self) -> bool:
        with self._cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n "
                "ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = ANY(%s)",
                (self.schema, list(_RELATIONS)),
            )
            row = cursor.fetchone()
        return bool(row and row[0] == len(_RELATIONS))

    def _insert_rows(
        self, cursor: Any, table: str, columns: str, rows: Sequence[tuple[Any, ...]]
    ) -> None:
        if not rows:
            return
        statement = f"COPY {self.names[table]} ({columns}) FROM STDIN (FORMAT BINARY)"
        with cursor.copy(statement) as copy:
            copy.write(_copy_payload(table, rows))

    def events_at(self, positions: Sequence[int]) -> list[LoggedEvent]:
        with self._cursor() as cursor:
            cursor.execute(
                self._sql(
                    "SELECT notification_id, originator_id::text, originator_version, topic, "
                    "state FROM {events} WHERE notification_id = ANY(?) ORDER BY notification_id"
                ),
                (list(positions),),
            )
            return [LoggedEvent(*row) for row in cursor.fetchall()]

    def lock(self) -> FollowerLock:
        return PostgresLock(self.conninfo, _lock_key(self.schema, "follower"), "integrity")


_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # signature, flags, no header extension
_COPY_TRAILER = b"\xff\xff"
_NULL = b"\xff\xff\xff\xff"
_I8 = struct.Struct(">iq")  # a field's length (8), then the bigint
_I4 = struct.Struct(">ii")


def _field(value: bytes) -> bytes:
    return len(value).to_bytes(4, "big") + value


def _uuid_field(value: str | None) -> bytes:
    if value is None:
        return _NULL
    try:
        return b"\x00\x00\x00\x10" + UUID(value).bytes
    except ValueError:  # not a UUID in the stored state: logged without one
        return _NULL


def _copy_payload(table: str, rows: Sequence[tuple[Any, ...]]) -> bytes:
    """PostgreSQL binary COPY data for leaf or node rows, built in one pass: psycopg's
    per-row writer costs more than the rest of a leaf's work."""
    parts = [_COPY_HEADER]
    if table == "leaves":
        for workspace, index, hashed, position, event_id, fields in rows:
            parts.append(
                b"".join(
                    (
                        b"\x00\x06",
                        _field(workspace.encode()),
                        _I8.pack(8, index),
                        _field(hashed),
                        _I8.pack(8, position),
                        _uuid_field(event_id),
                        _field(fields),
                    )
                )
            )
    else:
        for workspace, level, index, hashed, position in rows:
            parts.append(
                b"".join(
                    (
                        b"\x00\x05",
                        _field(workspace.encode()),
                        _I4.pack(4, level),
                        _I8.pack(8, index),
                        _field(hashed),
                        _I8.pack(8, position),
                    )
                )
            )
    parts.append(_COPY_TRAILER)
    return b"".join(parts)


def _lock_key(schema: str, purpose: str) -> int:
    """An advisory lock key of this store's schema (several stores may share a database)."""
    digest = hashlib.sha256(f"auditcore-integrity:{purpose}:{schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


# SQLite.


class SQLiteIntegrityLog(IntegrityLog):
    """The tables in the store's SQLite file, through connections of its own (one per thread;
    a write takes the file's write lock up front, waiting up to ``timeout`` for it)."""

    def __init__(self, path: Path, events_table: str, timeout: float = 30.0) -> None:
        self.path, self.timeout = path, timeout
        names = _table_names(lambda name, index=False: name)
        names |= {"blob": "BLOB", "real": "REAL", "uuid": "TEXT", "events": events_table}
        names |= {"event_id_text": "event_id", "empty": "X''"}
        super().__init__(names)
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._guard = threading.Lock()

    def _connection(self) -> sqlite3.Connection:
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = sqlite3.connect(
                self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False
            )
            connection.execute("PRAGMA journal_mode=WAL")
            self._local.connection = connection
            with self._guard:
                self._connections.append(connection)
        return connection

    def _sql(self, statement: str) -> str:
        return statement.format(**self.names)

    def _tables_exist(self) -> bool:
        with self._cursor() as cursor:
            marks = ", ".join("?" * len(_RELATIONS))
            cursor.execute(
                f"SELECT count(*) FROM sqlite_master WHERE name IN ({marks})", _RELATIONS
            )
            row = cursor.fetchone()
        return bool(row and row[0] == len(_RELATIONS))

    @contextmanager
    def _cursor(self, *, write: bool = False) -> Iterator[Any]:
        connection = self._connection()
        cursor = connection.cursor()
        try:
            if not write:
                yield cursor
                return
            cursor.execute("BEGIN IMMEDIATE")
            try:
                yield cursor
            except BaseException:
                connection.rollback()
                raise
            connection.commit()
        except sqlite3.IntegrityError:
            raise _MovedError from None
        finally:
            cursor.close()

    def _insert_rows(
        self, cursor: Any, table: str, columns: str, rows: Sequence[tuple[Any, ...]]
    ) -> None:
        marks = ", ".join("?" * len(columns.split(",")))
        cursor.executemany(f"INSERT INTO {self.names[table]} ({columns}) VALUES ({marks})", rows)

    def events_at(self, positions: Sequence[int]) -> list[LoggedEvent]:
        found: list[LoggedEvent] = []
        with self._cursor() as cursor:
            for chunk in _chunks(sorted(positions), 500):
                cursor.execute(
                    "SELECT rowid, originator_id, originator_version, topic, state FROM "
                    f"{self.names['events']} WHERE rowid IN ({', '.join('?' * len(chunk))}) "
                    "ORDER BY rowid",
                    chunk,
                )
                found += [
                    LoggedEvent(row[0], str(UUID(row[1])), row[2], row[3], row[4])
                    for row in cursor.fetchall()
                ]
        return found

    def lock(self) -> FollowerLock:
        return FileLock(self.path.with_name(self.path.name + ".integrity-lock"))

    def close(self) -> None:
        with self._guard:
            for connection in self._connections:
                connection.close()
            self._connections.clear()
        self._local = threading.local()


def integrity_log(app: AuditApplication) -> IntegrityLog:
    """The integrity tables of ``app``'s event store (created if missing)."""
    recorder = app.recorder
    log: IntegrityLog
    if isinstance(recorder, PostgresApplicationRecorder):
        log = PostgresIntegrityLog(app, recorder)
    else:
        log = SQLiteIntegrityLog(Path(app.settings.event_store), recorder.events_table_name)  # type: ignore[attr-defined]
    log.create_tables()
    return log
