"""How a following processor learns that new events were committed.

PostgreSQL: LISTEN on the channel the library's recorder NOTIFYs on every insert.
SQLite: there is no notification, so wake up on a short poll interval.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod

import psycopg
from psycopg import sql

from auditcore.store.application import AuditApplication


class Wakeup(ABC):
    @abstractmethod
    def wait(self, timeout: float) -> None:
        """Return when new events may have been committed, or after ``timeout`` seconds."""

    def close(self) -> None:  # noqa: B027 - most wake-ups hold nothing
        """Release what the wake-up holds."""


class PollingWakeup(Wakeup):
    def __init__(self, interval: float, stop: threading.Event) -> None:
        self.interval = interval
        self.stop = stop

    def wait(self, timeout: float) -> None:
        self.stop.wait(min(timeout, self.interval))


class PostgresWakeup(Wakeup):
    def __init__(self, conninfo: str, channel: str, stop: threading.Event) -> None:
        self.stop = stop
        self.connection = psycopg.connect(conninfo, autocommit=True)
        self.connection.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))

    def wait(self, timeout: float) -> None:
        # Short slices, so a stop request is noticed promptly.
        deadline = time.monotonic() + timeout
        while not self.stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            # Extra notifications queued meanwhile only cause a cheap, empty extra read.
            for _ in self.connection.notifies(timeout=min(remaining, 0.5), stop_after=1):
                return

    def close(self) -> None:
        self.connection.close()


def wakeup_for(app: AuditApplication, stop: threading.Event, poll_interval: float) -> Wakeup:
    settings = app.settings
    if settings.uses_postgres:
        channel = getattr(app.recorder, "channel_name", "auditcore_events")
        return PostgresWakeup(settings.postgres_conninfo(), channel, stop)
    return PollingWakeup(poll_interval, stop)
