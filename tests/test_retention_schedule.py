"""Pruning beside writers, and retention on its own, on real PostgreSQL:

- the prune holds the events table only for one bounded batch: a writer blocked by a batch (seen
  in ``pg_locks``, blocked by the prune's backend) gets in as soon as that batch commits, before
  the next one starts;
- one retention runner at a time per store (an advisory lock another process holds makes a run
  report ``busy`` and do nothing; another store in the same database is not held up);
- a schedule with a tiny interval runs pass after pass, each pruning what aged since;
- ``serve`` runs retention on its own (and ``--no-retention`` does not).

No timings are asserted: every wait is bounded and only turns a hang into a failure."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import uuid4

import psycopg
import pytest

from auditcore import Settings
from auditcore.lifecycle.retention import Retention
from auditcore.lifecycle.runlock import runner_lock
from auditcore.lifecycle.schedule import RetentionSchedule
from tests.cli_run import AUDITCORE
from tests.conftest import fresh_postgres_store
from tests.integrity_support import Store, make_store
from tests.test_retention import ALICE, LATER, record, stored_rows

pytestmark = pytest.mark.store_only

BOUND = 60.0
"""Longest any wait here lasts (a failure, never a measurement)."""


@pytest.fixture
def store(pg_settings: Settings, tmp_path: Path) -> Store:
    made = make_store(pg_settings, tmp_path)
    with made.core() as audit:
        record(audit, "initech", 1)  # the store's first event (kept for good)
    return made


def _until(condition: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + BOUND
    while not (found := condition()):
        assert time.monotonic() < deadline, f"gave up waiting: {what}"
        time.sleep(0.05)
    return found


def _connect(store: Store) -> psycopg.Connection[Any]:
    database, _, schema = store.settings.event_store.partition("?schema=")
    connection = psycopg.connect(database, autocommit=True)
    connection.execute(f'SET search_path TO "{schema}"')
    return connection


def test_a_writer_gets_in_between_prune_batches(store: Store, tmp_path: Path) -> None:
    """Batch 2 of the prune is held mid-transaction (a row lock on one of its event-id rows);
    a writer then waits for the events table, blocked by the prune's backend. When batch 2
    commits, the writer's event is stored before batch 3 begins. A prune that held the lock
    across batches (one transaction) keeps the writer out until its end and fails here."""
    with store.core() as audit:
        retention = Retention(audit, tmp_path / "archives")
        retention.set_policy("acme", 30, actor=ALICE, source="cli")
        record(audit, "acme", 4)  # 4 x 3 events + the policy event: 5 batches of 3
        audit.integrity.sign_now()
        held = audit.integrity.log.leaves_of("acme", 4, 5)[0].event_id  # in batch 2 (3-5)
        events_table = audit.app.recorder.events_table_name  # type: ignore[attr-defined]
        ids_table = audit.app.recorder.event_ids_table_name  # type: ignore[attr-defined]
        watcher, locker = _connect(store), _connect(store)
        locker.autocommit = False
        locker.execute(
            f"SELECT 1 FROM {ids_table} WHERE workspace_id = 'acme' AND event_id = %s FOR UPDATE",
            (held,),
        )
        locker_pid = locker.info.backend_pid
        batches: list[int] = []
        writer_in_before_batch_3: list[bool] = []
        writer_done = threading.Event()

        def after_batch(count: int) -> None:
            batches.append(count)
            if len(batches) == 2:  # batch 2 has committed; batch 3 has not begun
                writer_in_before_batch_3.append(writer_done.wait(BOUND))

        writer = store.core()  # opened first: only its insert should meet the prune
        pruning = threading.Thread(
            target=lambda: retention.run(
                now=datetime.now(UTC) + LATER, batch_size=3, progress=after_batch
            )
        )
        pruning.start()
        prune_pid = _until(
            lambda: watcher.execute(
                "SELECT pid FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))",
                (locker_pid,),
            ).fetchone(),
            "the prune's batch 2 to wait for the row lock",
        )[0]
        assert batches == [3]  # batch 1 committed; batch 2 is open

        def write() -> None:
            writer.record(
                "incident.comment_added", workspace_id="globex", actor=ALICE,
                targets=[{"type": "incident", "id": str(uuid4())}],
                metadata={"body": "between batches"},
            )  # fmt: skip
            writer_done.set()

        writing = threading.Thread(target=write)
        writing.start()
        blocked = _until(
            lambda: watcher.execute(
                "SELECT l.pid FROM pg_locks l WHERE l.relation = %s::regclass "
                "AND l.mode = 'ExclusiveLock' AND NOT l.granted "
                "AND %s = ANY(pg_blocking_pids(l.pid))",
                (events_table, prune_pid),
            ).fetchone(),
            "the writer to wait for the events table behind the prune",
        )
        assert blocked
        assert not writer_done.is_set()
        locker.commit()  # batch 2 can finish
        pruning.join(BOUND)
        writing.join(BOUND)
        locker.close()
        watcher.close()
        writer.close()
        retention.close()
    assert not pruning.is_alive()
    assert writer_in_before_batch_3 == [True]
    assert batches == [3, 3, 3, 3, 1]
    assert [r[2] for r in stored_rows(store, "acme")] == ["auditcore.retention.pruned"]
    assert len(stored_rows(store, "globex")) == 1


def test_one_runner_at_a_time(store: Store, postgres_database: str, tmp_path: Path) -> None:
    with store.core() as audit:
        retention = Retention(audit, tmp_path / "archives")
        retention.set_policy("acme", 30, actor=ALICE, source="cli")
        record(audit, "acme", 2)
        audit.integrity.sign_now()
        before = stored_rows(store, "acme")
        other = Retention(audit)  # its own engine: another session, as another process
        with runner_lock(other.engine, 0) as had:
            assert had
            busy = retention.run(now=datetime.now(UTC) + LATER, wait=0)
            waited = retention.run(now=datetime.now(UTC) + LATER, wait=0.3)
            # Another store in the same database has a lock of its own.
            (tmp_path / "elsewhere").mkdir()
            elsewhere = make_store(
                Settings(fresh_postgres_store(postgres_database)), tmp_path / "elsewhere"
            )
            with elsewhere.core() as audit2:
                free = Retention(audit2, tmp_path / "archives2")
                assert not free.run(wait=0).busy
                free.close()
        assert (busy.busy, waited.busy) == (True, True)
        assert busy.workspaces == []
        assert stored_rows(store, "acme") == before
        done = retention.run(now=datetime.now(UTC) + LATER, wait=0)
        other.close()
        retention.close()
    assert not done.busy
    assert done.pruned == len(before)


def test_a_schedule_runs_pass_after_pass(store: Store, tmp_path: Path) -> None:
    """A tiny interval: each pass prunes what was recorded and signed since the last."""
    clock = datetime.now(UTC) + LATER
    with store.core() as audit:
        retention = Retention(audit, tmp_path / "archives", "parquet")
        retention.set_policy("acme", 30, actor=ALICE, source="cli")
        record(audit, "acme", 1)
        audit.integrity.sign_now()
        reports: list[int] = []
        errors: list[Exception] = []
        schedule = RetentionSchedule(
            retention, 0.05, batch_size=2,
            on_report=lambda r: reports.append(r.pruned), on_error=errors.append,
            clock=lambda: clock,
        )  # fmt: skip
        schedule.start()
        try:
            _until(lambda: sum(reports) >= 4, "the first pass")
            record(audit, "acme", 2)
            audit.integrity.sign_now()
            _until(lambda: sum(reports) >= 4 + 6 + 1, "a later pass")
            passes = schedule.passes
            _until(lambda: schedule.passes > passes + 1, "passes with nothing to do")
        finally:
            schedule.stop()
        assert not errors, errors
        archives = retention.archives("acme")
        verified = audit.integrity.verify(pruned=retention.pruned_ranges())
        retention.check_archives(verified, audit.integrity.trusted_keys())
        retention.close()
    assert verified.ok, [p.describe() for p in verified.problems]
    assert len(archives) >= 2
    assert all(a.location.endswith(".parquet") for a in archives)
    assert {r[2] for r in stored_rows(store, "acme")} == {"auditcore.retention.pruned"}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _serve(store: Store, clickhouse: str, *arguments: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [AUDITCORE, "serve", "--port", str(_free_port()), "--event-store",
         store.settings.event_store, "--clickhouse", clickhouse, *arguments],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("AUDITCORE_ARCHIVE")},
    )  # fmt: skip


def _stop(process: subprocess.Popen[str]) -> str:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=BOUND)
    return output


def test_serve_runs_retention_on_its_own(
    store: Store, tmp_path: Path, process_clickhouse_url: str
) -> None:
    """Events recorded 40 days ago (their stored time, before they were logged and signed)
    under a 30-day policy: ``serve`` archives and prunes them with no command given."""
    with store.core() as audit:
        Retention(audit).set_policy("acme", 30, actor=ALICE, source="cli")
        record(audit, "acme", 2)
        old = (datetime.now(UTC) - LATER).isoformat()
        for position in store.positions_of("acme"):
            store.edit_state(position, {"recorded_at": old})
        audit.integrity.sign_now()
    before = stored_rows(store, "acme")
    archives = tmp_path / "archives"
    off = _serve(store, process_clickhouse_url, "--no-retention", "--archive-dir", str(archives))
    try:
        _until(lambda: off.stdout and "retention: not run" in off.stdout.readline(), "serve up")
    finally:
        output = _stop(off)
    assert stored_rows(store, "acme") == before, output
    serving = _serve(
        store, process_clickhouse_url, "--retention-every", "1", "--archive-dir", str(archives)
    )
    lines: list[str] = []
    try:
        assert serving.stdout is not None
        _until(
            lambda: (
                (lines.append(serving.stdout.readline()) or True)  # type: ignore[union-attr]
                and sum("retention pass:" in line for line in lines) >= 2
            ),
            "two retention passes",
        )
    finally:
        lines.append(_stop(serving))
    output = "".join(lines)
    assert "retention pass: 7 events pruned, archived to" in output, output
    assert [r[2] for r in stored_rows(store, "acme")] == ["auditcore.retention.pruned"]
    with store.core() as audit:
        retention = Retention(audit)
        verified = audit.integrity.verify(pruned=retention.pruned_ranges())
        retention.check_archives(verified, audit.integrity.trusted_keys())
        retention.close()
    assert verified.ok, [p.describe() for p in verified.problems]
