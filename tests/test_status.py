"""Every dispatching process reports its dispatcher to the control database, and
`auditcore status` shows them all; reporting never holds up or fails a write."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import psycopg
import pytest

from auditcore import AuditCore, Settings
from auditcore.store.dispatcher import DispatchSettings
from auditcore.store.heartbeats import DispatcherReport, Heartbeats
from tests.test_cli import run

pytestmark = pytest.mark.store_only  # the event store alone: one ClickHouse engine is enough

T = TypeVar("T")


def eventually(found: Callable[[], T | None], timeout: float = 10.0) -> T:
    deadline = time.monotonic() + timeout
    while (result := found()) is None:
        assert time.monotonic() < deadline, "not reported in time"
        time.sleep(0.02)
    return result


def report_of(heartbeats: Heartbeats, process: str) -> DispatcherReport | None:
    return next((r for r in heartbeats.reports() if r.process == process), None)


def dispatch_comments(audit: AuditCore, count: int) -> None:
    for n in range(count):
        audit.dispatch("incident.comment_added", workspace_id="acme", metadata={"body": f"{n}"})


def test_a_dispatcher_reports_while_running_and_when_stopped(
    store_settings: Settings, tmp_path: Path
) -> None:
    watcher = Heartbeats(store_settings)
    with AuditCore(store_settings, dispatch=DispatchSettings(report_every=0.05)) as audit:
        dispatch_comments(audit, 500)
        assert audit.flush(timeout=30)
        process = audit._heartbeats.process

        def reported_all_written() -> DispatcherReport | None:
            report = report_of(watcher, process)
            return report if report and report.stats.written == 500 else None

        running = eventually(reported_all_written)
        assert running.running
        assert running.pid == os.getpid()
        assert running.silent_for(datetime.now(UTC)) is None
    stopped = report_of(watcher, process)
    watcher.close()

    assert stopped is not None
    assert not stopped.running
    assert (stopped.stats.accepted, stopped.stats.written, stopped.stats.queued) == (500, 500, 0)
    assert stopped.stats.batches >= 1
    shown = run(
        "status", "--format", "json", store=store_settings.event_store, clickhouse=tmp_path / "ch"
    )
    status = json.loads(shown.stdout)
    assert status["head"] == 500
    (row,) = [d for d in status["dispatchers"] if d["process"] == process]
    assert (row["running"], row["written"], row["failed"]) == (False, 500, 0)
    table = run("status", store=store_settings.event_store, clickhouse=tmp_path / "ch").stdout
    assert f"pid {os.getpid()}" in table
    assert "stopped" in table


def test_a_dispatcher_that_stops_reporting_is_flagged_silent(
    pg_settings: Settings, tmp_path: Path
) -> None:
    with AuditCore(pg_settings, dispatch=DispatchSettings(report_every=0.05)) as audit:
        dispatch_comments(audit, 10)
        audit.flush()
        process = audit._heartbeats.process
        watcher = Heartbeats(pg_settings)
        eventually(lambda: report_of(watcher, process))
    # As if the process had died without closing: running, last heard from a minute ago.
    with psycopg.connect(pg_settings.postgres_conninfo(), autocommit=True) as conn:
        conn.execute(
            f'UPDATE "{pg_settings.postgres_schema}".auditcore_dispatchers '
            "SET running = true, reported_at = now() - interval '1 minute' WHERE process = %s",
            (process,),
        )
    report = report_of(watcher, process)
    watcher.close()

    assert report is not None
    silent = report.silent_for(datetime.now(UTC))
    assert silent is not None
    assert silent > timedelta(seconds=55)
    table = run("status", store=pg_settings.event_store, clickhouse=tmp_path / "ch").stdout
    # A minute and however long the command took to start.
    assert re.search(r"silent for (6\d|[7-9]\d|1[01]\d)s", table), table


def test_reports_that_cannot_be_stored_do_not_hold_up_writes(
    pg_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    with AuditCore(pg_settings, dispatch=DispatchSettings(report_every=0.01)) as audit:
        dispatch_comments(audit, 10)
        audit.flush()
        watcher = Heartbeats(pg_settings)
        eventually(lambda: report_of(watcher, audit._heartbeats.process))
        watcher.close()
        with psycopg.connect(pg_settings.postgres_conninfo(), autocommit=True) as conn:
            conn.execute(f'DROP TABLE "{pg_settings.postgres_schema}".auditcore_dispatchers')
        with caplog.at_level(logging.WARNING, logger="auditcore.store.dispatcher"):
            for _ in range(20):
                dispatch_comments(audit, 100)
                time.sleep(0.02)
            assert audit.flush(timeout=30)
        stats = audit.stats()

    assert stats is not None
    assert (stats.written, stats.failed) == (2_010, 0)
    warnings = [r for r in caplog.records if "cannot report the dispatcher's counters" in r.message]
    assert len(warnings) == 1, "one warning per outage, not one per report"


def test_only_a_process_that_dispatches_loads_the_reporter() -> None:
    # SQLAlchemy takes a fifth of a second to import: `import auditcore` must not pay for it.
    probe = "import sys, auditcore; print('sqlalchemy' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "False"
