"""The read side through a ClickHouse server's HTTP interface (the chDB-backed stand-in in
../shared/tools): staging through ``input()``, one insert per partition, an interrupted batch
finished on resume, and a refused event parked."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from auditcore import AuditCore, Settings
from auditcore.readmodel.queries import EventQuery
from tests.conftest import fresh_postgres_store
from tests.interrupted import DiesMidInsert, SimulatedKillError
from tests.poison import store_unprojectable

STAND_IN = Path(__file__).parent.parent.parent / "shared" / "tools" / "chdb_http_server.py"


@pytest.fixture
def server_url(tmp_path: Path) -> Iterator[str]:
    if not STAND_IN.exists():
        pytest.skip(f"the ClickHouse server stand-in is not at {STAND_IN}")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, str(STAND_IN), "--port", str(port), "--path", str(tmp_path / "ch")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            assert server.poll() is None, server.stderr.read() if server.stderr else ""
            assert time.monotonic() < deadline, "the stand-in did not start"
            time.sleep(0.1)
        yield f"http://default:@127.0.0.1:{port}/auditcore"
    finally:
        server.terminate()
        server.wait(timeout=30)


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
