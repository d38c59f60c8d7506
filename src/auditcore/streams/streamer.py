"""The streamer: each active log stream is a follower of the store's log, with its own
position, delivering its workspace's events to its destination in batches.

A stream reads the log with the processors' ``LogReader`` (in commit order, every workspace's
events; others' are skipped) and wakes on the same ``Wakeup`` (LISTEN / NOTIFY on PostgreSQL,
a short poll on SQLite). Each event of its workspace is read as every other read path reads
it: personal fields opened by the store mapper, or shown erased once their subject was erased.
Events its filters reject are skipped. Up to ``max_events`` events (or ``max_bytes`` of
payload) make a batch; a smaller one goes once its first event has waited ``max_wait``
seconds. One process delivers a stream at a time (a lock per stream beside the store, as the
processors' followers hold; another process stands by).

Failure semantics: at least once, in commit order, nothing skipped. The position (every event
up to it delivered or filtered out) is committed only after the destination accepted the whole
batch, by a compare-and-set (``StreamConfigs.commit``), so a crash at any instant re-delivers
at most the batch under way, with the same ids: ``delivery_id`` per stream and event,
``batch_id`` per stream and range of positions. A failed delivery is retried with exponential
backoff and jitter (``tenacity``), the attempts counted in the stream's row (so they survive a
restart); after ``max_attempts`` failures, or at once for a non-retryable refusal, the stream
goes to ``dead_letter`` and stays there, its position before the undelivered batch, until
``resume`` or ``replay``. Pausing, resuming or replaying bumps the row's generation: a running
follower notices before its next batch (or its next retry) and starts over from the row.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, cast
from uuid import NAMESPACE_URL, UUID, uuid5

import orjson
from eventsourcing.persistence import StoredEvent
from tenacity import RetryCallState, Retrying, retry_if_exception, wait_exponential_jitter

from auditcore.events.envelope import AuditEvent
from auditcore.projection.log import LoggedEvent, LogReader
from auditcore.projection.records import decode_logged
from auditcore.projection.wakeup import wakeup_for
from auditcore.readmodel.model import ReadModel
from auditcore.readmodel.queries import live_matcher
from auditcore.store.application import AuditApplication
from auditcore.store.locks import FileLock, FollowerLock, PostgresLock, lock_key
from auditcore.store.mapper import AuditMapper
from auditcore.streams.base import Batch, DeliveryError, Destination, StreamEvent
from auditcore.streams.config import ACTIVE, StreamConfigs, StreamInfo

logger = logging.getLogger(__name__)

_IDS = uuid5(NAMESPACE_URL, "https://auditcore.dev/log-streams")


def delivery_id(stream_id: str, event_id: UUID) -> str:
    """Stable per stream and event: the same event sent again by the same stream (a retry, a
    restart, a replay) has the same id. (A keyed hash, not a UUID: it is made per event.)"""
    return hashlib.blake2b(event_id.bytes, digest_size=16, key=stream_id.encode()).hexdigest()


def batch_id(stream_id: str, first: int, last: int) -> str:
    return "msg_" + uuid5(_IDS, f"{stream_id}/{first}-{last}").hex


@dataclass
class StreamStatus:
    state: str = "starting"
    """starting · following · standby (another process delivers it) · retrying · failing ·
    stopped"""
    last_error: str | None = None


class _ChangedError(Exception):
    """The stream's row changed (paused, resumed, replayed, removed): start over from it."""


@dataclass(frozen=True)
class Tuning:
    read_batch: int = 1_000
    poll: float = 0.2
    retry_initial: float = 0.5
    retry_max: float = 30.0
    standby_poll: float = 2.0


class StreamFollower:
    """Delivers one stream until it stops being active or ``stop`` is set. Not thread-safe:
    one thread runs one follower."""

    def __init__(
        self,
        app: AuditApplication,
        configs: StreamConfigs,
        audit_events: ReadModel,
        stream_id: str,
        tuning: Tuning | None = None,
        on_batch: Callable[[Batch], None] | None = None,
    ) -> None:
        self.app = app
        self.configs = configs
        self.model = audit_events
        self.stream_id = stream_id
        self.tuning = tuning or Tuning()
        self.reader = LogReader(app)
        self.status = StreamStatus()
        self.on_batch = on_batch

    def run(self, stop: threading.Event) -> None:
        """Follow while the stream is active; return when it is not (paused, dead-lettered,
        removed) or ``stop`` is set."""
        lock = self._lock()
        try:
            while not lock.acquire():
                self.status.state = "standby"
                if stop.wait(self.tuning.standby_poll):
                    return
            while not stop.is_set():
                info = self.configs.running(self.stream_id)
                if info is None or info.state != ACTIVE:
                    return
                destination = self.configs.destination(self.stream_id)
                try:
                    self.status.state = "following"
                    self._follow(info, destination, stop)
                except _ChangedError:
                    continue
                finally:
                    destination.close()
                return
        finally:
            lock.close()
            self.status.state = "stopped"

    def _follow(self, info: StreamInfo, destination: Destination, stop: threading.Event) -> None:
        payloads = self.configs.payload_format(info)
        matches = live_matcher(self.model, info.filters, None) if info.filters else None
        mapper = cast("AuditMapper", self.app.mapper)
        registry = self.app.registry
        workspace = info.workspace_id
        marker = b'"%s"' % workspace.encode()
        position = scanned = info.position
        pending: list[StreamEvent] = []
        size = 0
        since = 0.0
        wakeup = wakeup_for(self.app, stop, self.tuning.poll)

        def flush() -> None:
            nonlocal position, pending, size
            if pending:
                batch = Batch(
                    self.stream_id,
                    workspace,
                    batch_id(self.stream_id, pending[0].position, pending[-1].position),
                    pending,
                )
                if not self._deliver(info, destination, batch, stop):
                    raise _ChangedError  # stopped, dead-lettered or changed: the row says which
            if not self.configs.commit(
                self.stream_id, info.generation, position, scanned, len(pending)
            ):
                raise _ChangedError
            position, pending, size = scanned, [], 0

        try:
            while not stop.is_set():
                self._check(info)
                events = self.reader.after(scanned, self.tuning.read_batch)
                mine = [e for e in events if _maybe_of(e, marker) and _workspace_of(e) == workspace]
                opened = mapper.readable_states([e.state for e in mine])
                for stored, state in zip(mine, opened, strict=True):
                    logged = stored._replace(state=state)
                    event = _envelope(mapper, logged)
                    if matches is None or matches(event):
                        since = since if pending else time.monotonic()
                        payload = payloads.payload(event, partial(decode_logged, registry, logged))
                        size += len(orjson.dumps(payload))
                        pending.append(self._stream_event(logged.position, event, payload))
                    scanned = logged.position
                    if len(pending) >= info.max_events or size >= info.max_bytes:
                        flush()
                if events:
                    scanned = max(scanned, events[-1].position)
                waited = time.monotonic() - since
                if pending and waited >= info.max_wait:
                    flush()
                elif not pending and scanned > position:
                    flush()  # only filtered-out or other workspaces' events: move past them
                if len(events) < self.tuning.read_batch:
                    timeout = max(info.max_wait - waited, 0.0) if pending else 1.0
                    if timeout > 0:
                        wakeup.wait(timeout=timeout)
        finally:
            wakeup.close()

    def _stream_event(
        self, position: int, event: AuditEvent, payload: dict[str, Any]
    ) -> StreamEvent:
        return StreamEvent(
            position,
            delivery_id(self.stream_id, event.event_id),
            event.workspace_id,
            event.occurred_at,
            payload,
        )

    def _check(self, info: StreamInfo) -> None:
        now = self.configs.running(self.stream_id)
        if now is None or now.state != ACTIVE or now.generation != info.generation:
            raise _ChangedError

    def _deliver(
        self, info: StreamInfo, destination: Destination, batch: Batch, stop: threading.Event
    ) -> bool:
        """Deliver with retries; False if it was not delivered (stopped, the row changed, or
        the stream went to dead-letter)."""
        attempts = info.attempts
        changed = False

        def failed(state: RetryCallState) -> None:
            nonlocal attempts, changed
            attempts += 1
            error = state.outcome.exception() if state.outcome else None
            self.status.state, self.status.last_error = "retrying", str(error)
            logger.warning("log stream %s: attempt %d failed: %s", self.stream_id, attempts, error)
            if not self.configs.failed(
                self.stream_id, info.generation, attempts, str(error), dead=False
            ):
                changed = True

        def give_up(_: RetryCallState) -> bool:
            return changed or stop.is_set() or attempts >= info.max_attempts

        retrying = Retrying(
            retry=retry_if_exception(lambda e: isinstance(e, DeliveryError) and e.retryable),
            stop=give_up,
            wait=wait_exponential_jitter(
                multiplier=self.tuning.retry_initial, max=self.tuning.retry_max
            ),
            sleep=lambda seconds: _sleep(stop, seconds),
            after=failed,
            reraise=True,
        )
        try:
            retrying(_attempt, destination, batch)
        except DeliveryError as error:
            if changed or stop.is_set():
                return False
            self.status.state, self.status.last_error = "dead_letter", str(error)
            logger.warning("log stream %s went to dead-letter: %s", self.stream_id, error)
            self.configs.failed(
                self.stream_id,
                info.generation,
                attempts + (0 if error.retryable else 1),
                str(error),
                dead=True,
            )
            return False
        self.status.state, self.status.last_error = "following", None
        if self.on_batch is not None:
            self.on_batch(batch)
        return True

    def _lock(self) -> FollowerLock:
        settings = self.app.settings
        name = f"auditcore-stream:{settings.postgres_schema}:{self.stream_id}"
        if settings.uses_postgres:
            return PostgresLock(settings.postgres_conninfo(), lock_key(name), "log stream")
        store = Path(settings.event_store)
        return FileLock(store.with_name(f"{store.name}.stream-{self.stream_id}.lock"))


def _attempt(destination: Destination, batch: Batch) -> None:
    try:
        destination.deliver(batch)
    except DeliveryError:
        raise
    except Exception as error:
        # A destination's own bug or an unforeseen library error: retried like an outage,
        # named by its type only (its text might carry a credential).
        raise DeliveryError(f"{type(error).__name__} while delivering") from error


def _sleep(stop: threading.Event, seconds: float) -> None:
    """Tenacity's backoff, cut short by ``stop``."""
    stop.wait(seconds)


def _workspace_of(event: LoggedEvent) -> str:
    workspace: str = orjson.loads(event.state)["workspace_id"]
    return workspace


def _maybe_of(event: LoggedEvent, marker: bytes) -> bool:
    """Cheap test first: a state without the workspace id as a JSON string is another
    workspace's (ids are plain ASCII, never escaped, whatever wrote the JSON); one with it
    is checked in full."""
    return marker in event.state


def _envelope(mapper: AuditMapper, logged: LoggedEvent) -> AuditEvent:
    """The event as the API reads it (its state already opened)."""
    stored = StoredEvent(
        originator_id=UUID(logged.stream_id),
        originator_version=logged.version,
        topic=logged.action,
        state=logged.state,
    )
    return cast("AuditEvent", mapper.to_domain_event(stored))


class StreamRunner:
    """Runs a follower thread for every active stream, starting new ones as they are added or
    resumed (checked every ``poll`` seconds). A follower that fails is restarted after a
    backoff, its error kept in ``statuses``."""

    def __init__(
        self,
        app: AuditApplication,
        configs: StreamConfigs,
        audit_events: ReadModel,
        *,
        poll: float = 2.0,
        tuning: Tuning | None = None,
    ) -> None:
        self.app = app
        self.configs = configs
        self.model = audit_events
        self.poll = poll
        self.tuning = tuning or Tuning()
        self.statuses: dict[str, StreamStatus] = {}
        self._threads: dict[str, threading.Thread] = {}

    def run(self, stop: threading.Event) -> None:
        try:
            while not stop.is_set():
                try:
                    self._start_new(stop)
                except Exception:
                    logger.exception("listing log streams failed; trying again")
                stop.wait(self.poll)
        finally:
            for thread in self._threads.values():
                thread.join(timeout=30)

    def follow(self, stop: threading.Event) -> list[threading.Thread]:
        """Run in a thread of its own (``auditcore serve``)."""
        thread = threading.Thread(
            target=self.run, args=(stop,), name="auditcore-streams", daemon=True
        )
        thread.start()
        return [thread]

    def _start_new(self, stop: threading.Event) -> None:
        for stream_id in self.configs.active_ids():
            thread = self._threads.get(stream_id)
            if thread is not None and thread.is_alive():
                continue
            status = self.statuses.setdefault(stream_id, StreamStatus())
            thread = threading.Thread(
                target=self._follow,
                args=(stream_id, status, stop),
                name=f"auditcore-stream-{stream_id}",
                daemon=True,
            )
            self._threads[stream_id] = thread
            thread.start()

    def _follow(self, stream_id: str, status: StreamStatus, stop: threading.Event) -> None:
        delay = self.tuning.retry_initial
        while not stop.is_set():
            follower = StreamFollower(self.app, self.configs, self.model, stream_id, self.tuning)
            follower.status = status
            try:
                follower.run(stop)
            except Exception as error:
                status.state, status.last_error = "failing", f"{type(error).__name__}: {error}"
                logger.exception("log stream %s failed; retrying in %.1fs", stream_id, delay)
                stop.wait(delay)
                delay = min(delay * 2, 30.0)
            else:
                return
