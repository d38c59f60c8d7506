"""A rebuild killed at any instant leaves the live table alone and resumes, on embedded chDB
and on a ClickHouse server (followers killed at any instant: ``test_exactly_once``)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from auditcore import AuditCore, Incident, Settings

WORKER = [sys.executable, "-m", "tests.projection_worker"]


def worker(command: str, settings: Settings) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*WORKER, command, settings.event_store, settings.clickhouse],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parent.parent,
    )


def seed(settings: Settings, count: int) -> None:
    """``count`` incidents with 0 to 6 comments each, saved 250 at a time."""
    incidents = []
    with AuditCore(settings) as audit:
        for n in range(count):
            incident = Incident.open("acme", title=f"incident {n}", severity="sev3", service="api")
            for c in range(n % 7):
                incident.comment(f"comment {c}")
            incidents.append(incident)
        for start in range(0, len(incidents), 250):
            audit.save(*incidents[start : start + 250])


def verify(settings: Settings) -> dict[str, int | None]:
    process = worker("verify", settings)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    counts: dict[str, int | None] = json.loads(out)
    return counts


def test_a_sigkilled_rebuild_leaves_the_live_table_and_resumes(
    postgres_database: str, process_clickhouse_url: str, clickhouse_engine: str
) -> None:
    from tests.conftest import fresh_postgres_store  # noqa: PLC0415

    settings = Settings(fresh_postgres_store(postgres_database), process_clickhouse_url)
    # On the server each batch takes a few HTTP round trips: fewer events keep the catch-up
    # short, and a rebuild of them still takes seconds, so the kills land mid-way.
    seed(settings, 1500 if clickhouse_engine == "chdb" else 250)
    assert worker("project", settings).wait(timeout=300) == 0
    live = verify(settings)
    assert live["rows"] == live["store"]

    for delay in (0.3, 0.6):
        process = worker("rebuild", settings)
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "rebuilding"
        time.sleep(delay)
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        during = verify(settings)
        assert during["rows"] == live["rows"], "the live table changed under a killed rebuild"
    assert during["next_rows"], "the rebuild was not killed mid-way: give it more work"

    finish = worker("rebuild", settings)
    out, err = finish.communicate(timeout=300)
    assert finish.returncode == 0, err
    assert json.loads(out.strip().splitlines()[-1])["resumed_from"] > 0
    after = verify(settings)
    assert after["rows"] == after["distinct"] == live["store"]
    assert after["next_rows"] is None
