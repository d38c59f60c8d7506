"""Followers and outages: `auditcore project --follow` (a separate worker, as on a server) keeps
going while the ClickHouse server is stopped mid-catch-up and finishes exactly once when it
returns; a read model nobody moves on shows as ``stalled`` in ``/readyz``."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from contextlib import contextmanager, suppress
from dataclasses import replace
from pathlib import Path

import httpx

from auditcore import AuditCore, Settings
from auditcore.api import ApiConfig
from auditcore.clickhouse.connection import ClickHouseTarget, connect
from auditcore.domain import Incident
from tests.apiserver import eventually
from tests.cli_run import AUDITCORE
from tests.clickhouse_server import ClickHouseStandIn
from tests.conftest import fresh_postgres_store
from tests.test_api import deploy

COMMENTS = 60_000
INCIDENTS = 500


def _count(url: str, sql: str) -> int | None:
    """A number from the server, or None while it (or the table) is not there."""
    with suppress(Exception):
        client = connect(ClickHouseTarget(url))
        try:
            return int(client.command(sql))  # type: ignore[arg-type]
        finally:
            client.close()
    return None


def test_a_follower_survives_the_server_going_away_mid_catch_up(
    postgres_database: str, own_clickhouse_server: ClickHouseStandIn, tmp_path: Path
) -> None:
    server, store = own_clickhouse_server, fresh_postgres_store(postgres_database)
    url = server.url("outage")
    with AuditCore(Settings(store, url)) as audit:
        for start in range(0, COMMENTS, 10_000):
            audit.record_many(
                {"action": "incident.comment_added", "workspace_id": "acme",
                 "metadata": {"body": f"c{i}"}}
                for i in range(start, start + 10_000)
            )  # fmt: skip
        audit.save(
            *(Incident.open("acme", title=f"t{i}", severity="sev3", service="api")
              for i in range(INCIDENTS))
        )  # fmt: skip
    total = COMMENTS + INCIDENTS
    log = (tmp_path / "worker.log").open("w")
    worker = subprocess.Popen(
        [AUDITCORE, "project", "--follow"],
        env={**os.environ, "AUDITCORE_EVENT_STORE": store, "AUDITCORE_CLICKHOUSE": url},
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    try:
        # The first batch of the first read model is in: the catch-up has a long way to go.
        seen = eventually(lambda: _count(url, "SELECT count() FROM audit_events"), timeout=120)
        server.stop()
        assert 0 < seen < total
        time.sleep(3)  # the worker meets the outage: refused connections, for seconds
        assert worker.poll() is None, "the worker exited during the outage"
        server.start()

        with AuditCore(Settings(store, url)) as audit:

            def caught_up() -> bool:
                with suppress(Exception):
                    return {s.lag for s in audit.projections.status(audit.clickhouse)} == {0}
                return False

            eventually(caught_up, timeout=300)
            tables = audit.clickhouse
            rows = tables.query("SELECT count(), uniqExact(event_id) FROM audit_events")
            assert rows.result_rows == [(total, total)]
            assert tables.command("SELECT sum(events) FROM activity_hourly") == total
            assert tables.command("SELECT count() FROM incidents FINAL") == INCIDENTS
            assert audit.projections.dead_letters(audit.clickhouse) == []
        assert worker.poll() is None
    finally:
        worker.send_signal(signal.SIGTERM)
        code = worker.wait(timeout=60)
        log.close()
    stderr = (tmp_path / "worker.log").read_text()
    assert code == 0, stderr
    assert "retrying in" in stderr
    assert "Traceback" not in stderr


def test_a_read_model_nobody_moves_on_is_stalled_in_readyz(
    pg_settings: Settings,
) -> None:
    settings = replace(pg_settings, stall_after=1.0)
    # No processors in the API's process: on a server they run as separate workers.
    with contextmanager(deploy)(settings, ApiConfig(run_processors=False)) as api:
        audit = api.audit
        audit.record("incident.comment_added", workspace_id="acme", metadata={"body": "a"})
        audit.project()
        with api.client("admin") as client:  # /readyz's details need the admin scope
            time.sleep(1.5)  # longer than stall_after: caught up and idle is not stalled
            idle = client.get("/readyz")
            assert idle.status_code == 200, idle.json()
            audit.record("incident.comment_added", workspace_id="acme", metadata={"body": "b"})

            def not_ready() -> httpx.Response | None:
                response = client.get("/readyz")
                return response if response.status_code == 503 else None

            stalled = eventually(not_ready, timeout=30).json()
            audit.project()
            assert client.get("/readyz").status_code == 200
    by_name = {p["name"]: p for p in stalled["processors"]}
    assert by_name["audit_events"]["state"] == "stalled"
    assert by_name["audit_events"]["behind_seconds"] > 1.0
    assert by_name["audit_events"]["error"] is None  # nothing in this process knows why
    assert stalled["clickhouse"]["ok"]
    assert stalled["event_store"]["ok"]
