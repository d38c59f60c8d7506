"""Processors following the store live, side by side, and the DDL they run."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from auditcore import AuditCore, Settings
from auditcore.clickhouse.ddl import Ddl
from auditcore.projection.runner import ProjectionRunner
from auditcore.readmodel.model import Column, EventTable, Table
from auditcore.readmodel.queries import EventQuery
from auditcore.readmodel.registry import ReadModelRegistry


def wait_until(condition: object, timeout: float = 10.0) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if condition():  # type: ignore[operator]
            return time.monotonic() - started
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


BROKEN = EventTable(
    name="broken",
    description="A read model whose projection always fails.",
    table=Table(
        columns=(
            Column("position", "UInt64", expr="_position + throwIf(1, 'cannot project this')"),
        ),
        engine="MergeTree",
        order_by=("position",),
    ),
)


def test_following_processors_pick_up_new_events_live(store_settings: Settings) -> None:
    with AuditCore(store_settings) as audit:
        stop = threading.Event()
        threads = audit.projections.follow(stop)
        try:
            reader = audit.reader("acme")
            for n in range(3):
                event = audit.record(
                    "incident.comment_added", workspace_id="acme", metadata={"body": f"live {n}"}
                )
                latency = wait_until(
                    lambda e=event: reader.events(EventQuery(limit=1)).items == [e]
                )
                assert latency < 5
            wait_until(lambda: all(s.lag == 0 for s in audit.projections.status(audit.clickhouse)))
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=10)
        assert not any(thread.is_alive() for thread in threads)


def test_a_failing_read_model_does_not_stop_the_others(pg_settings: Settings) -> None:
    with AuditCore(pg_settings) as audit:
        models = ReadModelRegistry([audit.read_models.get("audit_events"), BROKEN])
        runner = ProjectionRunner(audit.app, pg_settings.clickhouse_target, models)
        stop = threading.Event()
        threads = runner.follow(stop, retry_delay=0.05)
        try:
            event = audit.record(
                "incident.comment_added", workspace_id="acme", metadata={"body": "still flowing"}
            )
            reader = audit.reader("acme")
            wait_until(lambda: reader.events(EventQuery()).items == [event])
            wait_until(lambda: any(s.last_error for s in runner.status(audit.clickhouse)))
            # The position is recorded just after the rows: an instant after they show.
            wait_until(lambda: runner.status(audit.clickhouse)[0].lag == 0)
            statuses = {s.name: s for s in runner.status(audit.clickhouse)}
            assert statuses["audit_events"].lag == 0
            assert statuses["audit_events"].last_error is None
            assert "cannot project this" in (statuses["broken"].last_error or "")
            assert statuses["broken"].lag == 1
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=10)


def test_status_reports_position_head_and_lag(pg_settings: Settings) -> None:
    with AuditCore(pg_settings) as audit:
        for n in range(5):
            audit.record("incident.comment_added", workspace_id="acme", metadata={"body": str(n)})
        audit.migrate()
        assert {s.lag for s in audit.projections.status(audit.clickhouse)} == {5}
        assert audit.project() == {
            "activity_hourly": 5,
            "audit_events": 5,
            "incidents": 5,
            "monitors": 5,
        }
        statuses = audit.projections.status(audit.clickhouse)
        assert {(s.position, s.head, s.lag) for s in statuses} == {(5, 5, 0)}
        assert audit.project() == dict.fromkeys(
            ["activity_hourly", "audit_events", "incidents", "monitors"], 0
        )


def test_a_read_model_from_another_event_store_is_refused(
    pg_settings: Settings, tmp_path: Path
) -> None:
    with AuditCore(pg_settings) as audit:
        audit.record("incident.comment_added", workspace_id="acme", metadata={"body": "a"})
        audit.project()
    other = Settings(str(tmp_path / "other.sqlite"), pg_settings.clickhouse)
    with AuditCore(other) as audit:
        audit.record("incident.comment_added", workspace_id="acme", metadata={"body": "b"})
        with pytest.raises(Exception, match="was built from another event store"):
            audit.project()


def test_cluster_ddl_uses_on_cluster_and_replicated_engines() -> None:
    table = Table(
        columns=(
            Column("id", "UUID"),
            Column("version", "UInt32"),
            Column("updated_at", "DateTime"),
        ),
        engine="ReplacingMergeTree(version)",
        order_by=("id",),
        partition_by="tuple()",
        ttl="toDateTime(updated_at) + INTERVAL 400 DAY DELETE",
    )
    sql = Ddl("db", "prod").create_table("things_v1", table)
    assert "\nTTL toDateTime(updated_at) + INTERVAL 400 DAY DELETE" in sql
    assert "CREATE TABLE IF NOT EXISTS `db`.`things_v1` ON CLUSTER `prod`" in sql
    # The table's own UUID in the path: each table version (a rebuild's __next too) has its own.
    assert (
        "ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{uuid}/{shard}', "
        "'{replica}', version)"
    ) in sql
    assert "ENGINE = MergeTree\n" in Ddl("db").create_table(
        "t", Table((Column("a", "UInt8"),), "MergeTree", ("a",))
    )


def test_a_chdb_path_held_by_another_process_is_explained(tmp_path: Path) -> None:
    path = tmp_path / "held"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import clickhouse_connect, time; "
            f"c = clickhouse_connect.get_client(dsn='chdb://{path}'); print('ready', flush=True); "
            "time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "ready"
        done = subprocess.run(
            [
                str(Path(sys.executable).with_name("auditcore")),
                "projections",
                "status",
                "--event-store",
                str(tmp_path / "e.sqlite"),
                "--clickhouse",
                f"chdb://{path}",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        holder.kill()
        holder.wait()
    assert done.returncode == 2
    message = " ".join(done.stderr.split())
    assert "another process is using it" in message
    assert "Only one process at a time can open a chDB directory" in message


def test_rows_of_unknown_origin_are_refused_until_rebuilt(pg_settings: Settings) -> None:
    """A table whose rows no tracking describes (built by an older version, or its tracking
    deleted) is never written into blindly: that could double its rows."""
    from auditcore.errors import UntrackedRowsError  # noqa: PLC0415
    from auditcore.projection.processor import Processor  # noqa: PLC0415

    with AuditCore(pg_settings) as audit:
        audit.record("incident.comment_added", workspace_id="acme", metadata={"body": "a"})
        audit.project()
        audit.clickhouse.command("TRUNCATE TABLE auditcore_tracking")
        audit.record("incident.comment_added", workspace_id="acme", metadata={"body": "b"})
        model = audit.read_models.get("audit_events")
        processor = Processor(
            model, audit.app, pg_settings.clickhouse_target, client=audit.clickhouse
        )
        with pytest.raises(UntrackedRowsError, match="projections rebuild audit_events"):
            processor.step()
        audit.rebuild("audit_events")
        assert audit.reader("acme").count(EventQuery()) == 2
