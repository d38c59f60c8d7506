"""Exactly-once effect under any crash: a follower SIGKILLed at random instants, again and
again, while a writer adds events whose times span decades, ends with every read model
equal to a fresh rebuild from the store (after OPTIMIZE FINAL): the same rows, and the same
answers from the read API; on embedded chDB and on a ClickHouse server.
``AUDITCORE_CRASH_KILLS`` sets how many kills (default 12; half as many on the server)."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from auditcore import AuditCore, DomainRuleError, Incident, Monitor, Settings
from tests.poison import store_unprojectable

WORKER = [sys.executable, "-m", "tests.projection_worker"]
ROOT = Path(__file__).parent.parent
KILLS = int(os.environ.get("AUDITCORE_CRASH_KILLS", "12"))
EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)


def worker(command: str, settings: Settings) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*WORKER, command, settings.event_store, settings.clickhouse],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )


class Writer(threading.Thread):
    """Keeps adding incidents, monitors and standalone events, in small transactions, with
    times anywhere from 1900 to now (batches then span many partitions), and now and then an
    event the read side refuses (parked as a dead letter)."""

    def __init__(self, settings: Settings, seed: int) -> None:
        super().__init__(daemon=True)
        self.settings = settings
        self.rng = random.Random(seed)
        self.stop = threading.Event()
        self.written = 0
        self.poisoned = 0
        self.failure: BaseException | None = None

    def when(self) -> datetime:
        span = (datetime.now(UTC) - timedelta(days=1) - EARLIEST).total_seconds()
        return EARLIEST + timedelta(seconds=self.rng.uniform(0, span))

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
                        for _ in range(self.rng.randrange(1, 40))
                    ]
                    self.written += len(audit.record_many(drafts))
                    if self.rng.random() < 0.05:  # now and then, one the read side refuses
                        store_unprojectable(audit, self.rng.choice(["acme", "globex"]))
                        self.poisoned += 1
                    time.sleep(self.rng.uniform(0, 0.05))
        except BaseException as error:
            self.failure = error

    def aggregates(self) -> list[Incident | Monitor]:
        rng, made = self.rng, []
        for n in range(rng.randrange(1, 8)):
            workspace = rng.choice(["acme", "globex", "initech"])
            aggregate: Incident | Monitor
            if n % 2:
                aggregate = Incident.open(
                    workspace, title=f"outage {rng.random()}", severity="sev2", service="api",
                    occurred_at=self.when(),
                )  # fmt: skip
                commands = INCIDENT_COMMANDS
            else:
                aggregate = Monitor.create(
                    workspace, name=f"probe {rng.random()}", url="https://example.com/",
                    occurred_at=self.when(),
                )  # fmt: skip
                commands = MONITOR_COMMANDS
            for _ in range(rng.randrange(0, 6)):
                name, arguments = rng.choice(commands)
                with contextlib.suppress(DomainRuleError):
                    getattr(aggregate, name)(*arguments, occurred_at=self.when())
            made.append(aggregate)
        return made


INCIDENT_COMMANDS: list[tuple[str, tuple[str, ...]]] = [
    ("acknowledge", ()),
    ("comment", ("looking",)),
    ("resolve", ("fixed",)),
    ("reopen", ("again",)),
    ("assign", ("user_ana",)),
]
MONITOR_COMMANDS: list[tuple[str, tuple[str, ...]]] = [
    ("went_down", ("eu-west", "timeout")),
    ("recovered", ("eu-west",)),
    ("pause", ()),
    ("resume", ()),
]


def test_sigkilled_followers_leave_every_read_model_equal_to_a_rebuild(
    postgres_database: str, process_clickhouse_url: str, clickhouse_engine: str
) -> None:
    from tests.conftest import fresh_postgres_store  # noqa: PLC0415

    settings = Settings(fresh_postgres_store(postgres_database), process_clickhouse_url)
    # On the server, half the kills: each round trip goes over HTTP (the suite's time).
    kills_wanted = KILLS if clickhouse_engine == "chdb" else max(1, KILLS // 2)
    rng = random.Random(13)
    writer = Writer(settings, seed=13)
    writer.start()
    kills = 0
    try:
        for _ in range(kills_wanted):
            process = worker("follow", settings)
            assert process.stdout is not None
            line = process.stdout.readline().strip()
            assert line == "projecting", process.stderr.read() if process.stderr else ""
            time.sleep(rng.uniform(0.05, 1.5))
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=30)
            kills += 1
    finally:
        writer.stop.set()
        writer.join(timeout=60)
    assert writer.failure is None, writer.failure
    assert kills == kills_wanted
    assert writer.written > 500, "the writer wrote too little for the kills to land mid-batch"

    compared = worker("compare", settings)
    out, err = compared.communicate(timeout=900)
    assert compared.returncode == 0, err
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    built, fresh = result["built"], result["fresh"]
    assert writer.poisoned > 0
    for name, status in built["status"].items():
        assert status == fresh["status"][name], name
        assert (status[0], status[2]) == (result["head"], None), name
    for name in ("audit_events", "activity_hourly"):
        assert built["status"][name][1] == writer.poisoned, name
    assert built["letters"] == fresh["letters"]
    for name, checksum in fresh["tables"].items():
        assert built["tables"][name] == checksum, f"{name} differs from a rebuild"
    assert set(built["answers"]) == {"acme", "globex", "initech"}
    for workspace, answers in fresh["answers"].items():
        for question, answer in answers.items():
            assert built["answers"][workspace][question] == answer, (workspace, question)
    total = sum(answers["count"] for answers in built["answers"].values())
    assert total == result["head"] - writer.poisoned


def test_an_interrupted_batch_is_finished_on_resume_and_status_says_so(
    pg_settings: Settings,
) -> None:
    """Deterministically, the instant the random kills aim at: one partition of a batch
    committed, the others not. Resuming (before any new event) finishes exactly that batch."""
    from auditcore.projection.processor import Processor  # noqa: PLC0415
    from tests.interrupted import DiesMidInsert, SimulatedKillError  # noqa: PLC0415

    with AuditCore(pg_settings) as audit:
        audit.record_many(
            {
                "action": "incident.comment_added",
                "workspace_id": "acme",
                "metadata": {"body": f"year {year}"},
                "occurred_at": datetime(year, 3, 1, tzinfo=UTC),
            }
            for year in range(1990, 2000)
        )
        audit.migrate()
        model, target = audit.read_models.get("audit_events"), audit.settings.clickhouse_target
        dying = DiesMidInsert(
            model, audit.app, target, client=audit.clickhouse,
            unwritten={str(year) for year in range(1991, 2000)},
        )  # fmt: skip
        with contextlib.suppress(SimulatedKillError):
            dying.step()
        (status,) = [s for s in audit.projections.status(audit.clickhouse) if s.name == model.name]
        assert (status.position, status.lag) == (0, 10)
        assert audit.clickhouse.query("SELECT count() FROM audit_events").result_rows == [(1,)]

        resumed = Processor(model, audit.app, target, client=audit.clickhouse)
        assert resumed.resume() == 10
        (status,) = [s for s in audit.projections.status(audit.clickhouse) if s.name == model.name]
        assert (status.position, status.lag) == (10, 0)
        rows = audit.clickhouse.query(
            "SELECT count(), uniqExact(event_id), uniqExact(toYear(occurred_at)) FROM audit_events"
        ).result_rows
        assert rows == [(10, 10, 10)]
