"""One writer per read model: how followers, catch-ups, rebuilds and re-projections of a read
model take turns, within this process and with other processes.

A processor assumes it is its table's only writer (``auditcore.projection.tracking``), so:

- **Across processes**, each read model of a ClickHouse target has a follower lock
  (``auditcore.store.locks``: an advisory lock in the PostgreSQL store, a file lock beside a
  SQLite one). A follower holds it for as long as it runs; followers of the same read model
  in other processes stand by and one of them takes over when the holder dies. A one-shot
  writer (a catch-up, a rebuild's swap, a partial rebuild, a dead-letter retry) in a process
  whose own follower does not hold the lock takes it for its work; when another process
  holds it, a catch-up leaves that read model to the holder, and the others raise
  ``FollowedElsewhereError``.
- **Within the process**, a thread lock per read model: a follower holds it during each
  batch, the one-shot writers for their work.

Failure semantics: a follower checks that it still holds its lock before every batch and,
when it does not (its lock connection broke), stops writing and stands by again. What a lock
lost in mid-batch leaves open is stated in ``auditcore.store.locks``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from types import TracebackType

from auditcore.clickhouse.connection import ClickHouseTarget
from auditcore.errors import AuditcoreError, FollowedElsewhereError
from auditcore.store.locks import FollowerLock, follower_lock
from auditcore.store.settings import Settings

THIS_PROCESS = "this process"


class LockLostError(AuditcoreError):
    """This process's follower no longer holds its read model's lock."""


class Coordinator:
    """The locks of a set of read models on one ClickHouse target."""

    def __init__(self, settings: Settings, target: ClickHouseTarget, names: Iterable[str]) -> None:
        self.settings, self.target = settings, target
        self._guards = {name: threading.Lock() for name in names}
        self._holding: set[str] = set()
        """Read models whose lock one of this process's followers holds."""
        self._probes: dict[str, FollowerLock] = {}
        self._probing = threading.Lock()

    def guard(self, name: str) -> threading.Lock:
        """The thread lock of ``name`` in this process."""
        return self._guards[name]

    def lock(self, name: str) -> FollowerLock:
        """A new handle on ``name``'s lock (one per thread that takes it)."""
        return follower_lock(
            self.settings, f"projection:{self.target.identity}:{name}", f"projection {name}"
        )

    @contextmanager
    def following(self, name: str, lock: FollowerLock) -> Iterator[FollowerHold]:
        """While a follower holds ``lock`` (just acquired): this process follows ``name``.
        Yields the context the follower runs each batch in; releases the lock on the way out."""
        self._holding.add(name)
        try:
            yield FollowerHold(self, name, lock)
        finally:
            with self.guard(name):  # not in the middle of someone's batch
                self._holding.discard(name)
            lock.release()

    def holds(self, name: str) -> bool:
        """Whether one of this process's followers holds ``name``'s lock."""
        return name in self._holding

    def exclusive(self, name: str) -> Exclusive:
        """A reusable context in which this process alone writes ``name``'s table."""
        return Exclusive(self, name)

    def followed_by(self, name: str) -> str | None:
        """``THIS_PROCESS``, another process's description, or None (nobody follows it)."""
        if self.holds(name):
            return THIS_PROCESS
        with self._probing:
            probe = self._probes.get(name)
            if probe is None:
                probe = self._probes[name] = self.lock(name)
            return probe.holder()

    def close(self) -> None:
        with self._probing:
            for probe in self._probes.values():
                probe.close()
            self._probes.clear()


class FollowerHold:
    """Entered for each batch of a follower that holds ``lock``: takes the thread lock and
    checks the follower still holds the lock (``LockLostError`` if not)."""

    def __init__(self, coordinator: Coordinator, name: str, lock: FollowerLock) -> None:
        self.coordinator, self.name, self.lock = coordinator, name, lock
        self.guard = coordinator.guard(name)

    def __enter__(self) -> None:
        self.guard.acquire()
        if not self.lock.held():
            self.guard.release()
            raise LockLostError(f"the follower of {self.name} lost its lock")

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.guard.release()


class Exclusive:
    """This process alone writes ``name``'s table while inside: through its own follower's
    lock if it holds it, else by taking the lock for the duration (``FollowedElsewhereError``
    when another process holds it)."""

    def __init__(self, coordinator: Coordinator, name: str) -> None:
        self.coordinator, self.name = coordinator, name
        self.guard = coordinator.guard(name)
        self._taken: FollowerLock | None = None

    def __enter__(self) -> None:
        self.guard.acquire()
        if self.coordinator.holds(self.name):
            return
        lock = self.coordinator.lock(self.name)
        try:
            taken, holder = lock.acquire(), None
            if not taken:
                holder = lock.holder()
        except BaseException:
            lock.close()
            self.guard.release()
            raise
        if not taken:
            lock.close()
            self.guard.release()
            raise FollowedElsewhereError(self.name, holder)
        self._taken = lock

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._taken is not None:
            self._taken.close()
            self._taken = None
        self.guard.release()
