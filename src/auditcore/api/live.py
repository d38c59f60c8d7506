"""The live tail: newly stored events, pushed to whoever is watching.

One shared follower thread reads the store's log (woken by PostgreSQL notifications, or a short
poll on SQLite) and offers each new event to every joined watcher whose workspace and filters it
matches. It runs only while someone watches (presence-gated): the first watcher starts it, the
last one to leave stops it. Positions are the store's notification ids, so a watcher that
reconnects with the last id it saw (SSE's ``Last-Event-ID``) resumes without gaps or repeats.

A watcher that resumes from behind the shared follower never pulls the follower back: it gets a
catch-up reader of its own (at most ``catch_up_readers`` of them at once, server-wide; the rest
wait their turn, and together they keep to the server's CPU budget for bulk work), which reads
at the watcher's own pace, and it joins the shared follower once
it has caught up with it. The join is decided under the hub's lock, against the position the
follower has delivered up to, and every delivery skips what the watcher already has, so the
hand-over has neither gap nor repeat.

Each watcher buffers at most ``budget`` bytes of events. The shared follower never waits for a
slow watcher: past the budget the watcher is ended with ``overflow`` (the stream says
``event: overflow`` and closes; the client resumes with its last id, losing nothing). A
catch-up reader instead waits for room, since only its own watcher waits on it.

Failure semantics: if the follower fails (the store is unreachable), every watcher is ended
with ``stopped``; clients reconnect and resume. An ending is always the last item a watcher
receives.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Sequence
from uuid import UUID

import orjson
from eventsourcing.persistence import StoredEvent

from auditcore.api.pacing import CpuPacer
from auditcore.events.envelope import AuditEvent
from auditcore.projection.log import LoggedEvent, LogReader
from auditcore.projection.wakeup import wakeup_for
from auditcore.store.application import AuditApplication

logger = logging.getLogger(__name__)

Delivery = tuple[int, bytes]
"""An event's store position and its JSON."""
OVERFLOW, REVOKED, STOPPED = "overflow", "revoked", "stopped"
"""Why a watcher ended (the last item of its queue)."""


class Watcher:
    """One live-tail connection: its workspace, its filters, where it has got to, and the
    events queued for it (bounded in bytes). The connection takes whatever has queued up in
    one go, so a burst costs the event loop one wake-up and one write, not one per event."""

    def __init__(
        self,
        workspace_id: str,
        matches: Callable[[AuditEvent], bool],
        position: int,
        loop: asyncio.AbstractEventLoop,
        budget: int,
    ) -> None:
        self.workspace_id = workspace_id
        self.matches = matches
        self.start = position
        """Where the watch began: it is offered the events after it."""
        self.position = position
        """Every event up to here has been offered (or did not match)."""
        self.loop = loop
        self.budget = budget
        self.ended: str | None = None
        self._room = threading.Condition()
        self._pending: list[Delivery] = []
        self._buffered = 0
        self._woken = False
        self._wake = asyncio.Event()

    @property
    def buffered(self) -> int:
        """Bytes of events queued and not yet taken by the connection."""
        return self._buffered

    def offer(self, delivery: Delivery) -> None:
        """From the shared follower: never waits; a watcher over its budget is ended."""
        with self._room:
            if self.ended is not None:
                return
            size = len(delivery[1])
            if self._buffered and self._buffered + size > self.budget:
                self._end(OVERFLOW)
                return
            self._queue(delivery, size)

    def put(self, delivery: Delivery) -> bool:
        """From the watcher's own catch-up reader: waits for room. False once it has ended."""
        size = len(delivery[1])
        with self._room:
            while self.ended is None and self._buffered and self._buffered + size > self.budget:
                self._room.wait(1.0)
            if self.ended is not None:
                return False
            self._queue(delivery, size)
            return True

    def end(self, reason: str) -> None:
        """End the watch (any thread); the connection takes what is queued, then the reason."""
        with self._room:
            self._end(reason)

    async def next(self, timeout: float) -> list[Delivery] | str | None:
        """Every event queued (oldest first), else the ending, else None after ``timeout``."""
        deadline = self.loop.time() + timeout
        while True:
            with self._room:
                self._wake.clear()
                self._woken = False
                taken, self._pending, self._buffered = self._pending, [], 0
                self._room.notify_all()
                if taken:
                    return taken
                if self.ended is not None:
                    return self.ended
            remaining = deadline - self.loop.time()
            if remaining <= 0:
                return None
            try:
                await asyncio.wait_for(self._wake.wait(), remaining)
            except TimeoutError:
                return None

    def _queue(self, delivery: Delivery, size: int) -> None:
        self._pending.append(delivery)
        self._buffered += size
        self._signal()

    def _end(self, reason: str) -> None:
        if self.ended is None:
            self.ended = reason
            self._room.notify_all()
            self._signal()

    def _signal(self) -> None:
        if not self._woken:
            self._woken = True
            try:
                self.loop.call_soon_threadsafe(self._wake.set)
            except RuntimeError:  # The connection's loop is gone: nobody is reading.
                self.ended = self.ended or STOPPED


class LiveHub:
    def __init__(
        self,
        app: AuditApplication,
        *,
        poll_interval: float = 0.2,
        batch_size: int = 500,
        catch_up_batch: int = 100,
        budget: int = 4 * 1024 * 1024,
        catch_up_readers: int = 2,
        pacer: CpuPacer | None = None,
    ) -> None:
        self.app = app
        self.pacer = pacer or CpuPacer(0)
        self.poll_interval = poll_interval
        self.batch_size = batch_size
        self.catch_up_batch = catch_up_batch
        """Events per step of a catch-up reader: small, so it yields to requests often."""
        self.budget = budget
        self._lock = threading.Lock()
        self._joined: set[Watcher] = set()
        self._catching_up: set[Watcher] = set()
        self._position = 0
        """Where the shared follower has got to: joined watchers were offered all up to it."""
        self._readers = threading.BoundedSemaphore(max(catch_up_readers, 1))
        self.followed = 0
        """Events the shared follower has read (catch-up readers' reads are not counted)."""
        self._stop: threading.Event | None = None
        self._thread: threading.Thread | None = None

    @property
    def watchers(self) -> int:
        return len(self._joined) + len(self._catching_up)

    @property
    def catching_up(self) -> int:
        return len(self._catching_up)

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
        """Start watching from just after ``after`` (default, or past the newest event: the
        store's current end); new events are handed to the watcher's queue in ``loop``."""
        head = self.app.recorder.max_notification_id() or 0
        start = head if after is None else min(after, head)
        watcher = Watcher(workspace_id, matches, start, loop, self.budget)
        with self._lock:
            if self._stop is None:
                self._position = head
                self._stop = threading.Event()
                self._thread = threading.Thread(
                    target=self._follow, args=(self._stop,), name="auditcore-live", daemon=True
                )
                self._thread.start()
            if start >= self._position:
                self._joined.add(watcher)
                return watcher
            self._catching_up.add(watcher)
        threading.Thread(
            target=self._catch_up, args=(watcher,), name="auditcore-live-catch-up", daemon=True
        ).start()
        return watcher

    def leave(self, watcher: Watcher) -> None:
        watcher.end(STOPPED)
        with self._lock:
            self._joined.discard(watcher)
            self._catching_up.discard(watcher)
            if not self._joined and not self._catching_up and self._stop is not None:
                self._stop.set()
                self._stop = None

    def close(self) -> None:
        with self._lock:
            watchers = self._joined | self._catching_up
            self._joined.clear()
            self._catching_up.clear()
            if self._stop is not None:
                self._stop.set()
                self._stop = None
        for watcher in watchers:
            watcher.end(STOPPED)
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _follow(self, stop: threading.Event) -> None:
        reader = LogReader(self.app)
        wakeup = wakeup_for(self.app, stop, self.poll_interval)
        try:
            while not stop.is_set():
                with self._lock:
                    position = self._position
                batch = reader.after(position, self.batch_size)
                self.followed += len(batch)
                if not batch:
                    wakeup.wait(5.0)
                    continue
                with self._lock:
                    if stop.is_set():  # A newer follower owns the position now.
                        return
                    # The joined set as it is now: a watcher that joined while the batch was
                    # read is at or past ``position``, so the batch covers what it lacks.
                    self._deliver(batch, self._joined)
                    self._position = batch[-1].position
        except Exception:
            logger.exception("the live tail stopped following the store")
            with self._lock:
                watchers = self._joined | self._catching_up
                self._joined.clear()
                self._catching_up.clear()
                if self._stop is stop:
                    self._stop = None
            for watcher in watchers:
                watcher.end(STOPPED)
        finally:
            wakeup.close()

    def _catch_up(self, watcher: Watcher) -> None:
        """Read the store for one far-behind watcher, then hand it to the shared follower."""
        while not self._readers.acquire(timeout=1.0):
            if watcher.ended is not None:
                return
        try:
            reader = LogReader(self.app)
            while watcher.ended is None:
                with self.pacer.step():
                    batch = reader.after(watcher.position, self.catch_up_batch)
                    for logged in batch:
                        delivery = self._matching(logged, watcher)
                        if delivery is not None and not watcher.put(delivery):
                            return
                        watcher.position = logged.position
                with self._lock:
                    if watcher.ended is None and watcher.position >= self._position:
                        self._catching_up.discard(watcher)
                        self._joined.add(watcher)
                        return
                if not batch:  # At the head, yet behind the follower: it just moved on.
                    time.sleep(0.01)
        except Exception:
            logger.exception("a live tail's catch-up read failed")
            watcher.end(STOPPED)
        finally:
            self._readers.release()

    def _deliver(self, batch: Sequence[LoggedEvent], watchers: set[Watcher]) -> None:
        workspaces = {watcher.workspace_id for watcher in watchers}
        for logged in batch:
            if not workspaces:
                break
            # Most events belong to workspaces nobody watches: look before building the model.
            if orjson.loads(logged.state)["workspace_id"] not in workspaces:
                continue
            event = self._decode(logged)
            data: bytes | None = None
            for watcher in watchers:
                if (
                    logged.position > watcher.position
                    and watcher.workspace_id == event.workspace_id
                    and watcher.matches(event)
                ):
                    data = data or event.model_dump_json().encode()
                    watcher.offer((logged.position, data))
        for watcher in watchers:
            watcher.position = max(watcher.position, batch[-1].position)

    def _matching(self, logged: LoggedEvent, watcher: Watcher) -> Delivery | None:
        if orjson.loads(logged.state)["workspace_id"] != watcher.workspace_id:
            return None
        event = self._decode(logged)
        if not watcher.matches(event):
            return None
        return logged.position, event.model_dump_json().encode()

    def _decode(self, logged: LoggedEvent) -> AuditEvent:
        stored = StoredEvent(
            originator_id=UUID(logged.stream_id),
            originator_version=logged.version,
            topic=logged.action,
            state=logged.state,
        )
        event: AuditEvent = self.app.mapper.to_domain_event(stored)  # type: ignore[assignment]
        return event
