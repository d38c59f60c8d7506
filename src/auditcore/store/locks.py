"""Follower locks: which one process writes a read model (or the integrity log) at a time.

Several processes may follow the same read model into the same ClickHouse tables (workers
started twice, one per host for availability). One of them holds the read model's lock and
writes; the others stand by, trying again every few seconds, and one of them takes over
when the holder dies. The lock lives beside the event store:

- **PostgreSQL**: a session advisory lock (``pg_try_advisory_lock``) on a connection of the
  lock's own, whose ``application_name`` says which process holds it (``holder()`` reads it
  back from ``pg_locks`` and ``pg_stat_activity``).
- **SQLite**: an exclusive ``flock`` on a file beside the store, holding the holder's pid and
  host.

Failure semantics:

- A holder that dies (kill -9, power loss, its host gone) releases the lock with it: the
  kernel drops the ``flock``; PostgreSQL ends the session when it sees the connection close,
  and at the latest when its TCP keepalive gives up on a host that vanished. Until then the
  others keep standing by: nothing is written twice, the read model only lags.
- A holder whose lock connection breaks (PostgreSQL restarted, the connection killed) has
  lost the lock. ``held()`` finds out (it asks that connection); a follower checks it before
  every batch, stops writing and stands by. A batch already under way when the connection
  broke is finished by that holder while another may take over: ClickHouse cannot check a
  lock, so that one batch may be written by both. The exactly-once redo
  (``auditcore.projection.tracking``) does not cover two writers at once; a lock
  connection lost in mid-batch is the case this leaves open.
- ``acquire()`` never blocks, and raises only when the store cannot be reached (the caller
  retries as it would any store error).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import socket
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, TextIO

import psycopg

from auditcore.store.settings import Settings

_NAME_LIMIT = 63  # PostgreSQL's application_name length


def lock_key(name: str) -> int:
    """A stable advisory-lock key (a signed 64-bit integer) for ``name``."""
    digest = hashlib.sha256(name.encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def this_process() -> str:
    """How a lock's holder is described to the others."""
    return f"pid {os.getpid()} on {socket.gethostname()}"


class FollowerLock(ABC):
    """Held by the one follower that writes; others wait for it. Not thread-safe: one
    thread uses one lock."""

    @abstractmethod
    def acquire(self) -> bool:
        """Take the lock if it is free (or already ours); True if this process holds it."""

    @abstractmethod
    def held(self) -> bool:
        """Whether this process still holds the lock it acquired."""

    @abstractmethod
    def holder(self) -> str | None:
        """Who holds the lock now, if anyone else does (``None`` when it is free)."""

    @abstractmethod
    def release(self) -> None:
        """Give the lock up (nothing happens if it was not held)."""

    @abstractmethod
    def close(self) -> None:
        """Give the lock up and release what it holds open."""


class PostgresLock(FollowerLock):
    """A session advisory lock on a connection of its own: released if the process dies."""

    def __init__(self, conninfo: str, key: int, purpose: str) -> None:
        self.conninfo, self.key = conninfo, key
        self.name = f"auditcore {purpose}: {this_process()}"[:_NAME_LIMIT]
        self.connection: psycopg.Connection[Any] | None = None
        self._held = False

    def _connect(self) -> psycopg.Connection[Any]:
        if self.connection is None or self.connection.closed:
            self.connection = psycopg.connect(
                self.conninfo, autocommit=True, application_name=self.name, connect_timeout=5
            )
            self._held = False
        return self.connection

    def acquire(self) -> bool:
        if self._held and self.held():
            return True
        try:
            row = self._connect().execute("SELECT pg_try_advisory_lock(%s)", (self.key,)).fetchone()
        except psycopg.Error:
            self.close()
            raise
        self._held = bool(row and row[0])
        return self._held

    def held(self) -> bool:
        if not self._held or self.connection is None or self.connection.closed:
            return False
        try:
            self.connection.execute("SELECT 1")
        except psycopg.Error:  # the session is gone, and its lock with it
            self.close()
            return False
        return True

    def holder(self) -> str | None:
        # A bigint key is held as (classid, objid) = its high and low 32 bits, objsubid 1.
        unsigned = self.key & 0xFFFFFFFFFFFFFFFF
        try:
            row = (
                self._connect()
                .execute(
                    "SELECT a.application_name, a.pid = pg_backend_pid() FROM pg_locks l "
                    "JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' "
                    "AND l.granted AND l.classid = %s AND l.objid = %s AND l.objsubid = 1",
                    (unsigned >> 32, unsigned & 0xFFFFFFFF),
                )
                .fetchone()
            )
        except psycopg.Error:
            self.close()
            raise
        if row is None or row[1]:
            return None
        return str(row[0]).partition(": ")[2] or "another process"

    def release(self) -> None:
        if not self._held or self.connection is None:
            return
        self._held = False
        try:
            self.connection.execute("SELECT pg_advisory_unlock(%s)", (self.key,))
        except psycopg.Error:  # the session is gone: so is the lock
            self.close()

    def close(self) -> None:
        self._held = False
        if self.connection is not None:
            self.connection.close()
            self.connection = None


class FileLock(FollowerLock):
    """An exclusive ``flock`` on a file: released if the process dies."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file: TextIO | None = None

    def acquire(self) -> bool:
        if self.file is not None:
            return True
        file = self.path.open("a+")
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.close()
            return False
        file.truncate(0)
        file.write(this_process())
        file.flush()
        self.file = file
        return True

    def held(self) -> bool:
        return self.file is not None

    def holder(self) -> str | None:
        if self.file is not None or not self.path.exists():
            return None
        with self.path.open("r") as probe:
            try:
                fcntl.flock(probe, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return probe.read().strip() or "another process"
        return None

    def release(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None

    def close(self) -> None:
        self.release()


def follower_lock(settings: Settings, name: str, purpose: str) -> FollowerLock:
    """The lock called ``name`` among the processes using ``settings``' event store:
    ``purpose`` says what its holder does (for people looking at who holds it)."""
    if settings.uses_postgres:
        key = lock_key(f"auditcore:{settings.postgres_schema}:{name}")
        return PostgresLock(settings.postgres_conninfo(), key, purpose)
    store = Path(settings.event_store)
    slug = "".join(c if c.isalnum() or c in "._-" else "_" for c in name)[:60]
    digest = hashlib.sha256(name.encode()).hexdigest()[:12]
    return FileLock(store.with_name(f"{store.name}.{slug}-{digest}.lock"))
