"""A CPU budget for the server's bulk work (exports, live catch-ups), so that it cannot take the
interpreter from the requests around it.

The API runs in one Python process: a thread formatting an export or decoding a far-behind
watcher's backlog holds the GIL for most of its time slice, and every request of every other
tenant waits behind it at each hand-over of the GIL (measured: a list query went from 15 ms to
500 ms behind two exports and two catch-ups). Each bulk thread reports the CPU time of each
step of its work; once all of them together have used more than ``cores`` of CPU per second of
wall time (with a small burst), the thread that overdraws sleeps until the budget refills, and
while it sleeps the GIL is free for requests. The budget applies only while requests arrive
(one began in the last ``quiet`` seconds): on a server with nothing else to do, bulk work runs
at full speed.

Failure semantics: pacing only ever delays bulk work; it never fails it. 0 cores turns it off.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class CpuPacer:
    def __init__(
        self,
        cores: float,
        burst: float = 0.05,
        quiet: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cores = cores
        self.burst = burst
        self.quiet = quiet
        self.clock = clock
        self._lock = threading.Lock()
        self._credit = burst
        self._refilled = clock()
        self._request_at = -math.inf

    def request(self) -> None:
        """A request has begun (any thread or the event loop): bulk work keeps to its budget."""
        self._request_at = self.clock()

    @contextmanager
    def step(self, stop: threading.Event | None = None) -> Iterator[None]:
        """Time one step of bulk work in this thread; after it, wait for the budget.

        Wall time, not CPU time: a thread descheduled by a busy machine while it holds the
        interpreter lock still keeps requests waiting, and a step that waited for the lock
        means the server is busy, when bulk work should yield the most."""
        started = self.clock()
        yield
        wait = self.charge(self.clock() - started)
        if wait > 0:
            if stop is None:
                time.sleep(wait)
            else:
                stop.wait(wait)

    def charge(self, seconds: float) -> float:
        """Charge ``seconds`` of bulk work; the seconds the caller must now rest."""
        if self.cores <= 0:
            return 0.0
        with self._lock:
            now = self.clock()
            self._credit = min(self.burst, self._credit + (now - self._refilled) * self.cores)
            self._refilled = now
            if now - self._request_at > self.quiet:
                return 0.0  # Nobody is waiting for the interpreter.
            self._credit -= seconds
            return -self._credit / self.cores if self._credit < 0 else 0.0
