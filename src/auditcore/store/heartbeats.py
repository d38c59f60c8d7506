"""Dispatchers' reports: every process that dispatches publishes its dispatcher's counters to
the control database every few seconds (and once more when it closes), so ``auditcore status``
can show every writer at once — queue depth, batches, latencies, failures — and which ones
have gone quiet. (The dispatcher makes sure a report that cannot be stored never holds up or
fails a write.)
"""

from __future__ import annotations

import os
import secrets
import socket
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Engine,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    delete,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite

from auditcore.store.control import UtcDateTime, control_engine, create_tables
from auditcore.store.dispatcher import DispatcherStats
from auditcore.store.settings import Settings

_COUNTERS = [field.name for field in fields(DispatcherStats)]

metadata = MetaData()
dispatchers = Table(
    "auditcore_dispatchers",
    metadata,
    Column("process", String(200), primary_key=True),
    Column("host", String(200), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("started_at", UtcDateTime, nullable=False),
    Column("reported_at", UtcDateTime, nullable=False),
    Column("report_every", Float, nullable=False),
    Column("running", Boolean, nullable=False),
    *(
        Column(name, Float if name.startswith("latency") else BigInteger, nullable=False)
        for name in _COUNTERS
    ),
)


@dataclass(frozen=True)
class DispatcherReport:
    """What one process's dispatcher last reported."""

    process: str
    host: str
    pid: int
    started_at: datetime
    reported_at: datetime
    report_every: float
    running: bool
    stats: DispatcherStats

    def silent_for(self, now: datetime) -> timedelta | None:
        """How long a running dispatcher has missed its reports (None if it has not): its
        process may have died without closing."""
        overdue = now - self.reported_at
        if self.running and overdue > timedelta(seconds=3 * self.report_every):
            return overdue
        return None


class Heartbeats:
    """Publishes this process's dispatcher reports, and reads every process's.

    Reports older than ``forget_after`` are deleted when a process first publishes.
    """

    def __init__(self, settings: Settings, *, forget_after: timedelta = timedelta(days=1)):
        self._settings = settings
        self._forget_after = forget_after
        self._engine: Engine | None = None
        self.host, self.pid = socket.gethostname(), os.getpid()
        self.process = f"{self.host}:{self.pid}:{secrets.token_hex(3)}"
        self.started_at = datetime.now(UTC)

    def publish(self, stats: DispatcherStats, report_every: float, *, running: bool) -> None:
        """Store this process's report (replacing its previous one)."""
        first = self._engine is None
        engine = self._opened()
        now = datetime.now(UTC)
        row = {
            "process": self.process,
            "host": self.host,
            "pid": self.pid,
            "started_at": self.started_at,
            "reported_at": now,
            "report_every": report_every,
            "running": running,
            **{name: getattr(stats, name) for name in _COUNTERS},
        }
        dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
        upsert = dialect.insert(dispatchers).values(row)
        upsert = upsert.on_conflict_do_update(
            index_elements=["process"],
            set_={name: upsert.excluded[name] for name in row if name != "process"},
        )
        with engine.begin() as connection:
            if first:
                connection.execute(
                    delete(dispatchers).where(dispatchers.c.reported_at < now - self._forget_after)
                )
            connection.execute(upsert)

    def reports(self) -> list[DispatcherReport]:
        """Every process's last report, the most recent first."""
        with self._opened().connect() as connection:
            rows = connection.execute(
                select(dispatchers).order_by(dispatchers.c.reported_at.desc())
            ).mappings()
            return [
                DispatcherReport(
                    process=row["process"],
                    host=row["host"],
                    pid=row["pid"],
                    started_at=row["started_at"],
                    reported_at=row["reported_at"],
                    report_every=row["report_every"],
                    running=row["running"],
                    stats=DispatcherStats(**{name: row[name] for name in _COUNTERS}),
                )
                for row in rows
            ]

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()

    def _opened(self) -> Engine:
        if self._engine is None:
            engine = control_engine(self._settings)
            create_tables(engine, metadata)
            self._engine = engine
        return self._engine
