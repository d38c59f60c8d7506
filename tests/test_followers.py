"""Several followers of the same read models are coordinated: one process writes each read
model, the others stand by, and one of them takes over when the writer is SIGKILLed.

Two ``auditcore project --follow`` processes follow the same PostgreSQL store into the same
ClickHouse server (the chDB-backed stand-in: chDB itself lets one process open an engine) while
a writer keeps adding events. The first holds every read model; the second says so and stands
by; the first is killed at a random instant; the second takes over; at the end every read
model equals a fresh rebuild from the store (row checksums after OPTIMIZE FINAL, and the read
API's answers), so nothing was doubled or lost. Without the lock both would write every batch.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from rich.console import Console

from auditcore import AuditCore, Settings
from auditcore.cli import status_table
from auditcore.errors import FollowedElsewhereError
from auditcore.projection.coordination import THIS_PROCESS
from auditcore.projection.deadletters import DeadLetter
from auditcore.projection.log import LoggedEvent
from auditcore.projection.processor import Processor, Rows
from auditcore.projection.runner import ProcessorStatus
from auditcore.store.locks import FileLock, follower_lock
from tests.cli_run import AUDITCORE
from tests.cluster_proxy import STAND_IN, stand_in
from tests.conftest import fresh_postgres_store
from tests.interrupted import SimulatedKillError
from tests.poison import store_unprojectable
from tests.projection_worker import answers, table_checksum
from tests.test_exactly_once import Writer

ROOT = Path(__file__).parent.parent


@pytest.fixture
def server_url(tmp_path: Path) -> Iterator[str]:
    if not STAND_IN.exists():
        pytest.skip(f"the ClickHouse server stand-in is not at {STAND_IN}")
    with stand_in(tmp_path / "ch") as port:
        yield f"http://default:@127.0.0.1:{port}/auditcore"


def follower(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as output:
        return subprocess.Popen(
            [AUDITCORE, "project", "--follow", "--event-store", settings.event_store,
             "--clickhouse", settings.clickhouse],
            stdout=output, stderr=subprocess.STDOUT, cwd=ROOT,
        )  # fmt: skip


def wait_for(what: str, condition: Callable[[], bool], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.2)


def followed_by(audit: AuditCore) -> dict[str, str | None]:
    return {s.name: s.followed_by for s in audit.projections.status(audit.clickhouse)}


class SlowWriter(Writer):
    """The crash test's writer (incidents, monitors, standalone events from 1900 to now, now
    and then one the read side refuses) at a pace the server stand-in keeps up with."""

    def run(self) -> None:
        try:
            with AuditCore(self.settings) as audit:
                while not self.stop.is_set():
                    self.written += len(audit.save(*self.aggregates()))
                    drafts = [
                        {
                            "action": "incident.comment_added",
                            "workspace_id": self.rng.choice(["acme", "globex", "initech"]),
                            "metadata": {"body": f"note {self.rng.random()}"},
                            "occurred_at": self.when(),
                        }
                        for _ in range(self.rng.randrange(1, 10))
                    ]
                    self.written += len(audit.record_many(drafts))
                    if self.rng.random() < 0.05:
                        store_unprojectable(audit, self.rng.choice(["acme", "globex"]))
                        self.poisoned += 1
                    time.sleep(self.rng.uniform(0.05, 0.3))
        except BaseException as error:
            self.failure = error


def test_a_standby_follower_takes_over_from_a_sigkilled_one_and_nothing_is_doubled(
    postgres_database: str, server_url: str, tmp_path: Path
) -> None:
    settings = Settings(fresh_postgres_store(postgres_database), server_url)
    rng = random.Random(22)
    writer = SlowWriter(settings, seed=22)
    with AuditCore(settings) as audit:
        audit.migrate()
        first = follower(settings, tmp_path / "first.log")
        second: subprocess.Popen[bytes] | None = None
        try:
            mark = f"pid {first.pid} on "
            wait_for(
                "the first follower holds every read model",
                lambda: all((by or "").startswith(mark) for by in followed_by(audit).values()),
            )
            writer.start()
            second = follower(settings, tmp_path / "second.log")
            wait_for(
                "the second follower says it stands by",
                lambda: "left to it, standing by" in (tmp_path / "second.log").read_text(),
            )
            time.sleep(rng.uniform(6.0, 9.0))
            assert first.poll() is None, (tmp_path / "first.log").read_text()
            os.kill(first.pid, signal.SIGKILL)
            first.wait(timeout=30)
            mark = f"pid {second.pid} on "
            wait_for(
                "the second follower took every read model over",
                lambda: all((by or "").startswith(mark) for by in followed_by(audit).values()),
            )
            time.sleep(rng.uniform(1.0, 3.0))
        finally:
            writer.stop.set()
            writer.join(timeout=60)
        try:
            assert writer.failure is None, writer.failure
            head = audit.app.recorder.max_notification_id() or 0

            def caught_up() -> bool:
                statuses: list[ProcessorStatus] = audit.projections.status(audit.clickhouse)
                return all(s.position == head for s in statuses)

            wait_for("the second follower caught up", caught_up)
            assert second.poll() is None, (tmp_path / "second.log").read_text()
        finally:
            for process in (first, second):
                if process is not None and process.poll() is None:
                    process.terminate()
                    process.wait(timeout=60)
        built_tables = {m.name: table_checksum(audit, m) for m in audit.read_models}
        built_answers = answers(audit)
    assert writer.written > 100, "the writer wrote too little for the kill to land mid-batch"

    fresh_url = server_url.rsplit("/", 1)[0] + "/fresh"
    with AuditCore(Settings(settings.event_store, fresh_url)) as fresh:
        fresh.project()
        for model in fresh.read_models:
            assert built_tables[model.name] == table_checksum(fresh, model), model.name
        assert built_answers == answers(fresh)


def test_status_names_the_process_that_follows_a_read_model(tmp_path: Path) -> None:
    """On a SQLite store the lock is a file: held by another process, it is reported as
    theirs, a catch-up leaves the read model to them, and a rebuild's swap or a partial
    rebuild is refused; once they are gone, the rebuild resumes and swaps."""
    settings = Settings(str(tmp_path / "events.sqlite"), f"chdb://{tmp_path / 'ch'}")
    with AuditCore(settings) as audit:
        audit.record("incident.comment_added", workspace_id="acme", metadata={"body": "x"})
        audit.migrate()
        name = f"projection:{settings.clickhouse_target.identity}:audit_events"
        lock = follower_lock(settings, name, "projection audit_events")
        assert isinstance(lock, FileLock)
        code = (
            "import sys, time; from pathlib import Path; from auditcore.store.locks import "
            "FileLock; lock = FileLock(Path(sys.argv[1])); assert lock.acquire(); "
            "print('held', flush=True); time.sleep(600)"
        )
        holder = subprocess.Popen(
            [sys.executable, "-c", code, str(lock.path)], stdout=subprocess.PIPE, text=True
        )
        elsewhere = f"pid {holder.pid} on {socket.gethostname()}"
        try:
            assert holder.stdout is not None
            assert holder.stdout.readline().strip() == "held"
            by = followed_by(audit)
            assert by["audit_events"] == elsewhere
            assert by["incidents"] is None
            shown = Console(record=True, width=300)
            shown.print(status_table(audit.projections.status(audit.clickhouse)))
            assert f"another process follows it ({elsewhere})" in shown.export_text()
            done = audit.project()
            assert "audit_events" not in done
            assert done["incidents"] == 1
            assert audit.projections.elsewhere == {"audit_events": elsewhere}
            # Its table is theirs to write: a rebuild builds the next version, not the swap.
            with pytest.raises(FollowedElsewhereError, match=elsewhere):
                audit.rebuild("audit_events")
            with pytest.raises(FollowedElsewhereError):
                audit.rebuild_part("audit_events", workspace_id="acme")
            assert audit.clickhouse.query("SELECT count() FROM audit_events").result_rows == [(0,)]
        finally:
            holder.kill()
            holder.wait()
        assert audit.rebuild("audit_events").resumed_from == 1  # built then, swapped now
        assert audit.clickhouse.query("SELECT count() FROM audit_events").result_rows == [(1,)]
        assert audit.project()["audit_events"] == 0
        stop_following = threading.Event()
        threads = audit.projections.follow(stop_following)
        try:
            wait_for(
                "this process follows", lambda: followed_by(audit)["audit_events"] == THIS_PROCESS
            )
        finally:
            stop_following.set()
            for thread in threads:
                thread.join(timeout=10)


class DiesWhileItsInsertRuns(Processor):
    """Records its intent, has the server run its insert slowly, and dies meanwhile: as if
    SIGKILLed just after sending the insert, which the server then finishes on its own."""

    def rows(
        self, batch: Sequence[LoggedEvent], *, key: str = "", from_scratch: bool = False
    ) -> Rows:
        made = super().rows(batch, key=key, from_scratch=from_scratch)
        return replace(made, select=f"SELECT * FROM ({made.select}) WHERE sleep(2) = 0")

    def write(self, rows: Rows, *, key: str = "", skip: set[str] | None = None) -> list[DeadLetter]:
        super().write(rows, key=key, skip=skip)
        raise SimulatedKillError  # its position is never recorded


def test_a_redo_waits_for_the_dead_writers_insert_still_running_on_the_server(
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
            for year in range(2000, 2010)
        )
        audit.migrate()
        model, target = audit.read_models.get("audit_events"), settings.clickhouse_target
        dying = DiesWhileItsInsertRuns(model, audit.app, target)

        def run() -> None:
            with contextlib.suppress(SimulatedKillError):
                dying.step()

        thread = threading.Thread(target=run)
        thread.start()
        try:
            wait_for(
                "the intent is recorded",
                lambda: (
                    Processor(model, audit.app, target, client=audit.clickhouse)
                    ._tracking()
                    .unfinished
                ),
            )
            time.sleep(0.5)  # the insert is under way on the server (it takes 2 s)
            taking_over = Processor(model, audit.app, target, client=audit.clickhouse)
            assert taking_over.resume() == 10
        finally:
            thread.join(timeout=60)
            dying.close()
        rows = audit.clickhouse.query(
            "SELECT count(), uniqExact(event_id) FROM audit_events"
        ).result_rows
        assert rows == [(10, 10)]
