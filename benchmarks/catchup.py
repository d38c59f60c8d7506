"""Projection catch-up: how fast a stored log becomes a queryable read model.

Beside, in the same run on the same log: a plain decoded read of the log (the ceiling: read
and decode, write nothing), and the eventsourcing library's own ProjectionRunner into a
PostgreSQL table (one transaction per event; timed on a slice and extrapolated).
"""

from __future__ import annotations

import tempfile
from typing import Any, ClassVar

from eventsourcing.persistence import Tracking
from eventsourcing.postgres import PostgresDatastore, PostgresTrackingRecorder
from eventsourcing.projection import Projection, ProjectionRunner
from eventsourcing.utils import EnvType
from psycopg.sql import SQL

from auditcore import AuditCore, AuditEvent, Settings
from auditcore.clickhouse.connection import ClickHouseTarget, connect
from auditcore.projection.log import LogReader
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


def auditcore_catch_up(
    audit: AuditCore, chdb: str, database: str, models: list[str]
) -> tuple[int, float]:
    """Catch the given read models up from position 0; time only the catch-up itself (the
    engine start and the DDL are not part of throughput)."""
    target = ClickHouseTarget(f"chdb://{chdb}?database={database}")
    runner = AuditProjectionRunner(
        audit.app, target, audit.read_models.only(models), batch_size=READ_BATCH
    )
    with connect(target) as client:
        runner.migrate(client)
        return timed(lambda: max(runner.catch_up(client).values()))


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
            console.print("plain decoded read …")
            count, seconds = timed(lambda: plain_read(audit))
            ceiling = Measurement("plain decoded read of the log (ceiling)", count, seconds)
            rows.append(ceiling)
            console.print("auditcore processor → audit_events …")
            count, seconds = auditcore_catch_up(audit, chdb, "one", ["audit_events"])
            one = Measurement("auditcore processor → ClickHouse audit_events", count, seconds)
            rows.append(one)
            console.print("auditcore processors → all read models …")
            names = [model.name for model in audit.read_models]
            count, seconds = auditcore_catch_up(audit, chdb, "all", names)
            rows.append(
                Measurement(
                    f"auditcore processors → all {len(names)} read models, one after another",
                    count,
                    seconds,
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
            for row in rows:
                if row.name.startswith("auditcore"):
                    row.note = f"{row.rate / ceiling.rate:.0%} of the plain read"
            report(
                "catchup — projection catch-up",
                rows,
                baseline="eventsourcing ProjectionRunner → PostgreSQL table",
                extra={"events": events, "library_slice": library_slice},
            )
            return rows
