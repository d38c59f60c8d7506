"""The command line, run as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID, uuid4

import pytest

from auditcore import AuditCore, Settings
from tests.clickhouse_server import MISSING, STAND_IN, ClickHouseStandIn
from tests.conftest import fresh_postgres_store

# The console script installed beside this interpreter, whatever PATH says.
AUDITCORE = str(Path(sys.executable).with_name("auditcore"))


def run(
    *args: str,
    store: str,
    clickhouse: Path | str,
    check: bool = True,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the command as a user would, on the given stores.

    ``clickhouse``: a URL, or a path for an embedded engine of the subprocess's own (the test
    process may hold the shared one).
    """
    env = {
        **os.environ,
        "AUDITCORE_EVENT_STORE": store,
        "AUDITCORE_CLICKHOUSE": clickhouse
        if isinstance(clickhouse, str)
        else f"chdb://{clickhouse}",
        "COLUMNS": "200",
        **(env or {}),
    }
    done = subprocess.run(
        [AUDITCORE, *args], capture_output=True, text=True, env=env, timeout=120, check=False
    )
    if check:
        assert done.returncode == 0, done.stderr
    return done


def test_help_lists_the_commands(tmp_path: Path) -> None:
    out = run("--help", store=str(tmp_path / "e.sqlite"), clickhouse=tmp_path / "ch").stdout
    for command in ("demo", "record", "history", "get", "actions"):
        assert command in out


def test_demo_records_and_reads_back_a_realistic_story(tmp_path: Path) -> None:
    out = run("demo", store=str(tmp_path / "e.sqlite"), clickhouse=tmp_path / "ch").stdout

    assert "incident.severity_changed" in out
    assert "monitor.went_down" in out
    assert "already resolved; reopen it first" in out
    assert "it has been deleted" in out
    assert "Recorded 20 events" in out
    assert "Q1. What happened to incident 'Public API returning 503'?" in out
    assert "Q3. Activity per hour, by action" in out


def test_record_then_read_back_by_stream_and_by_id(
    store_settings: Settings, process_clickhouse_url: str
) -> None:
    store, clickhouse = store_settings.event_store, process_clickhouse_url
    recorded = run(
        "record",
        "incident.comment_added",
        "-w",
        "acme",
        "--actor",
        "user_1",
        "--actor-type",
        "user",
        "-t",
        "incident:inc_9:Disk full",
        "-m",
        '{"body": "hello"}',
        "--format",
        "json",
        store=store,
        clickhouse=clickhouse,
    )
    (event,) = json.loads(recorded.stdout)
    run("project", store=store, clickhouse=clickhouse)

    (history,) = json.loads(
        run(
            "history",
            event["stream_id"],
            "-w",
            "acme",
            "-f",
            "json",
            store=store,
            clickhouse=clickhouse,
        ).stdout
    )
    (by_id,) = json.loads(
        run("get", event["event_id"], "-w", "acme", store=store, clickhouse=clickhouse).stdout
    )

    assert history == by_id == event
    assert event["actor"] == {"id": "user_1", "type": "user", "name": None}
    assert event["targets"] == [{"type": "incident", "id": "inc_9", "name": "Disk full"}]
    assert event["metadata"] == {"body": "hello"}
    assert event["source"] == "cli"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["record", "incident.comment_added", "-w", "acme", "-m", "{body"], "not valid JSON"),
        (
            ["record", "incident.comment_added", "-w", "acme", "-m", '{"body": ""}'],
            "metadata.body: String should have at least 1 character",
        ),
        (
            ["record", "incident.comment_added", "-w", "acme", "-t", "nocolon"],
            "should be TYPE:ID or TYPE:ID:NAME",
        ),
        (["history", "not-a-uuid", "-w", "acme"], "Invalid value for 'stream_id'"),
        (
            ["history", "00000000-0000-0000-0000-000000000001", "-w", "acme"],
            "no stream 00000000-0000-0000-0000-000000000001 in workspace",
        ),
        (
            ["history", "--from-store", "00000000-0000-0000-0000-000000000001", "-w", "acme"],
            "no stream with id 00000000-0000-0000-0000-000000000001",
        ),
        (["query", "-w", "acme", "--since", "yesterday"], "is not a time: use ISO 8601"),
        (["query", "-w", "acme", "--cursor", "garbage"], "cursor: malformed cursor"),
        (["query", "-w", "acme", "--limit", "0"], "limit: must be between 1 and 1000"),
        (["query", "-w", "acme", "--since", "9999999999999w"], "is not a time: use ISO 8601"),
        (["query", "-w", "acme", "--until", "2026-02-30"], "is not a time: use ISO 8601"),
        (["query", "-w", "acme", "--since", "2d", "--until", "3d"], "since: must not be later"),
        (["stats", "-w", "acme", "--group-by", "colour"], "group_by: use one of action"),
    ],
)
def test_bad_input_is_a_clear_error_without_a_traceback(
    tmp_path: Path, args: list[str], message: str
) -> None:
    done = run(*args, store=str(tmp_path / "e.sqlite"), clickhouse=tmp_path / "ch", check=False)

    assert done.returncode == 2
    assert message in " ".join(done.stderr.split())
    assert "Traceback" not in done.stderr


def test_rotating_the_cursor_secret_retires_earlier_cursors(tmp_path: Path) -> None:
    store, clickhouse = str(tmp_path / "e.sqlite"), tmp_path / "ch"
    for n in range(3):
        run("record", "incident.comment_added", "-w", "acme", "-m", f'{{"body": "c{n}"}}',
            store=store, clickhouse=clickhouse)  # fmt: skip
    run("project", store=store, clickhouse=clickhouse)

    def first_page() -> str:
        done = run("query", "-w", "acme", "--limit", "1", "-f", "json",
                   store=store, clickhouse=clickhouse)  # fmt: skip
        cursor: str = json.loads(done.stdout)["next_cursor"]
        return cursor

    cursor = first_page()
    assert cursor == first_page()  # the secret is kept between processes
    run("query", "-w", "acme", "--cursor", cursor, store=store, clickhouse=clickhouse)
    rotated = run("keys", "rotate-secret", store=store, clickhouse=clickhouse)
    assert "Cursor secret rotated" in rotated.stdout
    old = run("query", "-w", "acme", "--cursor", cursor, store=store, clickhouse=clickhouse,
              check=False)  # fmt: skip
    assert old.returncode == 2
    assert "not issued by this server" in " ".join(old.stderr.split())
    fresh = first_page()
    assert fresh != cursor
    run("query", "-w", "acme", "--cursor", fresh, store=store, clickhouse=clickhouse)
    # An operator's key for /readyz's details.
    run("workspaces", "create", "ops", store=store, clickhouse=clickhouse)
    run("keys", "create", "-w", "ops", "--name", "monitoring", "--scope", "admin",
        store=store, clickhouse=clickhouse)  # fmt: skip
    assert "admin" in run("keys", "list", "-w", "ops", store=store, clickhouse=clickhouse).stdout


def test_import_dispatches_a_file_and_reports_bad_lines(tmp_path: Path) -> None:
    def line(n: int, body: str | None = None, event_id: UUID | None = None) -> str:
        fields: dict[str, object] = {
            "action": "incident.comment_added",
            "workspace_id": "acme",
            "metadata": {"body": body or f"n{n}"},
        }
        if event_id:
            fields["event_id"] = str(event_id)
        return json.dumps(fields)

    # Longer than the import keeps handles for, so failures are collected along the way too.
    count, early, late = 25_000, uuid4(), uuid4()
    lines = [line(n) for n in range(count)]
    lines[2], lines[3] = line(2, "first", early), line(3, "other", early)
    lines[100], lines[24_000] = line(100, "first", late), line(24_000, "other", late)
    lines.insert(7, '{"action": "incident.comment_added", "workspace_id": "acme"}')
    lines.insert(12, "[1, 2]")
    source = tmp_path / "events.jsonl"
    source.write_text("\n".join(lines))
    store = str(tmp_path / "e.sqlite")

    done = run("import", str(source), store=store, clickhouse=tmp_path / "ch", check=False)

    assert done.returncode == 2
    message = " ".join(done.stderr.split())
    skipped = [
        "line 4: event_id",
        "line 8: invalid event 'incident.comment_added'",
        "line 13: expected a JSON object, got list",
        "line 24003: event_id",
    ]
    assert [message.index(part) for part in skipped] == sorted(
        message.index(part) for part in skipped
    )
    assert "4 line(s) skipped" in message
    with AuditCore(Settings(store)) as audit:
        assert audit.app.recorder.max_notification_id() == count - 2


def test_workspaces_keys_export_and_report_from_the_shell(
    pg_settings: Settings, process_clickhouse_url: str, tmp_path: Path
) -> None:
    store, clickhouse = pg_settings.event_store, process_clickhouse_url
    run("workspaces", "create", "acme", "--name", "Acme Inc", store=store, clickhouse=clickhouse)
    again = run("workspaces", "create", "acme", store=store, clickhouse=clickhouse, check=False)
    assert again.returncode == 2
    assert "already exists" in again.stderr
    created = run(
        "keys", "create", "-w", "acme", "--name", "ci", "-s", "read", "-s", "write",
        store=store, clickhouse=clickhouse,
    ).stdout  # fmt: skip
    token = next(line for line in created.splitlines() if line.startswith("ack_"))
    listed = run("keys", "list", "-w", "acme", store=store, clickhouse=clickhouse).stdout
    assert "read, write" in listed
    assert "active" in listed
    _, key_hex, secret = token.split("_", 2)
    assert secret not in listed  # the secret is never shown again
    key_id = f"key_{key_hex}"
    run("keys", "revoke", key_id, store=store, clickhouse=clickhouse)
    assert "revoked" in run("keys", "list", store=store, clickhouse=clickhouse).stdout
    unknown = run("keys", "create", "-w", "nope", "--name", "x", store=store,
                  clickhouse=clickhouse, check=False)  # fmt: skip
    assert "auditcore workspaces create nope" in unknown.stderr

    out = tmp_path / "acme.csv"
    run("project", store=store, clickhouse=clickhouse)
    run("export", "-w", "acme", "-o", str(out), "--filter", "action_prefix=auditcore.",
        store=store, clickhouse=clickhouse)  # fmt: skip
    exported = out.read_text().splitlines()
    # The workspace and both key changes were audited, by whoever ran the commands.
    assert len(exported) == 1 + 3
    assert all(",user," in line and "(auditcore CLI)" in line for line in exported[1:])
    bad = run("export", "-w", "acme", "--filter", "colour=red", store=store,
              clickhouse=clickhouse, check=False)  # fmt: skip
    assert "cannot be filtered by 'colour'" in bad.stderr

    report = tmp_path / "report.html"
    run("report", "-w", "acme", "--since", "1h", "--out", str(report), store=store,
        clickhouse=clickhouse)  # fmt: skip
    html = report.read_text()
    assert "Audit report: acme" in html
    assert "auditcore.api_key.revoked" in html
    recorded = run("query", "-w", "acme", "--action-prefix", "auditcore.", "-f", "jsonl",
                   store=store, clickhouse=clickhouse).stdout  # fmt: skip
    actions = [json.loads(line)["action"] for line in recorded.splitlines()]
    assert "auditcore.export.created" in actions


NEW_YORK = "America/New_York"


@pytest.fixture
def new_york_clickhouse_url(clickhouse_engine: str, tmp_path: Path) -> Iterator[str]:
    """An empty ClickHouse whose own time zone is New York: an embedded engine for the
    subprocesses (chDB takes the process's ``TZ``), or a server started with
    ``--timezone America/New_York``."""
    if clickhouse_engine == "chdb":
        yield f"chdb://{tmp_path / 'clickhouse'}"
        return
    if not STAND_IN.exists():
        pytest.skip(MISSING)
    server = ClickHouseStandIn(tmp_path / "new-york", timezone=NEW_YORK)
    server.directory.mkdir()
    server.start()
    try:
        yield server.url("stats_tz")
    finally:
        server.stop()


def test_stats_buckets_are_utc_whatever_the_machine_time_zone(
    postgres_database: str, new_york_clickhouse_url: str
) -> None:
    """The CLI under ``TZ=America/New_York`` (UTC-5 in March), against a ClickHouse whose own
    time zone is New York too: an event at 23:30Z and one at 00:30Z the next day fall in two
    UTC days starting at 00:00Z (New York's day would hold both and start at 05:00Z; a bucket
    read back in local time and labelled UTC would start at 19:00Z the day before)."""
    store, clickhouse = fresh_postgres_store(postgres_database), new_york_clickhouse_url
    with AuditCore(Settings(store, clickhouse)) as audit:
        audit.record_many(
            {
                "action": "incident.comment_added",
                "workspace_id": "acme",
                "metadata": {"body": "late"},
                "occurred_at": at,
            }
            for at in (
                datetime(2024, 3, 5, 23, 30, 15, tzinfo=UTC),
                datetime(2024, 3, 6, 0, 30, 15, tzinfo=UTC),
            )
        )  # recorded only: the read side is the subprocesses'
    new_york = {"TZ": NEW_YORK}
    run("project", store=store, clickhouse=clickhouse, env=new_york)
    starts = {
        "minute": ["2024-03-05T23:30:00", "2024-03-06T00:30:00"],
        "hour": ["2024-03-05T23:00:00", "2024-03-06T00:00:00"],
        "day": ["2024-03-05T00:00:00", "2024-03-06T00:00:00"],
    }
    for interval, buckets in starts.items():
        done = run(
            "stats", "-w", "acme", "--interval", interval, "-f", "json",
            "--since", "2024-03-04T00:00:00Z", "--until", "2024-03-08T00:00:00Z",
            store=store, clickhouse=clickhouse, env=new_york,
        )  # fmt: skip
        assert json.loads(done.stdout)["buckets"] == [
            {"bucket": f"{start}+00:00", "key": "incident.comment_added", "events": 1}
            for start in buckets
        ], interval


def test_serve_answers_and_decides_itself_whom_to_believe(tmp_path: Path) -> None:
    """`auditcore serve` as started from a shell: health, an authenticated write, and the
    client address never taken from X-Forwarded-For sent by an untrusted peer (uvicorn's
    own proxy handling would believe 127.0.0.1)."""
    import socket  # noqa: PLC0415
    import time  # noqa: PLC0415

    import httpx  # noqa: PLC0415

    store, clickhouse = str(tmp_path / "e.sqlite"), tmp_path / "ch"
    run("workspaces", "create", "acme", store=store, clickhouse=clickhouse)
    created = run("keys", "create", "-w", "acme", "--name", "w", "-s", "write",
                  store=store, clickhouse=clickhouse).stdout  # fmt: skip
    token = next(line for line in created.splitlines() if line.startswith("ack_"))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        **os.environ,
        "AUDITCORE_EVENT_STORE": store,
        "AUDITCORE_CLICKHOUSE": f"chdb://{clickhouse}",
    }
    server = subprocess.Popen(
        [AUDITCORE, "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if client.get("/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert server.poll() is None, server.stdout.read() if server.stdout else ""
                assert time.monotonic() < deadline, "auditcore serve did not come up"
                time.sleep(0.2)
            response = client.post(
                "/v1/events",
                json={"action": "monitor.paused", "metadata": {"reason": "x"}},
                headers={"Authorization": f"Bearer {token}", "X-Forwarded-For": "6.6.6.6"},
            )
        assert response.status_code == 201, response.text
        assert response.json()["items"][0]["context"]["ip"] == "127.0.0.1"
    finally:
        server.terminate()
        server.wait(timeout=30)
