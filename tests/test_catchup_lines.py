"""Event tables catch up from lines PostgreSQL builds (``auditcore.projection.lines``): the
same bytes the decoded path sends, the same tables, and the decoded path wherever an event
needs Python (upcasting, sealed fields) or ClickHouse refuses a batch."""

from __future__ import annotations

import random
import threading
from pathlib import Path
from typing import Any
from uuid import uuid4

import orjson
import pytest
from psycopg import sql

from auditcore import AuditCore, Settings
from auditcore.clickhouse.connection import ClickHouseTarget, connect
from auditcore.events.actions import ActionRegistry
from auditcore.projection import deadletters, tracking
from auditcore.projection.lines import LineBatch, LineReader, ReadAhead
from auditcore.projection.log import LogReader, source_line
from auditcore.projection.processor import Processor
from auditcore.projection.runner import ProjectionRunner
from tests.conftest import fresh_postgres_store
from tests.poison import store_unprojectable
from tests.projection_worker import sibling_database

HOSTILE = [
    'quote " backslash \\ slash / \\" \\\\u0041',
    "line\nbreak\ttab\r\x00nul\x1f\x7f",
    "\u2028\u2029 separators, \u202e right-to-left override",
    "🦀🔥 astral, e\u0301 combining, İstanbul, ΣΊΣΥΦΟΣ, 東京",
    "\ufeff byte order mark \ufffd replacement",
    "",
    "x" * 256,
]


def hostile_events(count: int, seed: int = 3) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    actions = ["incident.comment_added", "user.logged_in", "settings.updated"]
    return [
        {
            "action": rng.choice(actions),
            "workspace_id": rng.choice(["acme", "globex", "ws-2"]),
            "actor": {"id": f"u_{rng.randrange(9)}", "type": "user", "name": rng.choice(HOSTILE)},
            "targets": [{"type": "thing", "id": str(n), "name": rng.choice(HOSTILE)}],
            "metadata": {"body": rng.choice(HOSTILE), "n": n, rng.choice(HOSTILE)[:20]: 1},
        }
        for n in range(count)
    ]


def registry() -> ActionRegistry:
    actions = ActionRegistry()
    for action in ("incident.comment_added", "user.logged_in", "settings.updated"):
        actions.register(action)
    return actions


def raw_state(audit: AuditCore, position: int, state: bytes) -> None:
    """Overwrite one stored state behind our back."""
    recorder: Any = audit.app.recorder
    table = sql.Identifier(recorder.datastore.schema, recorder.events_table_name)
    with recorder.datastore.get_connection() as conn, conn.transaction():
        conn.execute(
            sql.SQL("UPDATE {} SET state = %s WHERE notification_id = %s").format(table),
            (state, position),
        )


@pytest.fixture
def pg_store(postgres_database: str, chdb_dir: Path) -> Settings:
    """A fresh PostgreSQL store, for tests that read it and never ClickHouse (so they run
    once, not once per engine)."""
    clickhouse = f"chdb://{chdb_dir}?database=t_{uuid4().hex[:12]}"
    return Settings(fresh_postgres_store(postgres_database), clickhouse)


def test_lines_are_the_bytes_the_decoded_path_sends(pg_store: Settings) -> None:
    with AuditCore(pg_store, registry=registry()) as audit:
        reader = LineReader.of(audit.app)
        assert reader is not None
        assert reader.after(0, 10, ()) == LineBatch(0, 0, 0, b"")  # an empty store
        audit.record_many(hostile_events(300))
        log = LogReader(audit.app)
        position, seen = 0, 0
        while (batch := reader.after(position, 37, ())).events:
            expected = log.after(position, 37)
            assert batch.lines is not None
            assert (batch.after, batch.last, batch.events) == (
                position,
                expected[-1].position,
                len(expected),
            )
            assert sorted(batch.lines.split(b"\n")) == sorted(map(source_line, expected))
            position, seen = batch.last, seen + batch.events
        assert seen == 300
        assert reader.after(position, 37, ()) == LineBatch(position, position, 0, b"")


def test_a_batch_that_needs_python_has_no_lines(pg_store: Settings) -> None:
    with AuditCore(pg_store, registry=registry()) as audit:
        audit.record_many(hostile_events(20))
        reader = LineReader.of(audit.app)
        assert reader is not None
        assert reader.after(0, 100, ()).lines is not None
        # An action with upcasters anywhere in the batch: decoded.
        assert reader.after(0, 100, {"settings.updated"}).lines is None
        assert reader.after(0, 100, {"no.such_action"}).lines is not None
        # A sealed state (personal fields to open): decoded.
        first = LogReader(audit.app).after(0, 1)[0]
        state = orjson.loads(first.state) | {"sealed": [{"k": "x", "p": []}]}
        raw_state(audit, first.position, orjson.dumps(state))
        assert reader.after(0, 100, ()).lines is None
        assert reader.after(first.position, 100, ()).lines is not None


def event_rows(audit: AuditCore, url: str, lines: bool) -> dict[str, Any]:
    """audit_events and activity_hourly built into ``url`` by processors that read lines (or
    decode every batch): each table's rows, and the events parked."""
    target = ClickHouseTarget(url)
    models = audit.read_models.only(["audit_events", "activity_hourly"])
    result: dict[str, Any] = {}
    with connect(target) as client:
        ProjectionRunner(audit.app, target, models).migrate(client)
        for model in models:
            processor = Processor(
                model, audit.app, target, batch_size=64, client=client, lines=lines
            )
            assert processor.catch_up() == audit.app.recorder.max_notification_id()
            client.command(f"OPTIMIZE TABLE `{model.table_name}` FINAL")
            result[model.name] = sorted(
                map(repr, client.query(f"SELECT * FROM `{model.table_name}`").result_rows)
            )
            key = tracking.table_key(client, model.table_name) or ""
            letters = deadletters.letters(client, [key])
            result[model.name + " parked"] = sorted((x.position, x.error) for x in letters)
    return result


def test_lines_build_the_same_tables_as_the_decoded_path(pg_settings: Settings) -> None:
    with AuditCore(pg_settings, registry=registry()) as audit:
        audit.record_many(hostile_events(200))
        store_unprojectable(audit, "acme")  # ClickHouse refuses its time
        audit.record_many(hostile_events(100, seed=4))
        # Edited behind our back: a raw line break inside a string (ClickHouse takes it, on
        # both paths), and a state cut short (refused: parked, the rest of its batch written).
        edited, cut = LogReader(audit.app).after(250, 2)
        raw_state(audit, edited.position, edited.state.replace(b'"body":"', b'"body":"\n', 1))
        raw_state(audit, cut.position, cut.state[:-7])
        audit.record_many(hostile_events(100, seed=5))

        lines = event_rows(audit, sibling_database(pg_settings.clickhouse, "lines"), True)
        decoded = event_rows(audit, sibling_database(pg_settings.clickhouse, "decoded"), False)
    assert lines == decoded
    assert len(lines["audit_events"]) == 399
    assert [p for p, _ in lines["audit_events parked"]] == [201, cut.position]


def test_a_read_ahead_is_taken_only_where_it_starts(pg_store: Settings) -> None:
    with AuditCore(pg_store, registry=registry()) as audit:
        audit.record_many(hostile_events(10))
        reader = LineReader.of(audit.app)
        assert reader is not None
        reads: list[int] = []
        failing = threading.Event()

        def read(position: int) -> LineBatch:
            reads.append(position)
            if failing.is_set():
                failing.clear()
                raise ConnectionError("the store went away")
            return reader.after(position, 100, ())

        ahead = ReadAhead(read)
        ahead.start(0)
        ahead.wait()  # read before the 5 below are recorded
        audit.record_many(hostile_events(5, seed=9))
        # Read before the 5 came: a shorter batch, still the log's next events.
        assert ahead.take(0).events == 10
        ahead.start(3)
        assert ahead.take(0).events == 15  # started elsewhere: read again
        assert reads == [0, 3, 0]
        ahead.start(15)
        ahead.wait()  # read (empty) before the 2 below are recorded
        audit.record_many(hostile_events(2, seed=10))
        assert ahead.take(15).events == 2  # an empty read ahead is not trusted
        failing.set()
        ahead.start(17)
        ahead.wait()
        failing.set()
        with pytest.raises(ConnectionError):  # a failed read ahead is read again, here
            ahead.take(17)
        assert ahead.take(17) == LineBatch(17, 17, 0, b"")
        assert reads == [0, 3, 0, 15, 15, 17, 17, 17]
