"""The dispatcher: audit events handed over off the request path, written in large batches.

``submit`` returns at once with a future; a background worker groups queued events into
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

import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from enum import StrEnum

from eventsourcing.persistence import InterfaceError, OperationalError

from auditcore.errors import AuditcoreError
from auditcore.events.envelope import AuditEvent

TRANSIENT = (InterfaceError, OperationalError)


class DispatchBufferFullError(AuditcoreError):
    """The dispatcher's buffer is full: the event was not accepted (and nothing was lost)."""


class DispatcherClosedError(AuditcoreError):
    """The dispatcher was closed; nothing more can be dispatched."""


class FullBufferPolicy(StrEnum):
    BLOCK = "block"
    REJECT = "reject"


@dataclass(frozen=True)
class DispatchSettings:
    """How the dispatcher buffers and batches (see ``Dispatcher``)."""

    max_buffer: int = 100_000
    max_batch: int = 10_000
    max_delay: float = 0.02
    policy: FullBufferPolicy = FullBufferPolicy.BLOCK
    block_timeout: float = 5.0


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


@dataclass
class _Pending:
    event: AuditEvent
    future: Future[AuditEvent]
    submitted: float


class Dispatcher:
    """Writes submitted events in batches on a background thread, with ``write`` (which stores a
    batch in one transaction and returns the stored events in the same order)."""

    def __init__(
        self,
        write: Callable[[list[AuditEvent]], list[AuditEvent]],
        settings: DispatchSettings | None = None,
        *,
        retry_delays: tuple[float, float] = (0.05, 5.0),
    ) -> None:
        settings = settings or DispatchSettings()
        self._write = write
        self._queue: queue.Queue[_Pending] = queue.Queue(maxsize=settings.max_buffer)
        self.max_batch = settings.max_batch
        self.max_delay = settings.max_delay
        self.policy = settings.policy
        self.block_timeout = settings.block_timeout
        self._first_retry, self._max_retry = retry_delays
        self._closed = threading.Event()
        self._idle = threading.Condition()
        self._in_flight = 0
        self._latencies: deque[float] = deque(maxlen=10_000)
        self._counts = {
            "accepted": 0,
            "written": 0,
            "failed": 0,
            "rejected": 0,
            "batches": 0,
            "retries": 0,
            "last_batch_size": 0,
            "largest_batch": 0,
        }
        self._counts_lock = threading.Lock()
        self._worker = threading.Thread(target=self._run, name="auditcore-dispatcher", daemon=True)
        self._worker.start()

    def submit(self, event: AuditEvent) -> Future[AuditEvent]:
        """Queue an (already validated) event; the future resolves once it is committed."""
        if self._closed.is_set():
            raise DispatcherClosedError("the dispatcher is closed; use record() or a new AuditCore")
        pending = _Pending(event, Future(), time.monotonic())
        with self._idle:
            self._in_flight += 1
        try:
            if self.policy is FullBufferPolicy.REJECT:
                self._queue.put_nowait(pending)
            else:
                self._queue.put(pending, timeout=self.block_timeout)
        except queue.Full:
            with self._idle:
                self._in_flight -= 1
            self._count("rejected")
            waited = (
                "" if self.policy is FullBufferPolicy.REJECT else f" for {self.block_timeout:g}s"
            )
            raise DispatchBufferFullError(
                f"the dispatch buffer is full ({self._queue.maxsize:,} events waiting{waited}), "
                f"so event {event.event_id} ({event.action}) was not accepted: the event store "
                "is slower than the event rate, or unreachable. Retry it, use record() to write "
                "synchronously, or raise max_buffer."
            ) from None
        self._count("accepted")
        return pending.future

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every accepted event is written (or failed); False on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: self._in_flight == 0, timeout=timeout)

    def close(self, timeout: float | None = 30.0) -> bool:
        """Stop accepting, drain what is queued, stop the worker; False if it timed out."""
        self._closed.set()
        drained = self.flush(timeout)
        self._worker.join(timeout=1.0)
        return drained

    def stats(self) -> DispatcherStats:
        with self._counts_lock:
            counts = dict(self._counts)
            latencies = sorted(self._latencies)

        def percentile(p: float) -> float:
            return (
                latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000
                if latencies
                else 0.0
            )

        return DispatcherStats(
            queued=self._queue.qsize(),
            latency_p50_ms=percentile(0.5),
            latency_p99_ms=percentile(0.99),
            **counts,
        )

    def _count(self, name: str, amount: int = 1) -> None:
        with self._counts_lock:
            self._counts[name] += amount

    def _run(self) -> None:
        while not (self._closed.is_set() and self._queue.empty()):
            try:
                first = self._queue.get(timeout=0.1)
            except queue.Empty:
                continue
            batch = [first]
            deadline = time.monotonic() + self.max_delay
            while len(batch) < self.max_batch:
                remaining = deadline - time.monotonic()
                try:
                    batch.append(
                        self._queue.get(timeout=remaining)
                        if remaining > 0
                        else self._queue.get_nowait()
                    )
                except queue.Empty:
                    break
            self._write_batch(batch)

    def _write_batch(self, batch: list[_Pending]) -> None:
        delay = self._first_retry
        while True:
            try:
                stored = self._write([pending.event for pending in batch])
            except TRANSIENT:
                # Keep retrying: these events were accepted and must not be lost.
                self._count("retries")
                time.sleep(delay)
                delay = min(delay * 2, self._max_retry)
                continue
            except Exception as error:
                if len(batch) > 1:
                    # Write one by one, so only the events at fault fail.
                    for pending in batch:
                        self._write_batch([pending])
                    return
                batch[0].future.set_exception(error)
                self._finish(batch, "failed")
                return
            break
        now = time.monotonic()
        for pending, event in zip(batch, stored, strict=True):
            pending.future.set_result(event)
            self._latencies.append(now - pending.submitted)
        self._finish(batch, "written")
        with self._counts_lock:
            self._counts["batches"] += 1
            self._counts["last_batch_size"] = len(batch)
            self._counts["largest_batch"] = max(self._counts["largest_batch"], len(batch))

    def _finish(self, batch: list[_Pending], outcome: str) -> None:
        self._count(outcome, len(batch))
        with self._idle:
            self._in_flight -= len(batch)
            self._idle.notify_all()
