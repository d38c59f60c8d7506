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

import threading
import time
from collections import deque
from collections.abc import Callable
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

    def __post_init__(self) -> None:
        # Accept "block" / "reject" as well as the enum (e.g. from configuration).
        object.__setattr__(self, "policy", FullBufferPolicy(self.policy))
        if self.max_buffer < 1 or self.max_batch < 1:
            raise ValueError("max_buffer and max_batch must be at least 1")
        if self.max_delay < 0 or self.block_timeout < 0:
            raise ValueError("max_delay and block_timeout cannot be negative")


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
    waits on its dispatcher's one condition, which is notified once per batch.
    """

    __slots__ = ("_done", "_error", "_result", "_signal", "event", "submitted")

    def __init__(self, event: AuditEvent, signal: threading.Condition) -> None:
        self.event = event
        self.submitted = time.monotonic()
        self._signal = signal
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
        assert self._result is not None  # done without an error means stored
        return self._result

    def exception(self, timeout: float | None = None) -> BaseException | None:
        if not self._done:
            with self._signal:
                if not self._signal.wait_for(self.done, timeout=timeout):
                    raise TimeoutError(f"event {self.event.event_id} is not written yet")
        return self._error


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
        self.settings = settings or DispatchSettings()
        self._write = write
        self._first_retry, self._max_retry = retry_delays
        # One lock guards the buffer, the in-flight count and the counters: a submit costs one
        # acquisition, and the worker takes a whole batch at once.
        self._lock = threading.Lock()
        self._has_events = threading.Condition(self._lock)
        self._has_room = threading.Condition(self._lock)
        self._all_done = threading.Condition(self._lock)
        self._buffer: deque[DispatchHandle] = deque()
        self._in_flight = 0
        self._closed = False
        self._latencies: deque[float] = deque(maxlen=10_000)
        self._counts = dict.fromkeys(
            (
                "accepted",
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

    def submit(self, event: AuditEvent) -> DispatchHandle:
        """Queue an (already validated) event; the handle resolves once it is committed."""
        pending = DispatchHandle(event, self._all_done)
        limit = self.settings.max_buffer
        with self._lock:
            if self._closed:
                raise DispatcherClosedError(
                    "the dispatcher is closed; use record() or a new AuditCore"
                )
            if len(self._buffer) >= limit and self.settings.policy is FullBufferPolicy.BLOCK:
                self._has_room.wait_for(
                    lambda: len(self._buffer) < limit, timeout=self.settings.block_timeout
                )
            if len(self._buffer) >= limit:
                self._counts["rejected"] += 1
                raise self._full(event)
            self._buffer.append(pending)
            self._in_flight += 1
            self._counts["accepted"] += 1
            if len(self._buffer) == 1 or len(self._buffer) >= self.settings.max_batch:
                self._has_events.notify()
        return pending

    def _full(self, event: AuditEvent) -> DispatchBufferFullError:
        waited = (
            ""
            if self.settings.policy is FullBufferPolicy.REJECT
            else f" for {self.settings.block_timeout:g}s"
        )
        return DispatchBufferFullError(
            f"the dispatch buffer is full ({self.settings.max_buffer:,} events waiting{waited}), "
            f"so event {event.event_id} ({event.action}) was not accepted: the event store "
            "is slower than the event rate, or unreachable. Retry it, use record() to write "
            "synchronously, or raise max_buffer."
        )

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every accepted event is written (or failed); False on timeout."""
        with self._lock:
            return self._all_done.wait_for(lambda: self._in_flight == 0, timeout=timeout)

    def close(self, timeout: float | None = 30.0) -> bool:
        """Stop accepting, drain what is queued, stop the worker; False if it timed out."""
        with self._lock:
            self._closed = True
            self._has_events.notify()
        drained = self.flush(timeout)
        self._worker.join(timeout=1.0)
        return drained

    def stats(self) -> DispatcherStats:
        with self._lock:
            counts = dict(self._counts)
            latencies = sorted(self._latencies)
            queued = len(self._buffer)

        def percentile(p: float) -> float:
            if not latencies:
                return 0.0
            return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000

        return DispatcherStats(
            queued=queued,
            latency_p50_ms=percentile(0.5),
            latency_p99_ms=percentile(0.99),
            **counts,
        )

    def _run(self) -> None:
        while True:
            with self._lock:
                self._has_events.wait_for(lambda: bool(self._buffer) or self._closed)
                if not self._buffer:
                    return  # closed and drained
                short = len(self._buffer) < self.settings.max_batch and not self._closed
            if short:
                # Let more events join this batch, up to max_delay.
                time.sleep(self.settings.max_delay)
            with self._lock:
                size = min(len(self._buffer), self.settings.max_batch)
                batch = [self._buffer.popleft() for _ in range(size)]
                self._has_room.notify_all()
            self._write_batch(batch)

    def _write_batch(self, batch: list[DispatchHandle]) -> None:
        delay = self._first_retry
        while True:
            try:
                stored = self._write([pending.event for pending in batch])
            except TRANSIENT:
                # Keep retrying: these events were accepted and must not be lost.
                with self._lock:
                    self._counts["retries"] += 1
                time.sleep(delay)
                delay = min(delay * 2, self._max_retry)
                continue
            except Exception as error:
                if len(batch) > 1:
                    # Write one by one, so only the events at fault fail.
                    for pending in batch:
                        self._write_batch([pending])
                    return
                batch[0]._error = error
                self._finish(batch, "failed")
                return
            break
        now = time.monotonic()
        for pending, event in zip(batch, stored, strict=True):
            pending._result = event
        with self._lock:
            self._latencies.extend(now - pending.submitted for pending in batch)
            self._counts["batches"] += 1
            self._counts["last_batch_size"] = len(batch)
            self._counts["largest_batch"] = max(self._counts["largest_batch"], len(batch))
        self._finish(batch, "written")

    def _finish(self, batch: list[DispatchHandle], outcome: str) -> None:
        with self._lock:
            for pending in batch:
                pending._done = True
            self._counts[outcome] += len(batch)
            self._in_flight -= len(batch)
            self._all_done.notify_all()
