"""Processors killed at any instant resume with no gap and no duplicate."""

from __future__ import annotations

import json
import random
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


def test_sigkill_mid_batch_then_restart_ends_with_exactly_the_stores_events(
    postgres_database: str, tmp_path: Path
) -> None:
    from tests.conftest import fresh_postgres_store  # noqa: PLC0415

    settings = Settings(fresh_postgres_store(postgres_database), f"chdb://{tmp_path / 'ch'}")
    incidents = []
    with AuditCore(settings) as audit:
        for n in range(1500):
            incident = Incident.open("acme", title=f"incident {n}", severity="sev3", service="api")
            for c in range(n % 7):
                incident.comment(f"comment {c}")
            incidents.append(incident)
        for start in range(0, len(incidents), 250):
            audit.save(*incidents[start : start + 250])
    expected_comments = sum(n % 7 for n in range(1500))
    expected_events = 1500 + expected_comments

    rng = random.Random(3)
    kills = 0
    for _ in range(6):
        process = worker("project", settings)
        time.sleep(rng.uniform(1.0, 2.5))  # chDB starts in ~1 s; then batches are in flight
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.wait(timeout=30)
    assert kills >= 3, "the worker finished before it could be killed: give it more work"

    finish = worker("project", settings)
    assert finish.wait(timeout=300) == 0, finish.stderr.read() if finish.stderr else ""
    verify = worker("verify", settings)
    out, err = verify.communicate(timeout=120)
    assert verify.returncode == 0, err
    counts = json.loads(out)

    assert counts["store"] == expected_events
    assert counts["rows"] == counts["distinct"] == expected_events
    assert counts["hourly"] == expected_events
    assert counts["incident_rows"] == 1500
    assert counts["incident_comments"] == expected_comments
    assert counts["incident_versions"] == expected_events
