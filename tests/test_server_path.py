"""The read side through a ClickHouse server's HTTP interface (the chDB-backed stand-in in
../shared/tools): staging through ``input()``, one insert per partition, an interrupted batch
finished on resume, and a refused event parked."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import uuid4

import pytest

from auditcore import AuditCore, Settings
from auditcore.readmodel.queries import EventQuery
from tests.clickhouse_server import ClickHouseStandIn
from tests.conftest import fresh_postgres_store
from tests.interrupted import DiesMidInsert, SimulatedKillError
from tests.poison import store_unprojectable


@pytest.fixture
def server_url(clickhouse_server: ClickHouseStandIn) -> str:
    return clickhouse_server.url(f"t_{uuid4().hex[:12]}")


def test_the_server_path_is_exactly_once_and_parks_refused_events(
    postgres_database: str, server_url: str
) -> None:
    settings = Settings(fresh_postgres_store(postgres_database), server_url)
    with AuditCore(settings) as audit:
        audit.record_many(
            {
                "action": "incident.comment_added",
                "workspace_id": "acme",
                "metadata": {"body": f"year {year}"},
                "occurred_at": datetime(year, 7, 1, tzinfo=UTC),
            }
            for year in range(1900, 2026, 3)
        )
        poison = store_unprojectable(audit, "acme")
        audit.migrate()
        model, target = audit.read_models.get("audit_events"), settings.clickhouse_target
        dying = DiesMidInsert(
            model, audit.app, target, client=audit.clickhouse,
            unwritten={str(year) for year in range(1903, 2026)},
        )  # fmt: skip
        with pytest.raises(SimulatedKillError):
            dying.step()
        written = audit.clickhouse.query("SELECT count() FROM audit_events").result_rows
        assert written == [(1,)]

        audit.project()
        acme = audit.reader("acme")
        assert acme.count(EventQuery()) == 42
        rows = audit.clickhouse.query(
            "SELECT count(), uniqExact(event_id) FROM audit_events"
        ).result_rows
        assert rows == [(42, 42)]
        hourly = audit.clickhouse.query("SELECT sum(events) FROM activity_hourly").result_rows
        assert hourly == [(42,)]
        letters = audit.projections.dead_letters(audit.clickhouse)
        assert {(x.model, x.event_id) for x in letters} == {
            ("audit_events", poison),
            ("activity_hourly", poison),
        }
        assert {s.lag for s in audit.projections.status(audit.clickhouse)} == {0}
