"""The read side from the shell: catch-up that names what failed, status, dead letters, the
next-page cursor, and filtering by when events were recorded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from typing import Any

from auditcore import AuditCore, Settings
from tests.cli_run import AUDITCORE
from tests.poison import mend, store_unprojectable


def run(
    *args: str, settings: Settings, clickhouse: str, columns: str | None = "200"
) -> subprocess.CompletedProcess[str]:
    """The command as a user runs it (stdout and stderr piped, not terminals)."""
    env = {
        **os.environ,
        "AUDITCORE_EVENT_STORE": settings.event_store,
        "AUDITCORE_CLICKHOUSE": clickhouse,
    }
    env.pop("COLUMNS", None)
    if columns:
        env["COLUMNS"] = columns
    return subprocess.run(
        [AUDITCORE, *args], capture_output=True, text=True, env=env, timeout=180, check=False
    )


def ok(done: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert done.returncode == 0, done.stderr
    return done


def status(settings: Settings, clickhouse: str) -> dict[str, dict[str, Any]]:
    out = ok(run("projections", "status", "-f", "json", settings=settings, clickhouse=clickhouse))
    return {s["name"]: s for s in json.loads(out.stdout)}


def test_dead_letters_from_the_shell(pg_settings: Settings, process_clickhouse_url: str) -> None:
    ch = process_clickhouse_url
    with AuditCore(pg_settings) as audit:
        audit.record_many(
            {"action": "incident.comment_added", "workspace_id": "acme", "metadata": {"body": "b"}}
            for _ in range(30)
        )
        poison = store_unprojectable(audit, "acme")
    assert (
        "Caught up: 31 new events projected into each of 4 read models."
        in ok(run("project", settings=pg_settings, clickhouse=ch)).stdout
    )
    states = status(pg_settings, ch)
    assert (states["audit_events"]["state"], states["audit_events"]["dead_letters"]) == (
        "degraded",
        1,
    )
    assert states["audit_events"]["lag"] == 0
    table = ok(run("projections", "status", settings=pg_settings, clickhouse=ch)).stdout
    assert "degraded" in table
    assert "events parked: auditcore projections dead-letters" in table

    listed = json.loads(
        ok(
            run("projections", "dead-letters", "-f", "json", settings=pg_settings, clickhouse=ch)
        ).stdout
    )
    assert [(x["model"], x["event_id"], x["status"]) for x in listed] == [
        ("activity_hourly", poison, "parked"),
        ("audit_events", poison, "parked"),
    ]
    shown = ok(run("projections", "dead-letters", settings=pg_settings, clickhouse=ch)).stdout
    assert poison in shown
    assert "outside 1900-01-01..2299-12-31" in listed[0]["error"]

    both = run(
        "projections", "dead-letters", "--retry", "--skip", settings=pg_settings, clickhouse=ch
    )
    assert both.returncode == 2
    assert "give --retry or --skip, not both" in both.stderr

    still = run("projections", "dead-letters", "--retry", settings=pg_settings, clickhouse=ch)
    assert still.returncode == 1  # nothing mended yet: still refused
    assert "0 are in now, 2 still refused" in still.stdout

    with AuditCore(pg_settings) as audit:
        mend(audit, poison)
    retried = ok(run("projections", "dead-letters", "--retry", settings=pg_settings, clickhouse=ch))
    assert "2 are in now, 0 still refused" in retried.stdout
    got = ok(run("get", poison, "-w", "acme", settings=pg_settings, clickhouse=ch))
    assert json.loads(got.stdout)[0]["event_id"] == poison

    with AuditCore(pg_settings) as audit:
        second = store_unprojectable(audit, "acme", occurred_at="2300-01-01T00:00:00Z")
    ok(run("project", settings=pg_settings, clickhouse=ch))
    skipped = ok(
        run(
            "projections",
            "dead-letters",
            "--skip",
            "-m",
            "audit_events",
            settings=pg_settings,
            clickhouse=ch,
        )
    )
    assert "Skipped 1 parked events" in skipped.stdout
    states = status(pg_settings, ch)
    assert states["audit_events"]["state"] == "ok"
    assert states["activity_hourly"]["dead_letters"] == 1
    every = json.loads(
        ok(
            run(
                "projections",
                "dead-letters",
                "--status",
                "all",
                "-f",
                "json",
                settings=pg_settings,
                clickhouse=ch,
            )
        ).stdout
    )
    assert {(x["model"], x["event_id"], x["status"]) for x in every} == {
        ("activity_hourly", poison, "retried"),
        ("audit_events", poison, "retried"),
        ("activity_hourly", second, "parked"),
        ("audit_events", second, "skipped"),
    }


def test_a_failing_read_model_is_named_and_the_others_catch_up(
    pg_settings: Settings, process_clickhouse_url: str
) -> None:
    ch = process_clickhouse_url
    ok(run("migrate", settings=pg_settings, clickhouse=ch))
    # Break one read model's table behind its back (an embedded engine: in a subprocess, as
    # this process may hold another engine path).
    sabotage = (
        "import sys; from auditcore.clickhouse.connection import ClickHouseTarget, connect; "
        "connect(ClickHouseTarget(sys.argv[1])).command('ALTER TABLE monitors DROP COLUMN kind')"
    )
    subprocess.run([sys.executable, "-c", sabotage, ch], check=True, timeout=120)
    from auditcore import Monitor  # noqa: PLC0415

    with AuditCore(pg_settings) as audit:
        audit.save(Monitor.create("acme", name="api", url="https://example.com/"))
        audit.record("incident.comment_added", workspace_id="acme", metadata={"body": "b"})
    done = run("project", settings=pg_settings, clickhouse=ch)
    assert done.returncode == 1
    assert "Caught up: 2 new events projected into each of 3 read models." in done.stdout
    assert "✗ monitors failed:" in done.stderr
    assert "1 of 4 read models failed (the others are up to date)" in done.stderr
    assert "Traceback" not in done.stderr
    states = status(pg_settings, ch)
    assert {name: s["lag"] for name, s in states.items()} == {
        "activity_hourly": 0,
        "audit_events": 0,
        "incidents": 0,
        "monitors": 2,
    }


def test_the_next_page_cursor_is_one_line_and_recorded_time_filters(
    pg_settings: Settings, process_clickhouse_url: str
) -> None:
    ch = process_clickhouse_url
    with AuditCore(pg_settings) as audit:
        audit.record_many(
            {
                "action": "incident.comment_added",
                "workspace_id": "acme",
                "metadata": {"body": f"note {n}"},
                "occurred_at": datetime(1950 + n, 1, 1, tzinfo=UTC),
            }
            for n in range(8)
        )
    ok(run("project", settings=pg_settings, clickhouse=ch))
    # No COLUMNS and stderr a pipe: rich would wrap at 80 columns.
    first = ok(
        run(
            "query", "-w", "acme", "--limit", "3", settings=pg_settings, clickhouse=ch, columns=None
        )
    )
    (line,) = [x for x in first.stderr.splitlines() if x.strip()]
    assert line.startswith("next page: --cursor ")
    cursor = line.removeprefix("next page: --cursor ")
    second = ok(
        run(
            "query",
            "-w",
            "acme",
            "--limit",
            "3",
            "--cursor",
            cursor,
            "-f",
            "json",
            settings=pg_settings,
            clickhouse=ch,
        )
    )
    years = [item["occurred_at"][:4] for item in json.loads(second.stdout)["items"]]
    assert years == ["1954", "1953", "1952"]

    # Backdated: occurred in the 1950s, recorded today.
    def count(*args: str) -> int:
        out = run(
            "query",
            "-w",
            "acme",
            "--limit",
            "100",
            "-f",
            "json",
            *args,
            settings=pg_settings,
            clickhouse=ch,
        )
        return len(json.loads(ok(out).stdout)["items"])

    assert count("--recorded-since", "1h") == 8
    assert count("--recorded-until", "2000-01-01") == 0
    assert count("--until", "1953-01-01", "--recorded-since", "1d") == 3
    bad = run(
        "query",
        "-w",
        "acme",
        "--recorded-since",
        "1h",
        "--recorded-until",
        "2h",
        settings=pg_settings,
        clickhouse=ch,
    )
    assert bad.returncode == 2
    assert "recorded_since: must not be later than recorded_until" in bad.stderr
