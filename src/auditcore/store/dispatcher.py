"""The dispatcher: audit events handed over off the request path, written in large batches.

``submit`` returns at once with a handle; a background worker groups queued events into
batches (up to ``max_batch`` events, waiting at most ``max_delay`` for more) and writes each
batch in one transaction. The buffer is bounded; when it is full the policy applies: ``block``
(wait up to ``block_timeout``, then refuse) or ``reject`` (refuse at once). A refused event is
never silently lost: the caller gets ``DispatchBufferFullError``.

Failure semantics. A transient database failure (a lost connection, a restarting or
unreachable server) is retried for as long as the dispatcher is open: each failure halves the
batch and each success doubles it again (up to ``max_batch``), so writes keep progressing while
the database accepts any write at all; a single event failing again backs off, up to 5 s.
Any other error fails only the events at fault (a failing batch is split in halves).
``close`` waits up to ``close_timeout`` for everything accepted to be written; then it gives
up: every event still waiting resolves with ``EventNotStoredError``, a write already in
progress gets ``in_flight_wait`` more seconds to finish (if it does not, its events resolve
with ``EventNotStoredError(maybe_stored=True)``), an error is logged with the counts, and
``close`` returns them in a ``DrainReport``. Every accepted handle resolves. Re-sent events
cannot duplicate anything: event ids are unique in the store, so an event given up on can be
dispatched again with the same ``event_id``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from functools import partial
from typing import Protocol

from eventsourcing.persistence import InterfaceError, OperationalError

from auditcore.errors import AuditcoreError
from auditcore.events.envelope import AuditEvent
from auditcore.store.mapper import AuditStoredEvent

TRANSIENT = (InterfaceError, OperationalError)
log = logging.getLogger(__name__)


def _same(error: BaseException, _: DispatchHandle) -> BaseException:
    return error


class Report(Protocol):
    """Publishes a dispatcher's counters (``Heartbeats.publish``)."""

    def __call__(self, stats: DispatcherStats, report_every: float, *, running: bool) -> None:
        """Store ``stats``, reported every ``report_every`` seconds while ``running``."""


class DispatchBufferFullError(AuditcoreError):
    """The dispatcher's buffer is full: the event was not accepted (and nothing was lost)."""


class DispatcherClosedError(AuditcoreError):
    """The dispatcher was closed; nothing more can be dispatched."""


class EventNotStoredError(AuditcoreError):
    """The dispatcher was closed before it could store this accepted event (the event store
    could not be reached in time). ``maybe_stored``: it was being written when the dispatcher
    stopped waiting, so it may have been stored after all. Either way it is safe to record it
    again with the same ``event_id``: a repeat is stored once."""

    def __init__(
        self, event: AuditStoredEvent, cause: BaseException | None, *, maybe_stored: bool
    ) -> None:
        self.event_id = event.event_id
        self.maybe_stored = maybe_stored
        outcome = (
            "may not have been stored: it was still being written when the dispatcher closed"
            if maybe_stored
            else "was not stored: the dispatcher closed before the event store took it"
        )
        reason = f" (last error: {cause})" if cause is not None else ""
        super().__init__(
            f"event {event.event_id} ({event.topic}) {outcome}{reason}. Record it again with "
            "the same event_id once the store is reachable (a repeat is stored once)."
        )


class DispatcherDrainError(AuditcoreError):
    """``AuditCore.close()`` could not store every dispatched event (``report`` says how many);
    each one's handle holds its ``EventNotStoredError``."""

    def __init__(self, report: DrainReport) -> None:
        self.report = report
        super().__init__(
            f"closing the dispatcher left {report.not_stored} accepted event(s) not stored and "
            f"{report.maybe_stored} whose write was still in progress (they may have been "
            "stored): the event store could not be reached in time. Each one's handle holds an "
            "EventNotStoredError; re-record them with the same event_id once the store is "
            "reachable (a repeat is stored once)."
        )


@dataclass(frozen=True)
class DrainReport:
    """What ``Dispatcher.close`` could not store: events given up on (``not_stored``) and,
    of the events being written when it stopped waiting, those whose outcome is unknown
    (``maybe_stored``). True when every accepted event was stored (or refused on its own
    account, e.g. a reused event id)."""

    not_stored: int = 0
    maybe_stored: int = 0

    def __bool__(self) -> bool:
        return self.not_stored == 0 and self.maybe_stored == 0


class FullBufferPolicy(StrEnum):
    BLOCK = "block"
    REJECT = "reject"


@dataclass(frozen=True)
class DispatchSettings:
    """How the dispatcher buffers and batches (see ``Dispatcher``); ``report_every``: seconds
    between reports of its counters to ``auditcore status`` (0: never); ``close_timeout`` and
    ``in_flight_wait``: how long closing waits for the buffer to drain, then for a write in
    progress (so ``close`` returns within their sum, 30 s by default)."""

    max_buffer: int = 100_000
    max_batch: int = 10_000
    max_delay: float = 0.02
    policy: FullBufferPolicy = FullBufferPolicy.BLOCK
    block_timeout: float = 5.0
    report_every: float = 5.0
    close_timeout: float = 25.0
    in_flight_wait: float = 5.0

    def __post_init__(self) -> None:
        # Accept "block" / "reject" as well as the enum (e.g. from configuration).
        object.__setattr__(self, "policy", FullBufferPolicy(self.policy))
        if self.max_buffer < 1 or self.max_batch < 1:
            raise ValueError("max_buffer and max_batch must be at least 1")
        durations = ("max_delay", "block_timeout", "report_every", "close_timeout")
        if any(getattr(self, name) < 0 for name in (*durations, "in_flight_wait")):
            raise ValueError(f"{', '.join(durations)} and in_flight_wait cannot be negative")


@dataclass(frozen=True)
class DispatcherStats:
    queued: int
    accepted: int
    written: int
    failed: int
    rejected: int
    batches: int
    retries: int
    last_batch_size: int
    largest_batch: int
    latency_p50_ms: float
    latency_p99_ms: float


class DispatchHandle:
    """What ``dispatch`` returns: the event's outcome, once its batch is written.

    Far lighter than a ``concurrent.futures.Future`` (no lock of its own): every handle
    waits on its dispatcher's one condition, which is notified once per batch. It holds the
    event in its stored form; ``result()`` decodes it only when asked.
    """

    __slots__ = ("_decode", "_done", "_error", "_result", "_signal", "stored", "submitted")

    def __init__(
        self,
        stored: AuditStoredEvent,
        signal: threading.Condition,
        decode: Callable[[AuditStoredEvent], AuditEvent],
    ) -> None:
        self.stored = stored
        self.submitted = time.monotonic()
        self._signal = signal
        self._decode = decode
        self._done = False
        self._result: AuditEvent | None = None
        self._error: BaseException | None = None

    def done(self) -> bool:
        return self._done

    def result(self, timeout: float | None = None) -> AuditEvent:
        """The stored event; raises what storing it raised, or ``TimeoutError``."""
        error = self.exception(timeout)
        if error is not None:
            raise error
        if self._result is None:
            self._result = self._decode(self.stored)
        return self._result

    def exception(self, timeout: float | None = None) -> BaseException | None:
        if not self._done:
            with self._signal:
                if not self._signal.wait_for(self.done, timeout=timeout):
                    raise TimeoutError(f"event {self.stored.event_id} is not written yet")
        return self._error


class Dispatcher:
    """Writes submitted events in batches on a background thread, with ``write`` (which stores a
    batch in one transaction and returns, in the same order, each event as stored: an
    idempotent repeat gets the event first stored under its id). ``decode`` makes handles'
    results.

    ``submit`` takes no lock while there is room: producer threads contending for one lock
    under the interpreter lock queue behind each other at every preemption (measured: a third
    of the throughput with four producers). Producers only append to the buffer and the worker
    only takes from it; as the room check takes no lock, producers racing for the last places
    may overfill it by at most one event each.
    """

    def __init__(
        self,
        write: Callable[[list[AuditStoredEvent]], list[AuditStoredEvent]],
        decode: Callable[[AuditStoredEvent], AuditEvent],
        settings: DispatchSettings | None = None,
        *,
        report: Report | None = None,
        retry_delays: tuple[float, float] = (0.05, 5.0),
    ) -> None:
        self.settings = settings or DispatchSettings()
        self._write = write
        self._decode = decode
        self._report = report if self.settings.report_every else None
        self._next_report = 0.0
        self._report_failing = False
        self._first_retry, self._max_retry = retry_delays
        # deque.append and popleft are atomic: producers append, only the worker pops.
        self._buffer: deque[DispatchHandle] = deque()
        self._wake_worker = threading.Event()
        # For the rare paths only: a full buffer, closing, and waiting for outcomes.
        self._lock = threading.Lock()
        self._has_room = threading.Condition(self._lock)
        self._finished = threading.Condition(threading.Lock())
        self._writing: list[DispatchHandle] = []
        # The part of ``_writing`` handed to the store right now, and the batch size to try
        # next (halved after each transient failure, doubled after each success).
        self._in_flight: list[DispatchHandle] = []
        self._batch_limit = self.settings.max_batch
        self._last_error: BaseException | None = None
        self._closed = False
        self._stopped = False
        # Set when close() stops waiting: nothing more is attempted, what is left fails.
        self._giving_up = threading.Event()
        self._not_stored = 0
        self._maybe_stored = 0
        self._latencies: deque[float] = deque(maxlen=10_000)
        self._counts = dict.fromkeys(
            (
                "written",
                "failed",
                "rejected",
                "batches",
                "retries",
                "last_batch_size",
                "largest_batch",
            ),
            0,
        )
        self._worker = threading.Thread(target=self._run, name="auditcore-dispatcher", daemon=True)
        self._worker.start()

    @property
    def batch_limit(self) -> int:
        """The largest batch the worker will try next: ``max_batch``, halved after each
        transient failure and doubled after each success."""
        return self._batch_limit

    def submit(self, event: AuditStoredEvent) -> DispatchHandle:
        """Queue an (already validated) event; the handle resolves once it is committed."""
        if self._closed:
            raise self._closed_error()
        if len(self._buffer) >= self.settings.max_buffer:
            self._wait_for_room(event)
        pending = DispatchHandle(event, self._finished, self._decode)
        self._buffer.append(pending)
        if self._closed:
            self._withdraw_if_unseen(pending)
        if not self._wake_worker.is_set():
            self._wake_worker.set()
        return pending

    def _wait_for_room(self, event: AuditStoredEvent) -> None:
        limit = self.settings.max_buffer
        with self._lock:
            if self.settings.policy is FullBufferPolicy.BLOCK:
                self._has_room.wait_for(
                    lambda: len(self._buffer) < limit or self._closed,
                    timeout=self.settings.block_timeout,
                )
            if self._closed:
                raise self._closed_error()
            if len(self._buffer) >= limit:
                self._counts["rejected"] += 1
                raise self._full(event)

    def _withdraw_if_unseen(self, pending: DispatchHandle) -> None:
        """``close`` raced this submit: if the worker stopped without seeing the event, take
        it back and refuse it, rather than leave it unwritten for ever."""
        with self._lock:
            if self._stopped and pending in self._buffer:
                self._buffer.remove(pending)
                raise self._closed_error()

    @staticmethod
    def _closed_error() -> DispatcherClosedError:
        return DispatcherClosedError("the dispatcher is closed; use record() or a new AuditCore")

    def _full(self, event: AuditStoredEvent) -> DispatchBufferFullError:
        waited = (
            ""
            if self.settings.policy is FullBufferPolicy.REJECT
            else f" for {self.settings.block_timeout:g}s"
        )
        return DispatchBufferFullError(
            f"the dispatch buffer is full ({self.settings.max_buffer:,} events waiting{waited}), "
            f"so event {event.event_id} ({event.topic}) was not accepted: the event store "
            "is slower than the event rate, or unreachable. Retry it, use record() to write "
            "synchronously, or raise max_buffer."
        )

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every event accepted so far is written (or failed); False on timeout."""
        with self._lock:
            # The buffer is first in, first out, so the newest event is the last to finish.
            newest = self._buffer[-1] if self._buffer else None
            if newest is None and self._writing:
                newest = self._writing[-1]
        if newest is None:
            return True
        with self._finished:
            return self._finished.wait_for(newest.done, timeout=timeout)

    def close(self, timeout: float | None = None) -> DrainReport:
        """Stop accepting and drain what is queued, waiting up to ``timeout`` (by default
        ``close_timeout``); then give up on what is left (see the module's failure semantics).
        Returns what could not be stored; an error is logged if anything could not."""
        with self._lock:
            self._closed = True
            self._has_room.notify_all()
        self._wake_worker.set()
        # The worker stops once it finds the buffer empty after closing: everything accepted,
        # even by a submit racing this close, has been written or has failed by then.
        self._worker.join(self.settings.close_timeout if timeout is None else timeout)
        if self._worker.is_alive():
            self._give_up()
        report = DrainReport(self._not_stored, self._maybe_stored)
        if not report:
            log.error(
                "the audit event dispatcher closed with %d accepted event(s) not stored and "
                "%d whose write was still in progress (they may have been stored); last error: "
                "%s. Each one's handle holds an EventNotStoredError; re-record them with the "
                "same event_id once the event store is reachable.",
                report.not_stored,
                report.maybe_stored,
                self._last_error,
            )
        return report

    def _give_up(self) -> None:
        """Fail every event that was never handed to the store, let a write in progress
        finish (without retrying) for up to ``in_flight_wait``, then fail what it holds as
        possibly stored."""
        with self._lock:
            unsent = list(self._buffer)
            self._buffer.clear()
        self._giving_up.set()
        self._abandon(unsent, maybe_stored=False)
        self._worker.join(self.settings.in_flight_wait)
        with self._lock:
            in_flight, writing = list(self._in_flight), list(self._writing)
        self._abandon(in_flight, maybe_stored=True)
        self._abandon(writing, maybe_stored=False)  # the rest of its batch: never attempted

    def stats(self) -> DispatcherStats:
        with self._lock:
            counts = dict(self._counts)
            latencies = sorted(self._latencies)
            queued = len(self._buffer)
            # A batch is resolved chunk by chunk: count only what it still holds.
            writing = sum(not pending._done for pending in self._writing)

        def percentile(p: float) -> float:
            if not latencies:
                return 0.0
            return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000

        return DispatcherStats(
            queued=queued,
            accepted=queued + writing + counts["written"] + counts["failed"],
            latency_p50_ms=percentile(0.5),
            latency_p99_ms=percentile(0.99),
            **counts,
        )

    def _run(self) -> None:
        while True:
            self._wake_worker.wait(self.settings.report_every if self._report else None)
            # Cleared before looking at the buffer: a later append sets it again.
            self._wake_worker.clear()
            self._report_if_due()
            with self._lock:
                if not self._buffer:
                    if self._closed:
                        self._stopped = True
                        break
                    continue
                short = len(self._buffer) < self._batch_limit and not self._closed
            if short:
                # Let more events join this batch, up to max_delay.
                time.sleep(self.settings.max_delay)
            with self._lock:
                size = min(len(self._buffer), self._batch_limit)
                self._writing = [self._buffer.popleft() for _ in range(size)]
                self._has_room.notify_all()
            self._write_batch(self._writing)
            with self._lock:
                self._writing = []
            # More may be waiting (or the dispatcher closing): look again without waiting.
            self._wake_worker.set()
        self._publish(running=False)

    def _report_if_due(self) -> None:
        now = time.monotonic()
        if now >= self._next_report:
            self._next_report = now + self.settings.report_every
            self._publish(running=True)

    def _publish(self, *, running: bool) -> None:
        """Report the counters. A report that fails is logged (once until one succeeds) and
        dropped: it must never stop the worker, which holds accepted events."""
        if self._report is None:
            return
        try:
            self._report(self.stats(), self.settings.report_every, running=running)
        except Exception as error:
            if not self._report_failing:
                log.warning("cannot report the dispatcher's counters (%s); will keep trying", error)
            self._report_failing = True
        else:
            self._report_failing = False

    def _write_batch(self, batch: list[DispatchHandle]) -> None:
        """Write ``batch`` in order, in chunks of at most the current batch limit."""
        delay = self._first_retry
        start = 0
        while start < len(batch):
            if self._giving_up.is_set():
                self._abandon(batch[start:], maybe_stored=False)
                return
            chunk = batch[start : start + self._batch_limit]
            with self._lock:
                self._in_flight = chunk
            try:
                stored = self._write([pending.stored for pending in chunk])
            except TRANSIENT as error:
                with self._lock:
                    self._in_flight = []
                    self._counts["retries"] += 1
                    self._last_error = error
                # Keep trying, smaller: these events were accepted and must not be lost, and a
                # smaller batch commits sooner, between failures that keep defeating a large one.
                # Only a single event failing again backs off further.
                if len(chunk) > 1:
                    self._batch_limit = max(1, len(chunk) // 2)
                    self._giving_up.wait(self._first_retry)
                else:
                    self._giving_up.wait(delay)
                    delay = min(delay * 2, self._max_retry)
                continue
            except Exception as error:
                with self._lock:
                    self._in_flight = []
                if len(chunk) > 1:
                    # Write each half on its own, so only the events at fault fail: a few
                    # bad events in a large batch cost a few writes each, not one per event.
                    middle = len(chunk) // 2
                    self._write_batch(chunk[:middle])
                    self._write_batch(chunk[middle:])
                else:
                    self._finish(chunk, "failed", partial(_same, error))
                start += len(chunk)
                continue
            with self._lock:
                self._in_flight = []
            self._written(chunk, stored)
            self._batch_limit = min(self.settings.max_batch, self._batch_limit * 2)
            delay = self._first_retry
            start += len(chunk)

    def _written(self, chunk: list[DispatchHandle], stored: list[AuditStoredEvent]) -> None:
        now = time.monotonic()
        for pending, event in zip(chunk, stored, strict=True):
            # An idempotent repeat: the event as first stored under its id.
            if event is not pending.stored:
                pending.stored = event
        with self._lock:
            self._latencies.extend(now - pending.submitted for pending in chunk)
            self._counts["batches"] += 1
            self._counts["last_batch_size"] = len(chunk)
            self._counts["largest_batch"] = max(self._counts["largest_batch"], len(chunk))
        self._finish(chunk, "written")

    def _abandon(self, handles: list[DispatchHandle], *, maybe_stored: bool) -> None:
        """Fail the given events that are still unresolved with ``EventNotStoredError``."""
        with self._lock:
            cause = self._last_error
        settled = self._finish(
            handles,
            "failed",
            lambda pending: EventNotStoredError(pending.stored, cause, maybe_stored=maybe_stored),
        )
        with self._lock:
            if maybe_stored:
                self._maybe_stored += settled
            else:
                self._not_stored += settled

    def _finish(
        self,
        batch: list[DispatchHandle],
        outcome: str,
        error: Callable[[DispatchHandle], BaseException] | None = None,
    ) -> int:
        """Resolve the events of ``batch`` not resolved yet (``close`` may have given up on
        them meanwhile), each with ``error(it)`` if given; return how many."""
        with self._finished:
            fresh = [pending for pending in batch if not pending._done]
            for pending in fresh:
                if error is not None:
                    pending._error = error(pending)
                pending._done = True
            self._finished.notify_all()
        with self._lock:
            self._counts[outcome] += len(fresh)
        return len(fresh)
