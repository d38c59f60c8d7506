"""A batch of the log as ClickHouse source lines, built by PostgreSQL: the fast path of
event tables, where no Python touches an event.

PostgreSQL splices each event's store columns in front of its stored state (exactly the bytes
``auditcore.projection.log.source_line`` makes) and joins the batch into one ``bytea``, which
arrives as one value and goes to ClickHouse as it is. The same statement says how many events
the batch holds, where it ends, and whether any event needs Python first: a sealed state (its
personal fields must be opened) or an action with upcasters. Such a batch has no lines: the
processor takes the decoded path for it (``auditcore.projection.processor``).

Failure semantics: a read either returns a whole batch or raises (nothing is half-read); a
read ahead (``ReadAhead``) that failed or started at another position is dropped, and the batch
is read again in the caller's thread, where its error is raised. SQLite stores have no such
path (``LineReader.of`` gives ``None``): their processors decode as before.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
from collections.abc import Callable, Collection
from typing import NamedTuple, cast

from eventsourcing.postgres import PostgresApplicationRecorder
from psycopg.rows import tuple_row
from psycopg.sql import SQL, Composed, Identifier

from auditcore.store.application import AuditApplication


class LineBatch(NamedTuple):
    """The events in ``(after, last]`` of the log."""

    after: int
    last: int
    """The batch's last position (``after`` when the log has nothing after it)."""
    events: int
    """Events in the batch, handled or not."""
    lines: bytes | None
    """The events' source lines, one per line; ``None`` if some event needs Python first
    (sealed fields, upcasting)."""


# The spliced line: '{"_position":…,"_stream_id":"…","_version":…,"_action":"…",' and the
# stored state after its opening brace, as bytes (a state is never re-encoded as text).
_LINE = (
    'convert_to(\'{{"_position":\' || notification_id || \',"_stream_id":"\' || '
    'originator_id::text || \'","_version":\' || originator_version || '
    "',\"_action\":\"' || topic || '\",', 'UTF8') || substring(state FROM 2)"
)
_SEALED = "position('\"sealed\":'::bytea IN state) > 0"
_M_MMAP_THRESHOLD = -3
_MAPPED_FROM = 1 << 20


def _map_big_buffers() -> None:
    """Have glibc map every buffer of 1 MiB or more and unmap it when freed.

    A batch's lines (tens of MB) are allocated and freed every batch, in two threads; glibc
    then raises its mmap threshold past them and keeps them in each thread's heap instead:
    ~80 MB more resident at 20,000-event batches (measured: 724 against 644 MB peak over
    200,000 events). Elsewhere than glibc this does nothing."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, _MAPPED_FROM)
    except (OSError, AttributeError):
        pass


class LineReader:
    """Reads the log after a position as line batches."""

    def __init__(self, recorder: PostgresApplicationRecorder) -> None:
        self._datastore = recorder.datastore
        # Every event's line (a read model's SQL keeps the actions it handles), in no set
        # order: ClickHouse sorts a batch by the table's key, and each line has its position.
        self._select: Composed = SQL(
            "SELECT count(*), max(notification_id), "
            f"coalesce(bool_or(topic = ANY(%(decoded)s) OR {_SEALED}), false), "
            f"string_agg({_LINE}, '\\x0a'::bytea) "
            "FROM (SELECT notification_id, originator_id, originator_version, topic, state "
            "FROM {}.{} WHERE notification_id > %(after)s ORDER BY notification_id "
            "LIMIT %(limit)s) AS batch"
        ).format(Identifier(recorder.datastore.schema), Identifier(recorder.events_table_name))

    @classmethod
    def of(cls, app: AuditApplication) -> LineReader | None:
        """A reader for ``app``'s store, or None where the store is not PostgreSQL."""
        recorder = app.recorder
        return cls(recorder) if isinstance(recorder, PostgresApplicationRecorder) else None

    def after(self, position: int, limit: int, decoded: Collection[str]) -> LineBatch:
        """Up to ``limit`` events after ``position``; ``decoded``: the actions whose events
        must be decoded in Python (those with upcasters)."""
        parameters = {"decoded": sorted(decoded), "after": position, "limit": limit}
        with (
            self._datastore.get_connection() as conn,
            conn.cursor(binary=True, row_factory=tuple_row) as curs,
        ):
            curs.execute(self._select, parameters, prepare=True)
            row = curs.fetchone()
        assert row is not None  # an aggregate always answers one row
        events, last, needs_python, lines = cast("tuple[int, int, bool, bytes | None]", row)
        if not events:
            return LineBatch(position, position, 0, b"")
        return LineBatch(position, last, events, None if needs_python else bytes(lines or b""))


class ReadAhead:
    """Reads the next batch in another thread while the current one is written.

    Only PostgreSQL works in that thread (the read), so a processor's ClickHouse client stays
    on its own thread. ``take`` returns the batch read ahead only if it starts where asked."""

    def __init__(self, read: Callable[[int], LineBatch]) -> None:
        _map_big_buffers()
        self._read = read
        self._thread: threading.Thread | None = None
        self._position = -1
        self._result: LineBatch | None = None

    def start(self, position: int) -> None:
        self.wait()
        self._position, self._result = position, None
        self._thread = threading.Thread(
            target=self._run, args=(position,), name="auditcore-read-ahead", daemon=True
        )
        self._thread.start()

    def take(self, position: int) -> LineBatch:
        """The batch after ``position``: the one read ahead, else read now."""
        self.wait()
        result, self._result = self._result, None
        # An empty batch read ahead is not trusted: events may have come since.
        if result is not None and result.events and self._position == position:
            return result
        return self._read(position)

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self, position: int) -> None:
        try:
            self._result = self._read(position)
        except Exception:  # read again by ``take`` in the caller's thread, which raises it
            self._result = None
