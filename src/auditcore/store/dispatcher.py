"""The dispatcher: audit events handed over off the request path, written in large batches.

``submit`` returns at once with a handle; a background worker groups queued events into
batches (up to ``max_batch`` events, waiting at most ``max_delay`` for more) and writes each
batch in one transaction. The buffer is bounded; when it is full the policy applies: ``block``
(wait up to ``block_timeout``, then refuse) or ``reject`` (refuse at once). A refused event is
never silently lost: the caller gets ``DispatchBufferFullError``. Transient database failures
(lost connections, a restarting server) are retried with backoff for as long as it takes, and
``close`` reports whether everything was drained in time; events keep the actor and request
context captured when they were dispatched. Re-sent batches cannot duplicate anything: event
ids are unique in the store.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from eventsourcing.persistence import InterfaceError, OperationalError

from auditcore.errors import AuditcoreError
from auditcore.events.envelope import AuditEvent
from auditcore.store.mapper import AuditStoredEvent

TRANSIENT = (InterfaceError, OperationalError)
log = logging.getLogger(__name__)


class Report(Protocol):
    """Publishes a dispatcher's counters (``Heartbeats.publish``)."""

    def __call__(self, stats: DispatcherStats, report_every: float, *, running: bool) -> None:
        """Store ``stats``, reported every ``report_every`` seconds while ``running``."""


class DispatchBufferFullError(AuditcoreError):
    """The dispatcher's buffer is full: the event was not accepted (and nothing was lost)."""


class DispatcherClosedError(AuditcoreError):
    """The dispatcher was closed; nothing more can be dispatched."""


class FullBufferPolicy(StrEnum):
    BLOCK = "block"
    REJECT = "reject"


@dataclass(frozen=True)
class DispatchSettings:
    """How the dispatcher buffers and batches (see ``Dispatcher``); ``report_every``: seconds
    between reports of its counters to ``auditcore status`` (0: never)."""

    max_buffer: int = 100_000
    max_batch: int = 10_000
    max_delay: float = 0.02
    policy: FullBufferPolicy = FullBufferPolicy.BLOCK
    block_timeout: float = 5.0
    report_every: float = 5.0

    def __post_init__(self) -> None:
        # Accept "block" / "reject" as well as the enum (e.g. from configuration).
        object.__setattr__(self, "policy", FullBufferPolicy(self.policy))
        if self.max_buffer < 1 or self.max_batch < 1:
            raise ValueError("max_buffer and max_batch must be at least 1")
        if self.max_delay < 0 or self.block_timeout < 0 or self.report_every < 0:
            raise ValueError("max_delay, block_timeout and report_every cannot be negative")


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
        self._closed = False
        self._stopped = False
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

    def close(self, timeout: float | None = 30.0) -> bool:
        """Stop accepting, drain what is queued, stop the worker; False if it timed out."""
        with self._lock:
            self._closed = True
            self._has_room.notify_all()
        self._wake_worker.set()
        # The worker stops once it finds the buffer empty after closing: everything accepted,
        # even by a submit racing this close, has been written or has failed by then.
        self._worker.join(timeout)
        return not self._worker.is_alive()

    def stats(self) -> DispatcherStats:
        with self._lock:
            counts = dict(self._counts)
            latencies = sorted(self._latencies)
            queued = len(self._buffer)
            writing = len(self._writing)

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
                short = len(self._buffer) < self.settings.max_batch and not self._closed
            if short:
                # Let more events join this batch, up to max_delay.
                time.sleep(self.settings.max_delay)
            with self._lock:
                size = min(len(self._buffer), self.settings.max_batch)
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
        delay = self._first_retry
        events = [pending.stored for pending in batch]
        while True:
            try:
                stored = self._write(events)
            except TRANSIENT:
                # Keep retrying: these events were accepted and must not be lost.
                with self._lock:
                    self._counts["retries"] += 1
                time.sleep(delay)
                delay = min(delay * 2, self._max_retry)
                continue
            except Exception as error:
                if len(batch) > 1:
                    # Write each half on its own, so only the events at fault fail: a few
                    # bad events in a large batch cost a few writes each, not one per event.
                    middle = len(batch) // 2
                    self._write_batch(batch[:middle])
                    self._write_batch(batch[middle:])
                    return
                batch[0]._error = error
                self._finish(batch, "failed")
                return
            break
        now = time.monotonic()
        if stored is not events:  # some were stored before (idempotent repeats)
            for pending, event in zip(batch, stored, strict=True):
                pending.stored = event
        with self._lock:
            self._latencies.extend(now - pending.submitted for pending in batch)
            self._counts["batches"] += 1
            self._counts["last_batch_size"] = len(batch)
            self._counts["largest_batch"] = max(self._counts["largest_batch"], len(batch))
        self._finish(batch, "written")

    def _finish(self, batch: list[DispatchHandle], outcome: str) -> None:
        with self._lock:
            self._counts[outcome] += len(batch)
        with self._finished:
            for pending in batch:
                pending._done = True
            self._finished.notify_all()
