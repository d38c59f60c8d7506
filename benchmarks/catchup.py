"""Projection catch-up: how fast a stored log becomes a queryable read model.

Beside, in the same run on the same log: binary ``COPY … TO STDOUT`` of the log's columns
(the ceiling: PostgreSQL handing the log out, nothing decoded, nothing written), the lines
event tables read (``auditcore.projection.lines``), a plain decoded read of the log (what every
processor did before: read and decode, write nothing), the processors' decoded path, and the
eventsourcing library's own ProjectionRunner into a PostgreSQL table (one transaction per
event; timed on a slice and extrapolated). Catching every read model up runs in a subprocess
of its own (``benchmarks.catchup_memory``), which reports its peak resident memory.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from typing import Any, ClassVar

from eventsourcing.persistence import Tracking
from eventsourcing.postgres import PostgresDatastore, PostgresTrackingRecorder
from eventsourcing.projection import Projection, ProjectionRunner
from eventsourcing.utils import EnvType
from psycopg.sql import SQL, Identifier

from auditcore import AuditCore, AuditEvent, Settings
from auditcore.clickhouse.connection import ClickHouseTarget, connect
from auditcore.projection.lines import LineReader
from auditcore.projection.log import LogReader
from auditcore.projection.processor import Processor
from auditcore.projection.rebuild import rebuild
from auditcore.projection.records import decode_logged
from auditcore.projection.runner import ProjectionRunner as AuditProjectionRunner
from auditcore.store.application import AuditApplication
from benchmarks.common import (
    Measurement,
    bench_registry,
    console,
    fresh_database,
    populate,
    report,
    timed,
    timed_result,
)

READ_BATCH = 20_000


class LibraryApp(AuditApplication):
    """The same event store, constructed the way the library's runner constructs apps."""

    name = "auditcore"
    settings_for_runner: ClassVar[Settings]

    def __init__(self, env: EnvType | None = None) -> None:
        super().__init__(self.settings_for_runner, bench_registry())


class EventsView(PostgresTrackingRecorder):
    """A careful PostgreSQL view of the events, written with the library's tracking."""

    def __init__(self, datastore: PostgresDatastore, **kwargs: Any) -> None:
        super().__init__(datastore, **kwargs)
        self.sql_create_statements.append(
            SQL(
                "CREATE TABLE IF NOT EXISTS audit_view (event_id uuid PRIMARY KEY, "
                "workspace_id text, occurred_at timestamptz, action text, actor_id text, "
                "targets jsonb, metadata jsonb)"
            )
        )

    def insert_event(self, event: AuditEvent, tracking: Tracking) -> None:
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(
                "INSERT INTO audit_view VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (
                    event.event_id,
                    event.workspace_id,
                    event.occurred_at,
                    event.action,
                    event.actor.id,
                    event.model_dump_json(include={"targets"}),
                    event.model_dump_json(include={"metadata"}),
                ),
            )
            self._insert_tracking(curs, tracking)


class EventsProjection(Projection[EventsView]):
    name = "audit_view"

    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        self.view.insert_event(domain_event, tracking)


def plain_read(audit: AuditCore) -> int:
    """Read the whole log in batches and decode every event, with the same reader and decoder
    the processors use: the ceiling for any processor (it writes nothing)."""
    position, count = 0, 0
    registry, log = audit.registry, LogReader(audit.app)
    while batch := log.after(position, READ_BATCH):
        for event in batch:
            decode_logged(registry, event)
        count += len(batch)
        position = batch[-1].position
    return count


def copy_out(audit: AuditCore) -> int:
    """The whole log through binary ``COPY … TO STDOUT``: PostgreSQL's own rate of handing
    it out, the ceiling for any reader (nothing decoded, nothing written)."""
    recorder: Any = audit.app.recorder
    table = Identifier(recorder.datastore.schema, recorder.events_table_name)
    statement = SQL(
        "COPY (SELECT notification_id, originator_id, originator_version, topic, state "
        "FROM {} ORDER BY notification_id) TO STDOUT (FORMAT binary)"
    ).format(table)
    with recorder.datastore.get_connection() as conn, conn.cursor() as curs:
        with curs.copy(statement) as copy:
            for _chunk in copy:
                pass
        return curs.rowcount  # COPY's own count of the rows it sent


def lines_read(audit: AuditCore) -> int:
    """The whole log as the lines event tables read (built by PostgreSQL), written nowhere."""
    reader = LineReader.of(audit.app)
    assert reader is not None
    position, count = 0, 0
    while (batch := reader.after(position, READ_BATCH, ())).events:
        count, position = count + batch.events, batch.last
    return count


def auditcore_catch_up(
    audit: AuditCore, chdb: str, database: str, model: str, *, lines: bool = True
) -> tuple[int, float]:
    """Catch one read model up from position 0 (``lines``: as processors do; else decoding
    every batch); time only the catch-up itself (the engine start and the DDL are not part
    of throughput)."""
    target = ClickHouseTarget(f"chdb://{chdb}?database={database}")
    models = audit.read_models.only([model])
    runner = AuditProjectionRunner(audit.app, target, models, batch_size=READ_BATCH)
    with connect(target) as client:
        runner.migrate(client)
        processor = Processor(
            models.get(model), audit.app, target, batch_size=READ_BATCH, client=client, lines=lines
        )
        return timed(processor.catch_up)


def every_model_in_a_process(url: str, chdb: str, database: str) -> dict[str, Any]:
    """Every read model caught up, one after another, by a process of its own: its figures
    and its peak resident memory (``benchmarks.catchup_memory``)."""
    command = [sys.executable, "-m", "benchmarks.catchup_memory", url, chdb, database]
    done = subprocess.run([*command, str(READ_BATCH)], capture_output=True, text=True, check=True)
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def auditcore_rebuild(audit: AuditCore, chdb: str, database: str) -> tuple[int, float]:
    """Rebuild the (already built) audit_events beside itself and swap it in."""
    target = ClickHouseTarget(f"chdb://{chdb}?database={database}")
    model = audit.read_models.get("audit_events")
    with connect(target) as client:
        result, seconds = timed_result(
            lambda: rebuild(model, audit.app, target, client, batch_size=READ_BATCH)
        )
    return result.events, seconds


def library_runner(settings: Settings, events: int, warm_up: int = 200) -> tuple[int, float]:
    """The library's runner over the first ``events``; timed after ``warm_up`` events so its
    start-up (tables, subscription thread) does not count against it."""
    LibraryApp.settings_for_runner = settings
    env = settings.eventsourcing_env()
    env.pop("APPLICATION_RECORDER_TOPIC")
    with ProjectionRunner(
        application_class=LibraryApp,
        projection_class=EventsProjection,
        view_class=EventsView,
        env=env,
    ) as runner:
        runner.wait(warm_up, timeout=600)
        _, seconds = timed(lambda: runner.wait(events, timeout=3600) or 0)
    return events - warm_up, seconds


def run(events: int, library_slice: int) -> list[Measurement]:
    with fresh_database("ac_bench_catchup") as url, tempfile.TemporaryDirectory() as chdb:
        settings = Settings(url, f"chdb://{chdb}")
        with AuditCore(settings, registry=bench_registry()) as audit:
            populate(audit, events)
            rows = []
            console.print("COPY out of the log …")
            copy_out(audit)  # once untimed: every reader after it finds the log in memory
            count, seconds = timed(lambda: copy_out(audit))
            ceiling = Measurement(
                "binary COPY … TO STDOUT of the log (ceiling: nothing decoded)", count, seconds
            )
            rows.append(ceiling)
            console.print("lines read …")
            count, seconds = timed(lambda: lines_read(audit))
            rows.append(Measurement("lines built by PostgreSQL (written nowhere)", count, seconds))
            console.print("plain decoded read …")
            count, seconds = timed(lambda: plain_read(audit))
            rows.append(
                Measurement("plain decoded read of the log (written nowhere)", count, seconds)
            )
            console.print("auditcore processor → audit_events …")
            count, seconds = auditcore_catch_up(audit, chdb, "one", "audit_events")
            one = Measurement("auditcore processor → ClickHouse audit_events", count, seconds)
            rows.append(one)
            console.print("auditcore processor, decoded path → audit_events …")
            count, seconds = auditcore_catch_up(audit, chdb, "decoded", "audit_events", lines=False)
            rows.append(
                Measurement(
                    "auditcore processor, decoding every batch → ClickHouse audit_events",
                    count,
                    seconds,
                )
            )
            console.print("auditcore processors → all read models, in a process of their own …")
            every = every_model_in_a_process(url, chdb, "all")
            names = [model.name for model in audit.read_models]
            rows.append(
                Measurement(
                    f"auditcore processors → all {len(names)} read models, one after another",
                    int(every["events"]),
                    float(every["seconds"]),
                    note=f"peak RSS {every['peak_mb']:,.0f} MB (floor {every['floor_mb']:,.0f})",
                )
            )
            console.print("auditcore projections rebuild audit_events …")
            count, seconds = auditcore_rebuild(audit, chdb, "one")
            rows.append(
                Measurement(
                    "auditcore projections rebuild audit_events (beside the live table, then swap)",
                    count,
                    seconds,
                )
            )
            console.print(f"eventsourcing ProjectionRunner, first {library_slice:,} events …")
            count, seconds = library_runner(settings, library_slice)
            rows.append(
                Measurement(
                    "eventsourcing ProjectionRunner → PostgreSQL table",
                    count,
                    seconds,
                    note=f"first {library_slice:,} events, rate extrapolated",
                )
            )
            for row in rows[1:]:
                if row.name != "eventsourcing ProjectionRunner → PostgreSQL table":
                    ratio = f"{row.rate / ceiling.rate:.0%} of the COPY out"
                    row.note = f"{ratio}; {row.note}" if row.note else ratio
            report(
                "catchup — projection catch-up",
                rows,
                baseline="eventsourcing ProjectionRunner → PostgreSQL table",
                extra={"events": events, "library_slice": library_slice, "memory": every},
            )
            return rows
