"""State tables equal their aggregates: random legal command sequences go through ``Incident``
and ``Monitor``, are projected (in random batch sizes, in two rounds, so folds also start from
rows read back from ClickHouse), and every column of each ``current()`` row is compared with
the aggregate's own state."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from auditcore import AuditCore, DomainRuleError, Incident, Monitor, Settings
from auditcore.projection.log import LogReader
from auditcore.projection.runner import ProjectionRunner
from auditcore.readmodel.registry import ReadModelRegistry
from tests.clickhouse_server import ClickHouseStandIn
from tests.conftest import fresh_postgres_store

WHEN = st.datetimes(
    min_value=datetime(1900, 1, 1), max_value=datetime(2025, 12, 31), timezones=st.just(UTC)
)
Command = Callable[[Any, datetime], object]

INCIDENT_COMMANDS: list[Command] = [
    lambda i, at: i.acknowledge(occurred_at=at),
    lambda i, at: i.change_severity("sev1", occurred_at=at),
    lambda i, at: i.change_severity("sev4", occurred_at=at),
    lambda i, at: i.assign("user_ana", "Ana", occurred_at=at),
    lambda i, at: i.assign("user_ben", occurred_at=at),
    lambda i, at: i.comment("seen", occurred_at=at),
    lambda i, at: i.resolve("fixed", occurred_at=at),
    lambda i, at: i.reopen("back again", occurred_at=at),
]
MONITOR_COMMANDS: list[Command] = [
    lambda m, at: m.configure(name="renamed", occurred_at=at),
    lambda m, at: m.configure(interval_seconds=30, regions=["us-east"], occurred_at=at),
    lambda m, at: m.configure(url="https://other.example.com/health", occurred_at=at),
    lambda m, at: m.pause(occurred_at=at),
    lambda m, at: m.resume(occurred_at=at),
    lambda m, at: m.went_down("eu-west", "timeout", 503, occurred_at=at),
    lambda m, at: m.recovered("eu-west", occurred_at=at),
    lambda m, at: m.delete(occurred_at=at),
]

STEPS = st.lists(st.tuples(st.integers(0, 7), WHEN), max_size=12)
STREAMS = st.lists(st.tuples(st.booleans(), WHEN, STEPS, STEPS), min_size=1, max_size=6)


def incident_row(incident: Incident, position: int) -> dict[str, Any]:
    return {
        "workspace_id": incident.workspace_id,
        "incident_id": incident.id,
        "version": incident.version,
        "title": incident.title,
        "severity": incident.severity,
        "service": incident.service,
        "status": incident.status.value,
        "assignee_id": incident.assignee_id or "",
        "opened_by": incident.opened_by,
        "opened_at": incident.created_on,
        "acknowledged_at": incident.acknowledged_at,
        "resolved_at": incident.resolved_at,
        "comments": incident.comments,
        "times_reopened": incident.times_reopened,
        "updated_at": incident.modified_on,
        "position": position,
    }


def monitor_row(monitor: Monitor, position: int) -> dict[str, Any]:
    return {
        "workspace_id": monitor.workspace_id,
        "monitor_id": monitor.id,
        "version": monitor.version,
        "name": monitor.name,
        "kind": monitor.kind,
        "url": monitor.url,
        "interval_seconds": monitor.interval_seconds,
        "regions": monitor.regions,
        "state": monitor.state,
        "down_since": monitor.down_since,
        "downtime_seconds": monitor.downtime_seconds,
        "outages": monitor.outages,
        "created_at": monitor.created_on,
        "updated_at": monitor.modified_on,
        "position": position,
    }


def test_every_column_of_current_rows_equals_the_aggregate(
    postgres_database: str, clickhouse_engine: str, request: pytest.FixtureRequest
) -> None:
    """On both engines; on the server, 8 examples instead of 30 (each batch takes a few HTTP
    round trips, and a batch size of 1 makes hundreds of batches)."""
    if clickhouse_engine == "chdb":
        chdb_dir: Path = request.getfixturevalue("chdb_dir")

        def fresh_clickhouse() -> str:
            return f"chdb://{chdb_dir}?database=s_{uuid4().hex[:12]}"
    else:
        server: ClickHouseStandIn = request.getfixturevalue("clickhouse_server")

        def fresh_clickhouse() -> str:
            return server.url(f"s_{uuid4().hex[:12]}")

    @settings(
        max_examples=30 if clickhouse_engine == "chdb" else 8,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(streams=STREAMS, batch_size=st.integers(1, 40))
    # The sequences that once broke the folds, always tried: a monitor paused while down and
    # resumed (it is still down); an incident acknowledged, resolved, reopened and acknowledged
    # again (its time to acknowledge is the first one).
    @example(
        streams=[
            (False, datetime(2001, 1, 1, tzinfo=UTC), [(5, datetime(2001, 1, 2, tzinfo=UTC))],
             [(3, datetime(2001, 1, 3, tzinfo=UTC)), (4, datetime(2001, 1, 4, tzinfo=UTC))]),
            (True, datetime(1950, 1, 1, tzinfo=UTC),
             [(0, datetime(1950, 1, 2, tzinfo=UTC)), (6, datetime(1950, 1, 3, tzinfo=UTC))],
             [(7, datetime(1950, 1, 4, tzinfo=UTC)), (0, datetime(1950, 1, 5, tzinfo=UTC))]),
        ],
        batch_size=1,
    )  # fmt: skip
    def check(streams: list[Any], batch_size: int) -> None:
        store = fresh_postgres_store(postgres_database)
        clickhouse = fresh_clickhouse()
        with AuditCore(Settings(store, clickhouse)) as audit:
            models = ReadModelRegistry(
                [audit.read_models.get("incidents"), audit.read_models.get("monitors")]
            )
            runner = ProjectionRunner(
                audit.app, audit.settings.clickhouse_target, models, batch_size=batch_size
            )
            aggregates: list[Incident | Monitor] = []
            for is_incident, opened_at, _, _ in streams:
                aggregates.append(
                    Incident.open("acme", title="Down", severity="sev2", service="api",
                                  occurred_at=opened_at)
                    if is_incident
                    else Monitor.create("acme", name="Probe", url="https://example.com/",
                                        occurred_at=opened_at)
                )  # fmt: skip
            for round_ in (2, 3):  # two rounds: the second folds rows read back from ClickHouse
                for aggregate, stream in zip(aggregates, streams, strict=True):
                    commands = (
                        INCIDENT_COMMANDS if isinstance(aggregate, Incident) else MONITOR_COMMANDS
                    )
                    for index, at in stream[round_]:
                        with contextlib.suppress(DomainRuleError):
                            commands[index](aggregate, at)
                audit.save(*aggregates)
                runner.catch_up(audit.clickhouse)

            log = LogReader(audit.app)
            reader = audit.reader("acme")
            rows = {
                **{r["incident_id"]: r for r in reader.current("incidents", limit=1000)},
                **{r["monitor_id"]: r for r in reader.current("monitors", limit=1000)},
            }
            assert len(rows) == len(aggregates)
            for aggregate in aggregates:
                position = log.stream(aggregate.id)[-1].position
                expected = (
                    incident_row(aggregate, position)
                    if isinstance(aggregate, Incident)
                    else monitor_row(aggregate, position)
                )
                row = rows[aggregate.id]
                assert set(row) == set(expected), "a column the test does not compare"
                assert row == expected

    check()


def test_a_batch_touching_4000_incidents_folds_on_every_engine(
    postgres_database: str, clickhouse_url: str
) -> None:
    """One batch looks up the current rows of 4,000 incidents: on a server, no query parameter
    may exceed 128 KiB (4,000 UUIDs in one would be ~156 KB), so the lookup is chunked."""
    with AuditCore(Settings(fresh_postgres_store(postgres_database), clickhouse_url)) as audit:
        incidents = [
            Incident.open("acme", title=f"t{i}", severity="sev3", service="api")
            for i in range(4000)
        ]
        audit.save(*incidents)
        assert audit.project()["incidents"] == 4000
        for incident in incidents:
            incident.acknowledge()
        audit.save(*incidents)
        assert audit.project()["incidents"] == 4000  # folds from the 4,000 rows read back
        rows = audit.clickhouse.query(
            "SELECT status, uniqExact(incident_id), min(version) FROM incidents FINAL "
            "GROUP BY status"
        ).result_rows
        assert rows == [("acknowledged", 4000, 2)]
