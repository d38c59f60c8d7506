"""The live tail: newly stored events, pushed to whoever is watching.

One follower thread reads the store's log (woken by PostgreSQL notifications, or a short poll
on SQLite) and offers each new event to every watcher whose workspace and filters it matches.
It runs only while someone watches (presence-gated): the first watcher starts it, the last one
to leave stops it. Positions are the store's notification ids, so a watcher that reconnects
with the last id it saw (SSE's ``Last-Event-ID``) resumes without gaps or repeats.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from uuid import UUID

import orjson
from eventsourcing.persistence import StoredEvent

from auditcore.events.envelope import AuditEvent
from auditcore.projection.log import LoggedEvent, LogReader
from auditcore.projection.wakeup import wakeup_for
from auditcore.store.application import AuditApplication

logger = logging.getLogger(__name__)

Delivery = tuple[int, AuditEvent]


@dataclass(eq=False)
class Watcher:
    """One live-tail connection: its workspace, its filters and where it has got to."""

    workspace_id: str
    matches: Callable[[AuditEvent], bool]
    position: int
    loop: asyncio.AbstractEventLoop
    capacity: int
    queue: asyncio.Queue[Delivery | None] = field(default_factory=asyncio.Queue)
    overflowed: bool = False

    def offer(self, delivery: Delivery) -> None:
        """Called in the watcher's event loop; a watcher too slow to keep up is cut off
        (``None`` tells it to reconnect from its last id) rather than buffering without end."""
        if self.overflowed:
            return
        if self.queue.qsize() >= self.capacity:
            self.overflowed = True
            self.queue.put_nowait(None)
            return
        self.queue.put_nowait(delivery)


class LiveHub:
    def __init__(
        self,
        app: AuditApplication,
        *,
        poll_interval: float = 0.2,
        batch_size: int = 500,
        capacity: int = 10_000,
    ) -> None:
        self.app = app
        self.poll_interval = poll_interval
        self.batch_size = batch_size
        self.capacity = capacity
        self._lock = threading.Lock()
        self._watchers: set[Watcher] = set()
        self._stop: threading.Event | None = None
        self._thread: threading.Thread | None = None

    @property
    def watchers(self) -> int:
        return len(self._watchers)

    @property
    def following(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    def watch(
        self,
        workspace_id: str,
        matches: Callable[[AuditEvent], bool],
        after: int | None,
        loop: asyncio.AbstractEventLoop,
    ) -> Watcher:
        """Start watching from just after ``after`` (default: the store's current end); new
        events are handed to the watcher's queue in ``loop``."""
        if after is None:
            after = self.app.recorder.max_notification_id() or 0
        watcher = Watcher(workspace_id, matches, after, loop, self.capacity)
        with self._lock:
            self._watchers.add(watcher)
            if self._stop is None:
                self._stop = threading.Event()
                self._thread = threading.Thread(
                    target=self._follow, args=(self._stop,), name="auditcore-live", daemon=True
                )
                self._thread.start()
        return watcher

    def leave(self, watcher: Watcher) -> None:
        with self._lock:
            self._watchers.discard(watcher)
            if not self._watchers and self._stop is not None:
                self._stop.set()
                self._stop = None

    def close(self) -> None:
        with self._lock:
            self._watchers.clear()
            if self._stop is not None:
                self._stop.set()
                self._stop = None
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _follow(self, stop: threading.Event) -> None:
        reader = LogReader(self.app)
        wakeup = wakeup_for(self.app, stop, self.poll_interval)
        try:
            while not stop.is_set():
                with self._lock:
                    watchers = list(self._watchers)
                if not watchers:
                    return
                batch = reader.after(min(w.position for w in watchers), self.batch_size)
                if not batch:
                    wakeup.wait(5.0)
                    continue
                self._deliver(batch, watchers)
        except Exception:
            logger.exception("the live tail stopped following the store")
            with self._lock:
                for watcher in self._watchers:
                    watcher.loop.call_soon_threadsafe(watcher.queue.put_nowait, None)
        finally:
            wakeup.close()

    def _deliver(self, batch: Sequence[LoggedEvent], watchers: list[Watcher]) -> None:
        workspaces = {watcher.workspace_id for watcher in watchers}
        for logged in batch:
            # Most events belong to workspaces nobody watches: look before building the model.
            if orjson.loads(logged.state)["workspace_id"] not in workspaces:
                continue
            event = self._decode(logged)
            for watcher in watchers:
                if (
                    logged.position > watcher.position
                    and watcher.workspace_id == event.workspace_id
                    and watcher.matches(event)
                ):
                    watcher.loop.call_soon_threadsafe(watcher.offer, (logged.position, event))
        for watcher in watchers:
            watcher.position = max(watcher.position, batch[-1].position)

    def _decode(self, logged: LoggedEvent) -> AuditEvent:
        stored = StoredEvent(
            originator_id=UUID(logged.stream_id),
            originator_version=logged.version,
            topic=logged.action,
            state=logged.state,
        )
        event: AuditEvent = self.app.mapper.to_domain_event(stored)  # type: ignore[assignment]
        return event
